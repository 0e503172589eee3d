"""What a new user meets first: typos in group choices are one line with the closest option."""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("args", [["model=dcgann"], ["-m", "model=mlp,dcgann"], ["experiment=mnist_quik"]])
def test_a_group_typo_is_one_line_naming_the_closest_option(tmp_path: Path, args: list[str]) -> None:
    result = run_cli("gan-train", args, cwd=tmp_path, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    group = args[-1].split("=")[0]
    options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    expected = {"model": "model=dcgan?", "experiment": "experiment=mnist_quick?"}[group]
    assert f"did you mean {expected}" in lines[0] and ", ".join(options) in lines[0]
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run dir


OUR_GROUPS = ", ".join(sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "hydra"))
HYDRA_GROUPS = ("hydra/env, hydra/help, hydra/hydra_help, hydra/hydra_logging, hydra/job_logging, "
                "hydra/launcher, hydra/output, hydra/sweeper")


@pytest.mark.parametrize("script, args, expected", [
    ("gan-train", ["modle=dcgan"],
     f"unknown config group modle: did you mean model=dcgan? the groups are {OUR_GROUPS} "),
    ("gan-train", ["-m", "+datset=mnist,fake"], "unknown config group datset: did you mean dataset=mnist,fake? "),
    ("gan-eval", ["datset=mnist"], "unknown config group datset: did you mean dataset=mnist? "),
    ("gan-train", ["hydra/launcher=jobllib"], "unknown option hydra/launcher=jobllib: did you mean "
                                              "hydra/launcher=joblib? the options of hydra/launcher are basic, joblib"),
    ("gan-train", ["-m", "hydra/laucher=joblib"], "unknown config group hydra/laucher: did you mean "
                                                  f"hydra/launcher=joblib? the groups are {HYDRA_GROUPS} ")])
def test_a_typo_in_a_group_name_or_in_hydras_own_groups_is_one_line(tmp_path: Path, script: str, args: list[str],
                                                                     expected: str) -> None:
    """Hydra's answers are `Key 'modle' is not in struct` advice to add it with +, or its search
    path and exit 1; ours: the group meant, with the choice as typed, and every group."""
    result = run_cli(script, args, cwd=tmp_path, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {expected}"), lines[0]
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run dir


def test_an_unknown_option_without_a_close_match_lists_the_options(tmp_path: Path) -> None:
    result = run_cli("gan-train", ["loss=foo"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: unknown option loss=foo: the options of loss are bce, hinge, lsgan, wgan, wgan_gp (conf/loss/)")


def test_the_offline_cifar10_message_gives_gan_cli_advice_only(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run_cli("gan-train", ["dataset=cifar10", "dataset.download=false", "dataset.root=data"], cwd=tmp_path,
                     check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "download=True" not in lines[0] and "dataset.download=true" in lines[0]
    assert "Dataset not found or corrupted." in lines[0]


def test_the_config_group_table_lists_every_group_and_option_of_conf() -> None:
    """docs/configuration.md's table: a row per folder of conf/ (Hydra's own aside), each naming
    exactly that folder's options."""
    import re

    text = (REPO / "docs" / "configuration.md").read_text()
    text = text[text.index("| group | options |"):].split("\n\n", 1)[0]  # the table alone
    rows = {m.group(1): set(re.findall(r"`([a-z0-9_]+)`", m.group(2)))
            for m in re.finditer(r"^\| `([a-z_]+)` \| ([^|]+) \|", text, re.MULTILINE)}
    groups = {p.name: {y.stem for y in p.glob("*.yaml")} for p in (REPO / "conf").iterdir()
              if p.is_dir() and p.name != "hydra"}
    assert set(rows) == set(groups)
    for group, options in groups.items():
        assert rows[group] == options, group


def test_the_feature_cache_goes_to_the_users_cache_not_the_dataset_folder(tmp_path: Path, monkeypatch) -> None:
    from gan_cli.core.config import validate
    from gan_cli.evaluate.metrics import cache_dir
    from tests.conftest import compose_train, make_mnist

    root = make_mnist(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = validate(compose_train([f"dataset.root={root}", "dataset.download=false"]))
    assert cache_dir(cfg) == tmp_path / "xdg" / "gan_cli"
    cfg = validate(compose_train([f"dataset.root={root}", "dataset.download=false", f"eval.cache_dir={tmp_path}/c"]))
    assert cache_dir(cfg) == tmp_path / "c"


def test_mnist_thicken_reuses_the_mnist_classifier_for_its_plain_domain(tmp_path: Path) -> None:
    """Domain A (plain digits, the whole training split) is the images every MNIST run's
    classifier is trained on: the same cache file, not a classifier of its own; domain B (dilated
    digits) has other images, so a file of its own."""
    from gan_cli.core.config import validate
    from gan_cli.data.datasets import ImageData
    from gan_cli.data.domains import from_dataset
    from gan_cli.evaluate.metrics import classifier_path, dataset_key
    from tests.conftest import compose_train

    common = [f"dataset.root={tmp_path}", "dataset.download=false"]
    mnist = validate(compose_train(["dataset=mnist", *common]))
    thicken = validate(compose_train(["experiment=mnist_thicken", *common]))
    digits = ImageData(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4), 10)
    domains = from_dataset(digits, digits, thicken.task.domain_a, thicken.task.domain_b, seed=0)
    key = dataset_key(thicken.dataset)
    plain, dilated = (classifier_path(thicken, key + suffix) for suffix in domains.cache_suffixes)
    assert plain == classifier_path(mnist, dataset_key(mnist.dataset)) and dilated != plain


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_terminal_bar_counts_epochs_from_1_moves_every_step_and_prints_logs_above_it(monkeypatch) -> None:
    from gan_cli.reporting.progress import ConsoleWriter, RichDisplay

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        display = RichDisplay(total=100, start=40, epoch=2)  # a run resumed at step 40, in its third epoch
        task = display.progress.tasks[0]
        assert task.fields["epoch"] == 3 and task.completed == 40
        display.tick(41)
        assert task.completed == 41  # before any log interval
        assert isinstance(handler.stream, ConsoleWriter)  # log lines go through rich, above the bar
        logging.getLogger("gan_cli").warning("estimated training time: 1 min")
        display.update(50, 3, {"loss/d": 1.0})
        assert task.fields["epoch"] == 4
        display.stop()
        assert handler.stream is terminal
        assert "estimated training time: 1 min" in terminal.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)


def test_the_bar_says_it_is_starting_and_times_the_run_from_the_end_of_the_first_step(monkeypatch) -> None:
    from gan_cli.reporting import progress

    monkeypatch.setattr(sys, "stdout", _Terminal())
    clock = iter([100.0, 112.0])  # the first step (grids, warm-up) takes 12 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    display = progress.RichDisplay(total=2340, start=0, epoch=0)
    try:
        task = display.progress.tasks[0]
        assert task.fields["stats"] == "starting: step 1 (warm-up) takes longest"  # not a blank 0/2340 -:--:--
        monkeypatch.setattr(progress.time, "perf_counter", time.perf_counter)
        display.tick(1)
        assert task.fields["stats"] == "step 1 took 12.0 s (warm-up)" and task.completed == 1
        assert not task._progress  # rich's rate (the time left) starts after the first step
    finally:
        display.stop()


def test_the_line_display_times_the_run_from_the_end_of_the_first_step(monkeypatch, caplog) -> None:
    from gan_cli.reporting import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    display = progress.LineDisplay(total=101, start=0, epoch=0)
    now[0] = 10.0
    display.tick(1)  # a 10 s first step, then 0.1 s steps
    now[0] = 11.0
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        display.update(11, 0, {"loss/d": 1.0})
    assert "step 11/101 epoch 1" in caplog.text and "eta 9s" in caplog.text  # 90 steps x 0.1 s, not 90 s


def test_a_time_limit_is_what_the_estimate_and_the_eta_say_ends_the_run(monkeypatch, caplog, tmp_path: Path) -> None:
    """mnist_quick (make train) said "estimated training time: 51 min" and "eta 2765s" for a run its
    9-minute limit ends: both now stop at the limit."""
    from gan_cli.reporting import logging as reporting
    from gan_cli.reporting import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(reporting.time, "perf_counter", lambda: now[0])
    reporter = reporting.Reporter(tmp_path, total_steps=46800, start_step=0, time_limit_s=540.0)
    try:
        reporter.tick(1)
        now[0] = 5.0  # 50 steps of 0.1 s
        with caplog.at_level(logging.INFO, logger="gan_cli"):
            reporter.scalars(50, 0, {"loss/d": 1.0, "perf/img_per_sec": 1280.0})
    finally:
        reporter.close()
    estimate = next(r.message for r in caplog.records if r.message.startswith("estimated training time"))
    assert estimate.startswith("estimated training time: 9 min") and "about step 5400 of 46800" in estimate
    assert re.search(r"step 50/46800 epoch 1 \| .* eta 535s", caplog.text)  # the limit's 540 s less the 5 s gone


def test_time_spent_evaluating_is_left_out_of_img_per_sec() -> None:
    from gan_cli.loop.meter import Meter

    meter = Meter(("loss/d",), torch.device("cpu"), images_per_step=100, step=0)
    meter.add(torch.ones(1))
    with meter.excluded():
        time.sleep(0.5)
    assert meter.read(1)["perf/img_per_sec"] > 100 / 0.25  # without the exclusion: under 200 img/s


def test_the_run_time_estimate_is_revised_when_the_step_cost_changes(tmp_path: Path, caplog) -> None:
    from gan_cli.reporting.logging import Reporter

    reporter = Reporter(tmp_path, total_steps=1000, start_step=0)
    try:
        with caplog.at_level(logging.INFO, logger="gan_cli"):
            reporter.scalars(50, 0, {"loss/d": 1.0, "perf/img_per_sec": 1000.0})
            reporter.scalars(100, 0, {"loss/d": 1.0, "perf/img_per_sec": 900.0})  # noise: no revision
            assert [r.message for r in caplog.records if "revised" in r.message] == []
            reporter.scalars(150, 0, {"loss/d": 1.0, "perf/img_per_sec": 250.0})  # a warm-up ended
        revised = [r.message for r in caplog.records if "revised" in r.message]
        assert len(revised) == 1 and "850 steps" in revised[0] and "250 img/s" in revised[0]
    finally:
        reporter.close()


def test_srgan_says_when_its_adversarial_phase_begins(tmp_path: Path) -> None:
    from tests.test_srgan import TINY_SR

    run_cli("gan-train", [*TINY_SR, "task.pretrain_steps=3", "trainer.max_steps=5", "hydra.run.dir=run"], cwd=tmp_path)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "steps 1..3 train G on the content loss alone" in log and "begins at step 4" in log
    assert "the first run-time estimate is theirs, revised once adversarial steps are timed" in log
    assert "step 4: the SRResNet warm-up is over, the adversarial phase begins" in log
    assert re.search(r"step 2/5 epoch 1 \| [\d,]+ img/s .*content=\d\.\d{3}", log)  # the warm-up's own loss
    # a run shorter than its warm-up says it has no adversarial step
    run_cli("gan-train", [*TINY_SR, "task.pretrain_steps=8", "trainer.max_steps=4", "hydra.run.dir=short"],
            cwd=tmp_path)
    log = (tmp_path / "short" / "train.log").read_text()
    assert "steps 1..4 train G on the content loss alone" in log
    assert "this run of 4 steps ends inside it: no adversarial step (it would begin at step 9)" in log
    assert "adversarial phase begins" not in log


def test_the_mlp_option_builds_a_batchnorm_generator_and_the_bench_keeps_the_plain_one() -> None:
    """model=mlp is the recipe that draws digits (BatchNorm before each ReLU of G); gan-bench's
    mlp28 keeps timing the seeds' plain MLP its published figures were measured on."""
    from omegaconf import OmegaConf

    from gan_cli.core.config import build, validate
    from tests.conftest import compose_train

    cfg = validate(compose_train(["model=mlp", "dataset=fake"]))
    layers = list(build(cfg.model.generator).net)
    relus = [i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.ReLU)]
    assert len(relus) == 3 and all(isinstance(layers[i - 1], torch.nn.BatchNorm1d) for i in relus)
    bench = OmegaConf.load(REPO / "conf" / "bench.yaml")
    assert "model.generator.batch_norm=false" in bench.setups.mlp28


def test_resuming_a_runs_checkpoint_continues_that_run_in_its_folder(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import TINY_FAKE

    run_cli("gan-train", [*TINY_FAKE, "trainer.max_steps=4", "hydra.run.dir=outputs/first"], cwd=tmp_path)
    checkpoint = "outputs/first/checkpoints/last.pt"
    run_cli("gan-train", [*TINY_FAKE, "trainer.max_steps=6", f"trainer.resume={checkpoint}"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["first"]  # no second run folder
    log = (tmp_path / "outputs" / "first" / "train.log").read_text()
    assert "training steps 1..4 " in log and "resumed from" in log and "at step 4" in log  # both parts
    hydra = tmp_path / "outputs" / "first" / ".hydra"
    earlier = list((hydra / "earlier").iterdir())  # the first part's .hydra/ files kept, not rewritten
    assert len(earlier) == 1 and {p.name for p in earlier[0].iterdir()} == {"config.yaml", "hydra.yaml",
                                                                            "overrides.yaml"}
    assert "trainer.max_steps=4" in (earlier[0] / "overrides.yaml").read_text()
    assert "max_steps: 4" in (earlier[0] / "config.yaml").read_text()
    assert "trainer.max_steps=6" in (hydra / "overrides.yaml").read_text()
    assert len(list((tmp_path / "outputs" / "first").glob("events.out.tfevents.*"))) == 2  # same folder
    events = EventAccumulator(str(tmp_path / "outputs" / "first"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/d")]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # one curve, no overlapping steps
    # a folder named by the user wins: the run goes there
    run_cli("gan-train", [*TINY_FAKE, "trainer.max_steps=8", f"trainer.resume={checkpoint}",
                          "hydra.run.dir=outputs/branch"], cwd=tmp_path)
    assert (tmp_path / "outputs" / "branch" / "checkpoints" / "step_0000008.pt").is_file()


def test_animations_are_enlarged_to_be_seen_and_grids_on_request(tmp_path: Path) -> None:
    from PIL import Image

    from tests.conftest import TINY_FAKE

    run_cli("gan-train", [*TINY_FAKE, "trainer.max_steps=2", "hydra.run.dir=run"], cwd=tmp_path)
    checkpoint = "checkpoint=run/checkpoints/last.pt"
    run_cli("gan-sample", [checkpoint, "seeds=[1,2,1]", "interpolate=6", "out=walk.gif"], cwd=tmp_path)
    assert Image.open(tmp_path / "walk.gif").size == (280, 280)  # 28 px frames x 10: at least 256 px
    run_cli("gan-sample", [checkpoint, "num_samples=4", "out=grid.png"], cwd=tmp_path)
    run_cli("gan-sample", [checkpoint, "num_samples=4", "upscale=3", "out=big.png"], cwd=tmp_path)
    small, big = Image.open(tmp_path / "grid.png").size, Image.open(tmp_path / "big.png").size
    assert small == (2 * 30 + 2,) * 2 and big == (2 * (3 * 28 + 2) + 2,) * 2  # make_grid pads 2 px
    assert one_line(run_cli("gan-sample", [checkpoint, "upscale=0"], cwd=tmp_path, check=False)).startswith(
        "error: invalid value upscale=0")


def test_the_docs_style_mixing_grids_have_the_blank_corner_gan_sample_draws() -> None:
    """docs/stylegan2's mixing grids (28 px cells, 2 px padding) show what gan-sample mix= writes
    today: the corner above the row seeds and left of the column seeds is background, not white."""
    import numpy as np
    from PIL import Image

    for name in ("mix_coarse", "mix_fine"):
        with Image.open(REPO / "docs" / "stylegan2" / f"{name}.png") as image:
            assert np.asarray(image.convert("L"))[2:30, 2:30].max() == 0, name


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]
