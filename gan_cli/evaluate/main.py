"""gan-eval: compose conf/evaluate.yaml, pick the mode (checkpoint=, run=, sweep=, images=), judge
each set of images with one Judge per dataset, and report (report.py)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from gan_cli.apps.cli import CONFIG_DIR, check_keys
from gan_cli.core.errors import GanCliError, interrupted, interrupts_deferred, reported
from gan_cli.core.schema import EvaluateSchema

log = logging.getLogger("gan_cli")

MODES = ("checkpoint", "run", "sweep", "images")


class Session:
    """The judges of one gan-eval call, one per dataset (a sweep's runs usually share one)."""

    def __init__(self, cfg: DictConfig):
        from gan_cli.core.config import resolve_device
        from gan_cli.evaluate.own_metrics import OwnEvaluations

        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.judges: dict[str, Any] = {}
        self.last_judge: Any = None  # the judge of the last scored set (its copies grid goes to out)
        self.own = OwnEvaluations(cfg, self.device)  # image -> image checkpoints: their task's own evaluation

    def dataset(self, node: DictConfig) -> DictConfig:
        copy = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        assert isinstance(copy, DictConfig)
        if self.cfg.root is not None:
            copy.root = self.cfg.root
        return copy

    def judge(self, node: DictConfig) -> Any:
        from gan_cli.evaluate.judge import Judge
        from gan_cli.evaluate.metrics import dataset_key

        dataset = self.dataset(node)
        key = dataset_key(dataset)
        if key not in self.judges:
            self.judges[key] = Judge(self.cfg, dataset, self.device)
        self.last_judge = self.judges[key]
        return self.last_judge

    def checkpoint(self, path: str | Path) -> dict[str, Any]:
        from gan_cli.evaluate.sources import draw_samples, open_checkpoint

        checkpoint = open_checkpoint(path)
        if not checkpoint.draws_samples:
            self.last_judge = None  # no samples of z, no copies grid
            return {"name": str(path), "step": checkpoint.step, **self.own.score(checkpoint)}
        judge = self.judge(checkpoint.config.dataset)
        judged = draw_samples(checkpoint, self.cfg.num_samples, self.cfg.seed, self.cfg.batch_size, self.device)
        return {"name": str(path), "step": checkpoint.step, **judge.score(judged)}


def check_mode(cfg: DictConfig) -> str:
    given = [mode for mode in MODES if cfg[mode] is not None]
    if len(given) != 1:
        raise GanCliError(f"set exactly one of {', '.join(m + '=' for m in MODES)} (given: {given or 'none'}); "
                          "see gan-eval --help")
    unknown = [name for name in cfg.metrics if name not in metric_names()]
    if unknown:
        raise GanCliError(f"metrics={list(cfg.metrics)}: unknown {unknown}; allowed are {metric_names()}")
    return given[0]


def metric_names() -> list[str]:
    from gan_cli.evaluate.judge import METRICS

    return list(METRICS)


def copies_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_copies.png")


def judge_checkpoint(session: Session) -> list[dict[str, Any]]:
    return [session.checkpoint(session.cfg.checkpoint)]


def judge_images(session: Session) -> list[dict[str, Any]]:
    from gan_cli.evaluate.sources import load_images

    cfg = session.cfg
    judge = session.judge(cfg.dataset)
    judged = load_images(cfg.images, cfg.dataset.channels, cfg.dataset.image_size)
    return [{"name": cfg.images, **judge.score(judged)}]


def judge_run(session: Session) -> list[dict[str, Any]]:
    from gan_cli.evaluate import report
    from gan_cli.evaluate.sources import run_checkpoints

    rows = [session.checkpoint(path) for path in run_checkpoints(session.cfg.run)]
    if session.cfg.tensorboard:
        report.write_tensorboard(Path(session.cfg.run).expanduser(), rows)
        log.info("wrote eval/* at steps %s into %s's TensorBoard", [row["step"] for row in rows], session.cfg.run)
    return rows


def judge_sweep(session: Session) -> list[dict[str, Any]]:
    from gan_cli.evaluate import report
    from gan_cli.evaluate.sources import job_overrides, sweep_runs

    rows = []
    for job, path in sweep_runs(session.cfg.sweep):
        rows.append({"job": job, "overrides": job_overrides(path.parent.parent), **session.checkpoint(path)})
    csv_path = Path(session.cfg.csv or Path(session.cfg.sweep) / "eval.csv").expanduser()
    report.write_csv(csv_path, rows)
    log.info("wrote %s", csv_path)
    return rows


JUDGES: dict[str, Callable[[Session], list[dict[str, Any]]]] = {
    "checkpoint": judge_checkpoint, "run": judge_run, "sweep": judge_sweep, "images": judge_images,
}


def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """The numbers of every judged set (one row per checkpoint, run or image set); prints them
    and writes `out` (and the copies grid of the last set)."""
    from gan_cli.evaluate import report
    from gan_cli.evaluate.judge import copies_grid

    mode = check_mode(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    session = Session(cfg)
    rows = JUDGES[mode](session)
    if len(rows) == 1:
        report.print_values(rows[0], f"gan-eval {mode}={cfg[mode]}")
    else:
        report.print_rows(rows, f"gan-eval {mode}={cfg[mode]}", "step" if mode == "run" else "job")
    if cfg.out:
        out = Path(cfg.out).expanduser()
        report.write_json(out, rows[0] if len(rows) == 1 else rows)
        judge = session.last_judge
        if judge is not None and judge.last is not None and "copies" in judge.last.extra:
            copies_grid(judge.last.extra["copies"], judge.last.judged.images, judge.train.images, copies_path(out))
        log.info("wrote %s", out)
    return rows


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@reported
def _main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    try:  # Ctrl-C before Hydra called the task: one line, exit 130
        with interrupts_deferred():
            check_keys(sys.argv[1:], "evaluate", EvaluateSchema, "gan-eval")  # a typo: one line, exit 2
        _main()
    except KeyboardInterrupt:
        interrupted()


if __name__ == "__main__":
    main()
