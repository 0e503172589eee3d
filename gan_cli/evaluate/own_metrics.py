"""Checkpoints of tasks that draw no samples of z alone (image -> image, text -> image: any task whose
gan-sample `draw` is not image_sampling's) are judged by the task's own evaluation, the one training
runs: `task.evaluation(cfg)`, whose `evaluate(step)` scores what the EMA generator makes of the test
inputs, and whose `baseline` is what doing nothing scores (the input as it is, bicubic upsampling).
gan-eval names no family:

  1. the checkpoint's stored config (checked by core/trusted.stored_config), validated as
     gan-train validates a config, with gan-eval's settings: evaluation on, its num_samples,
     features, batch size and cache, the chosen device, no compile;
  2. the task built from it (loop/step.build_task), its networks and EMA copies loaded as a resume
     loads them (loop/resume.load_trained);
  3. `evaluate(step)` and `baseline`, reported under the names the task gives them, flat:
     `metrics/psnr` -> `psnr`, `metrics/psnr_bicubic` -> `psnr_bicubic`, `baseline/l1_input` stays.

A task and its evaluation are built once per stored config: the checkpoints of one run share it,
so `run=` loads each checkpoint's weights into the same task and scores the baseline once.
gan-eval's metrics of samples of z (IS, precision/recall, class shares, memorization, CAS,
augmentation gain) do not apply to these and are skipped with a note; FD and KD are part of
every task's own evaluation.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.evaluate.sources import Checkpoint
from gan_cli.loop.resume import load_trained
from gan_cli.loop.step import build_task
from gan_cli.tasks.base import Evaluation, Task

log = logging.getLogger("gan_cli")

# gan-eval keys that set the stored config's eval.* node (the same names)
EVAL_KEYS = ("num_samples", "features", "inception_weights", "batch_size", "classifier_epochs", "kid_subsets",
             "kid_subset_size", "cache_dir")
OWN = ("fd", "kd")  # the metrics of `metrics=[...]` every task's own evaluation includes


def eval_config(stored: DictConfig, cfg: DictConfig, device: torch.device) -> DictConfig:
    """The checkpoint's training config as gan-eval's settings want it (see the module docstring)."""
    config = OmegaConf.create(OmegaConf.to_container(stored))
    assert isinstance(config, DictConfig)
    config.merge_with({"eval": {"enabled": True, **{key: cfg[key] for key in EVAL_KEYS}},
                       "trainer": {"device": str(device), "compile": False}})
    if cfg.root is not None:
        config.dataset.root = cfg.root
    return validate(config)


def flat(values: dict[str, float]) -> dict[str, float]:
    """The task's names without `metrics/`; timings (`perf/`) left out."""
    return {key.removeprefix("metrics/"): value for key, value in values.items() if not key.startswith("perf/")}


class OwnEvaluations:
    """The checkpoints of one gan-eval call that are not z -> image, each scored by its task's evaluation."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.built: dict[str, tuple[Task, Evaluation]] = {}  # stored config (YAML) -> task, its evaluation
        self.noted = False

    def score(self, checkpoint: Checkpoint) -> dict[str, Any]:
        self.note(checkpoint)
        key = str(checkpoint.state["config"])
        if key not in self.built:
            config = eval_config(checkpoint.config, self.cfg, self.device)
            try:
                task = build_task(config, self.device)
            except GanCliError as err:
                if self.cfg.root is not None:
                    raise
                raise GanCliError(f"{err} (gan-eval reads the data from the checkpoint's dataset.root="
                                  f"{config.dataset.get('root')}; give another folder with root=DIR)") from None
            load_trained(task, checkpoint.state, checkpoint.path)
            evaluation = task.evaluation(config)
            if evaluation is None:
                raise GanCliError(f"checkpoint {checkpoint.path}: task {checkpoint.task_name} has no evaluation")
            self.built[key] = task, evaluation
        else:
            task, evaluation = self.built[key]
            load_trained(task, checkpoint.state, checkpoint.path)
        # An evaluation may draw noise (pix2pix's dropout at test time): the same seed, the same numbers,
        # whichever checkpoints were scored before this one.
        torch.manual_seed(self.cfg.seed)
        values = evaluation.evaluate(checkpoint.step)
        if not values:
            raise GanCliError(f"checkpoint {checkpoint.path}: the evaluation of task {checkpoint.task_name} scored "
                              "nothing (its reason is the warning above)")
        return {"task": checkpoint.task_name, **flat(values), **flat(evaluation.baseline)}

    def note(self, checkpoint: Checkpoint) -> None:
        """One line, once: which of `metrics=[...]` do not apply to a checkpoint that is not z -> image."""
        skipped = [name for name in self.cfg.metrics if name not in OWN]
        if skipped and not self.noted:
            log.info("%s is not a z -> image task: judged by its own evaluation beside its baseline; "
                     "metrics %s judge samples of z and are skipped for it", checkpoint.task_name, ", ".join(skipped))
        self.noted = True
