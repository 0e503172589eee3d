"""Issue 20's smaller holes, each a one-line error instead of a traceback: full disks, requests
that cannot fit, out= that is a folder, out-of-range seeds and widths, resuming with another
optimizer, gan-bench's output probed first, sample options a task does not read."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.components.losses import NonSaturatingLoss
from gan_cli.core.config import validate, validate_sample
from gan_cli.core.errors import GanCliError
from gan_cli.loop.train import train
from gan_cli.reporting.outputs import write_npz
from gan_cli.sampling.generate import draw_latents
from gan_cli.sampling.latent_tools import parse_seeds
from gan_cli.sampling.sample import sample
from gan_cli.tasks.image_sampling import chunks
from tests.conftest import BIN, REPO, TINY_FAKE, compose_train, run_cli, tmpfs
from tests.test_srgan import TINY_SR


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    runs = {"dcgan": [*TINY_FAKE, "trainer.max_steps=2"], "srgan": [*TINY_SR, "trainer.max_steps=2"]}
    for name, overrides in runs.items():
        train(compose_train(overrides), run_dir=root / name)
    return {name: root / name / "checkpoints" / "last.pt" for name in runs}


def sample_cfg(checkpoint: Path, out: Path, *overrides: str):  # noqa: ANN201  (a DictConfig)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("sample", overrides=[f"checkpoint={checkpoint}", f"out={out}", "device=cpu", *overrides])


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real full disk (ENOSPC), not a mocked one."""
    with tmpfs(tmp_path / "disk", "64k") as mount:
        yield mount


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(checkpoints: dict[str, Path], tiny_disk: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A 400-image grid PNG is ~300 KB: the tmpfs fills in the middle of the write.
    result = run_cli("gan-sample", [f"checkpoint={checkpoints['dcgan']}", "num_samples=400", "out=grid.png",
                                    "device=cpu"], cwd=tiny_disk, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: out='grid.png': the disk filled while writing (No space left on device); nothing was written, "
        "free some space or write to another disk"]
    assert list(tiny_disk.iterdir()) == []
    # The .npz's disk check would refuse first; without it the write itself fills the disk.
    monkeypatch.setattr("gan_cli.sampling.sample.check_disk", lambda *args: None)
    for out in (tiny_disk / "a.npz", tiny_disk / "pngs"):
        with pytest.raises(GanCliError, match="the disk filled while writing"):
            sample(sample_cfg(checkpoints["dcgan"], out, "num_samples=400"))
        assert list(tiny_disk.iterdir()) == []


@pytest.mark.parametrize("overrides, expected", [
    (["num_samples=1000000000", "out=a.npz"], r"out='.*a\.npz' needs about 792\.0 GB of disk for 1,000,000,000 "
                                              r"images, and .* has .* free"),
    (["seeds=0-1000000000", "out=b.npz"], r"needs about 792\.0 GB of disk for 1,000,000,001 images"),
    (["num_samples=1000000000", "out=c.png"], r"out='.*c\.png' \(one grid image\) holds all 1,000,000,000 images of "
                                              r"1x28x28 in memory at once: about 23\.5 TB, and this machine has .* "
                                              r"available; write the images as they are drawn with out=DIR"),
    (["seeds=[1,2]", "interpolate=10000000", "out=w.gif"], r"\(an animation\) holds all 10,000,000 images"),
    (["seeds=0-1000000000", "interpolate=10", "out=w.gif"], r"interpolate=10 frames cannot visit 1,000,000,001 seeds"),
])
def test_what_cannot_fit_is_refused_saying_what_it_needs(checkpoints: dict[str, Path], tmp_path: Path,
                                                         overrides: list[str], expected: str) -> None:
    out = tmp_path / overrides[-1].removeprefix("out=")
    with pytest.raises(GanCliError, match=expected):
        sample(sample_cfg(checkpoints["dcgan"], out, *overrides[:-1]))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_too_big_for_the_disk_is_refused_after_the_first_batch(checkpoints: dict[str, Path],
                                                                        tiny_disk: Path) -> None:
    with pytest.raises(GanCliError, match=r"needs about .* of disk for 99,9.. more PNGs \(about .* each so far\)"):
        sample(sample_cfg(checkpoints["dcgan"], tiny_disk / "pngs", "num_samples=100000", "batch_size=16"))
    assert list(tiny_disk.iterdir()) == []


def test_npz_is_written_a_batch_at_a_time_and_loads_as_savez_wrote_it(tmp_path: Path) -> None:
    batches, shape = 200, (3, 32, 32)  # 200 batches of 64 images: 39 MB in all

    def drawn() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for index in range(batches):
            yield torch.full((64, *shape), index % 256, dtype=torch.uint8), torch.full((64,), index % 10)

    tracemalloc.start()
    write_npz(drawn(), batches * 64, shape, tmp_path / "a.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * 64 * 3 * 32 * 32  # a few batches' worth at most, not 39 MB
    data = np.load(tmp_path / "a.npz")
    assert data["arr_0"].shape == (12800, 32, 32, 3) and data["arr_0"].dtype == np.uint8
    assert data["arr_0"][64 * 7, 0, 0, 0] == 7 and data["arr_1"].dtype == np.int64
    assert data["arr_1"].tolist() == [index % 10 for index in range(batches) for _ in range(64)]


@pytest.mark.parametrize("count, batch_size, z_dim", [(1000, 256, 100), (257, 256, 100), (33, 1, 1), (17, 16, 1),
                                                      (5, 3, 2), (300, 7, 512)])
def test_latents_drawn_in_chunks_are_those_drawn_at_once(count: int, batch_size: int, z_dim: int) -> None:
    noise = torch.Generator().manual_seed(3)
    chunked = torch.cat([torch.randn(stop - start, z_dim, generator=noise)
                         for start, stop in chunks(count, batch_size, z_dim)])
    assert torch.equal(chunked, draw_latents(count, z_dim, 3))


def test_streamed_samples_do_not_depend_on_the_batch_size(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    arrays = []
    for batch_size in (7, 256):
        sample(sample_cfg(checkpoints["dcgan"], tmp_path / f"{batch_size}.npz", "num_samples=300",
                          f"batch_size={batch_size}"))
        arrays.append(np.load(tmp_path / f"{batch_size}.npz"))
    assert arrays[0]["arr_0"].shape == (300, 28, 28, 1) and np.array_equal(arrays[0]["arr_0"], arrays[1]["arr_0"])


def test_out_that_is_a_folder_or_a_file_of_the_wrong_kind(tmp_path: Path) -> None:
    (tmp_path / "x.png").mkdir()
    (tmp_path / "pngs").write_text("")
    with pytest.raises(GanCliError, match=r"out='.*x\.png' is a folder, not a file"):
        sample(sample_cfg(tmp_path / "none.pt", tmp_path / "x.png"))
    with pytest.raises(GanCliError, match=r"out='.*pngs' is a file"):
        sample(sample_cfg(tmp_path / "none.pt", tmp_path / "pngs"))


@pytest.mark.parametrize("override, expected", [
    ("trainer.seed=-1", "invalid value trainer.seed=-1: allowed is an integer in 0..4294967295"),
    (f"trainer.seed={2**70}", f"invalid value trainer.seed={2**70}: allowed is an integer in 0..4294967295"),
    ("model.generator.ngf=0", "invalid value model.generator.ngf=0: allowed is an integer >= 1"),
    ("model.discriminator.ndf=-3", "invalid value model.discriminator.ndf=-3: allowed is an integer >= 1"),
    ("+reg.gamma=-1", "invalid value reg.gamma=-1: allowed is a number >= 0"),
])
def test_out_of_range_train_values_are_refused(override: str, expected: str) -> None:
    overrides = [*TINY_FAKE, override] if "reg" not in override else [*TINY_FAKE, "reg=r1", override[1:]]
    with pytest.raises(GanCliError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_train(overrides))


@pytest.mark.parametrize("model, key", [("mlp", "model.generator.hidden=[64,0]"),
                                        ("resnet", "model.discriminator.ndf=0"), ("stylegan2", "model.channel_max=0"),
                                        ("stylegan2", "model.w_dim=0")])
def test_every_model_width_must_be_positive(model: str, key: str) -> None:
    overrides = [o for o in TINY_FAKE if not o.startswith("model.")]
    with pytest.raises(GanCliError, match=r"invalid value .*=0: allowed is an integer >= 1"):
        validate(compose_train([*overrides, f"model={model}", key]))


def test_sample_seed_is_in_numpys_range(tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match="invalid value seed=-1"):
        validate_sample(sample_cfg(tmp_path / "x.pt", tmp_path / "a.png", "seed=-1"))
    with pytest.raises(GanCliError, match=r"seeds=\[1, 4294967296\]: allowed are a list of integers in 0\.\."):
        parse_seeds([1, 2**32])


def test_resuming_with_another_optimizer_names_both(tmp_path: Path) -> None:
    train(compose_train([*TINY_FAKE, "trainer.max_steps=2"]), run_dir=tmp_path)
    with pytest.raises(GanCliError, match=r"checkpoint .*last\.pt: optim\.g was Adam when it was saved, the config "
                                          r"builds RMSprop: resume with the optimizer it was trained with"):
        train(compose_train([*TINY_FAKE, "trainer.resume=auto", "optim=rmsprop"]), run_dir=tmp_path)


@pytest.mark.parametrize("option", ["seeds=0-3", "truncation=0.5", "class=3"])
def test_latent_options_on_an_srgan_checkpoint_say_they_do_not_apply(checkpoints: dict[str, Path], tmp_path: Path,
                                                                     option: str) -> None:
    key = option.split("=")[0]
    with pytest.raises(GanCliError, match=rf"^{key}=.* does not apply to this checkpoint \(task srgan\): it takes "
                                          r"input=, num_samples=$"):
        sample(sample_cfg(checkpoints["srgan"], tmp_path / "a.png", "input=test", option))


def test_an_image_gan_checkpoint_takes_no_input(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match=r"^input=test does not apply to this checkpoint \(task image_gan\)"):
        sample(sample_cfg(checkpoints["dcgan"], tmp_path / "a.png", "input=test"))


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/self").exists(), reason="needs root and /proc")
def test_gan_bench_probes_its_output_before_benchmarking(tmp_path: Path) -> None:
    result = run_cli("gan-bench", ["out=/proc/x.json", "configs=[mlp28]", "device=cpu"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "img/s" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: out='/proc/x.json' cannot be written: creating a file in /proc fails (No such file or directory)"]


@pytest.mark.parametrize("script, message", [
    ("gan-train", "interrupted by SIGINT before training started (or after it ended): nothing new was saved"),
    ("gan-sample", "interrupted by SIGINT: nothing was written")])
def test_ctrl_c_in_the_first_seconds_is_one_line(checkpoints: dict[str, Path], tmp_path: Path, script: str,
                                                 message: str) -> None:
    """Ctrl-C at several moments of the start-up: importing Hydra, torch, torchvision, composing."""
    args = {"gan-train": [*TINY_FAKE, f"hydra.run.dir={tmp_path}/run"],
            "gan-sample": [f"checkpoint={checkpoints['dcgan']}", f"out={tmp_path}/a.png", "device=cpu"]}[script]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    for delay in (0.1, 0.4, 0.8, 1.2, 1.6):
        # SIGINT as a terminal's Ctrl-C delivers it, even when pytest runs as a background job (SIG_IGN inherited)
        process = subprocess.Popen([str(BIN / script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert process.returncode == 130 and len(lines) == 1, (delay, stderr[-3000:])
        assert lines[0] in (f"error: {message}", "error: interrupted by SIGINT while starting: nothing was written")
    assert not (tmp_path / "a.png").exists()


class FreezingLoss(NonSaturatingLoss):
    """Rank 1 stops (SIGSTOP: a frozen or swapped-out process) at its third D update."""

    def __init__(self) -> None:
        self.calls = 0

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            Path(f"{os.environ['PIDS']}/{os.environ['RANK']}").write_text(str(os.getpid()))
        if self.calls == 3 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGSTOP)
        return super().d_loss(real_logits, fake_logits)


@pytest.mark.slow  # two ranks and a 6 s collective timeout: ~40 s on the 2-core test machine
def test_a_frozen_rank_is_named_after_the_collective_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PIDS": str(pids),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launcher = subprocess.Popen([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29519", "-m", "gan_cli",
                                 *TINY_FAKE, "trainer.max_steps=20", "trainer.dist_timeout_minutes=0.1",
                                 "loss._target_=tests.test_holes.FreezingLoss", f"hydra.run.dir={tmp_path}/run"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # torchrun waits 30 s before it SIGKILLs a stopped worker: once rank 0 has ended, do it now
        # (ended: it wrote its pid and is gone; rank 1 may write its pid first, and killing it then
        # would end rank 0's collective with a reset connection instead of the timeout)
        while launcher.poll() is None and not (alive(pids / "1") and started(pids / "0") and not alive(pids / "0")):
            time.sleep(0.5)
    finally:
        for rank in ("0", "1"):  # never leave a stopped process behind
            if alive(pids / rank):
                os.kill(int((pids / rank).read_text()), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert launcher.returncode != 0 and (pids / "1").exists()
    assert errors == ["error: rank 1 of 2 stopped answering (rank 0's collective: Timed out waiting 6000ms for recv "
                      "operation to complete; trainer.dist_timeout_minutes=0.1): ending the run, resume it with "
                      "trainer.resume=auto"], stderr[-3000:]


def started(pid_file: Path) -> bool:
    return pid_file.exists() and bool(pid_file.read_text())


def alive(pid_file: Path) -> bool:
    if not started(pid_file):
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_inside_any_import_of_a_command_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGINT that lands in the standard library's imports (CI caught one in typing, before
    cli.py's own guard): the console scripts import their command behind gan_cli.start's guard."""
    from gan_cli import start

    (tmp_path / "slow_command.py").write_text("raise KeyboardInterrupt  # as if Ctrl-C came mid-import\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        start._run("slow_command", "main")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted by SIGINT while starting: nothing was written\n"
    scripts = (REPO / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    assert all("= \"gan_cli.start:" in line for line in scripts.splitlines() if " = " in line)
