"""gan-bench: training img/s of gan-cli's trainer against the tutorial loop, in one process.

For each config in conf/bench.yaml (a list of gan-train overrides on dataset=fake) and each batch
size, gan-cli's run is built from the real composed config by `build_task` and timed through
`train_step` (gan_cli/loop/step.py), syncing only at the end of a window, as the train loop does at its
log interval. The tutorial-style `ReferenceLoop` gets the same G and D config nodes, batch size
and steps. Both warm up, then `repeats` timed windows alternate reference, gan-cli; the median
of each counts.

`data=stream` times the same rows reading a converted dataset (gan-data's format) from disk through
the streaming sampler, `data=memory` (the default) from memory: the config's synthetic images,
written once to a temporary converted folder, or a user's `data_root`. Every row also gives its
model FLOPs as a share of this device's fp32 peak, measured with a large matmul in the same run.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from gan_cli.apps.bench_reference import ReferenceLoop
from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.config import check_device, resolve_device, validate
from gan_cli.core.errors import GanCliError, reported
from gan_cli.core.sizes import image_shape, setting_text, shape_text
from gan_cli.data.converted import DatasetInfo, read_info, write_arrays
from gan_cli.data.datasets import load_fake
from gan_cli.loop.step import Updater, build_task, build_updater, train_step
from gan_cli.loop.train import seed_everything
from gan_cli.sampling.sample import check_writable
from gan_cli.tasks.image_gan import ImageGan

MEMORY_NOTES = {
    "cuda": "torch.cuda.max_memory_allocated during the warm-up steps, minus what was allocated before the "
            "loop was built: weights, optimizer state, activations and, for gan-cli, the dataset on the GPU",
    "cpu": "peak resident set size (VmHWM, reset through /proc/self/clear_refs after building) during the "
           "warm-up steps, minus the RSS before the loop was built: weights, optimizer state, activations "
           "and the uint8 dataset; main process only (DataLoader workers not counted)",
}


def compose_train(overrides: list[str]) -> DictConfig:
    """The real train config; inside gan-bench's (or a test's) Hydra context, else a fresh one."""
    if GlobalHydra.instance().is_initialized():
        return hydra.compose("train", overrides=overrides)
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra.compose("train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def cpu_ticks() -> tuple[int, int, int] | None:
    """(all ticks, busy ticks of the machine, ticks of this process and its reaped children), Linux."""
    try:
        machine_ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:15]  # utime stime cutime cstime
    except (OSError, ValueError):
        return None
    idle = machine_ticks[3] + machine_ticks[4]  # idle, iowait; steal counts as busy
    return sum(machine_ticks), sum(machine_ticks) - idle, sum(int(v) for v in own)


def other_cpu_share(before: tuple[int, int, int] | None) -> float | None:
    """Fraction of the machine's CPU time that other processes used since `before`: what makes
    img/s on a shared machine unreliable (DataLoader workers count as this process)."""
    after = cpu_ticks()
    if before is None or after is None or after[0] == before[0]:
        return None
    total, busy, own = (a - b for a, b in zip(after, before, strict=True))
    return round(max(busy - own, 0) / total, 3)


def memory_in_use(device: torch.device) -> int | None:
    """Bytes in use after collecting garbage (and handing freed heap back to the OS)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(device)
    try:  # glibc keeps freed memory mapped; without a trim the next baseline would be inflated
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _proc_status_bytes("VmRSS")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def peak_growth_mb(device: torch.device, baseline: int | None) -> float | None:
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _proc_status_bytes("VmHWM")
    return None if peak is None or baseline is None else round((peak - baseline) / 2**20, 1)


Run = tuple[ImageGan, Updater]
DATA_MODES = ("memory", "stream")


def matmul_peak_gflops(device: torch.device, size: int, repeats: int = 3) -> float:
    """fp32 GFLOP/s of a size^3 matrix multiply, the best of `repeats` after one warm-up: the
    device's practical peak, against which each row's model FLOP rate is read."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def synthetic_folder(cfg: DictConfig, setup: str, parent: Path) -> Path:
    """The setup's synthetic images (dataset=fake with its overrides), written once as a converted
    dataset under `parent`, so data=stream reads the very images data=memory trains on."""
    folder = parent / setup
    if not folder.is_dir():
        fake = compose_train(["dataset=fake", *cfg.setups[setup]]).dataset
        data = load_fake(num_samples=fake.num_samples, channels=fake.channels, image_size=fake.image_size,
                         num_classes=0)
        write_arrays(folder, data.images.numpy(), data.labels.numpy(), [], f"gan-bench synthetic {setup}")
    return folder


def dataset_overrides(cfg: DictConfig, setup: str, scratch: Path) -> list[str]:
    """One row's dataset: dataset=fake in memory as before (data=memory, no data_root), or a
    converted folder (data_root, or the synthetic images written out) read in memory or streamed."""
    setup_overrides = list(cfg.setups[setup])
    if cfg.data == "memory" and cfg.data_root is None:
        return ["dataset=fake", *setup_overrides]
    root = Path(cfg.data_root).expanduser() if cfg.data_root else synthetic_folder(cfg, setup, scratch)
    info: DatasetInfo = read_info(root)
    shape = compose_train(["dataset=fake", *setup_overrides]).dataset
    if (shape.channels, image_shape(shape.image_size)) != (info.channels, info.shape):
        raise GanCliError(f"data_root={cfg.data_root} holds {info.channels}x{shape_text(info.size)} images but "
                          f"config {setup} trains {shape.channels}x{shape_text(shape.image_size)}: pick "
                          f"configs of that shape, e.g. configs=[dcgan64] for 3x64x64")
    model = [o for o in setup_overrides if not o.startswith("dataset.")]  # the shape comes from the folder
    return [*model, "dataset=converted", f"dataset.root={root}", f"dataset.channels={info.channels}",
            f"dataset.image_size={setting_text(info.size)}", "dataset.num_classes=0", "dataset.hflip=false",
            f"dataset.in_memory={str(cfg.data == 'memory').lower()}"]


def time_trainer(run: Run, first_step: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` gan-cli steps, summing the statistics on the device like train()."""
    task, updater = run
    sums = torch.zeros(len(task.stat_names), device=device)
    sync(device)
    started = time.perf_counter()
    for step in range(first_step, first_step + steps):
        sums += train_step(task, step, updater)
    sums.tolist()  # the one host sync, as at the end of a log interval
    return time.perf_counter() - started


def time_reference(reference: ReferenceLoop, steps: int, device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    reference.run(steps)
    sync(device)
    return time.perf_counter() - started


def measure_memory(
    device: torch.device, build: Callable[[], Any], warm_up: Callable[[Any], Any]
) -> tuple[Any, float | None]:
    """Build a loop, run its warm-up steps, and return it with its peak memory growth in MB."""
    baseline = memory_in_use(device) if device.type in MEMORY_NOTES else None
    loop = build()
    reset_peak(device)
    warm_up(loop)
    sync(device)
    return loop, peak_growth_mb(device, baseline)


def flops_per_image(run: Run, step: int, batch_size: int) -> float:
    """Model FLOPs of one gan-cli step (forward and backward of G and D; the optimizer is not
    counted), per real image, counted eagerly by torch's FlopCounterMode."""
    eager = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else nullcontext()
    with eager, FlopCounterMode(display=False) as counter:
        train_step(run[0], step, run[1])
    return counter.get_total_flops() / batch_size


def bench_one(cfg: DictConfig, setup: str, batch_size: int, device: torch.device, scratch: Path) -> dict[str, Any]:
    """One row: both loops on one config and batch size."""
    overrides = [*dataset_overrides(cfg, setup, scratch), f"trainer.batch_size={batch_size}",
                 f"trainer.device={cfg.device}", f"trainer.precision={cfg.precision}",
                 f"trainer.compile={cfg.compile}", "task.d_steps=1", *cfg.overrides]
    train_cfg = validate(compose_train(overrides))
    if train_cfg.model.get("conditional"):
        raise GanCliError(f"config {setup}: gan-bench times unconditional models (the tutorial loop has no labels)")
    ticks = cpu_ticks()
    seed_everything(train_cfg.trainer.seed)
    if train_cfg.task._target_ != f"{ImageGan.__module__}.{ImageGan.__name__}":
        raise GanCliError(f"config {setup}: gan-bench times task=image_gan (the tutorial loop is a z -> image GAN)")
    run, ours_mb = measure_memory(device, lambda: (build_task(train_cfg, device), build_updater(train_cfg, device)),
                                  lambda run: time_trainer(run, 0, cfg.warmup_steps, device))
    seed_everything(train_cfg.trainer.seed)
    make_reference = lambda: ReferenceLoop(train_cfg, run[0].sampler.images, run[0].sampler.labels, device,
                                           cfg.reference_workers)
    reference, reference_mb = measure_memory(device, make_reference, lambda ref: ref.run(cfg.warmup_steps))
    seconds: dict[str, list[float]] = {"reference": [], "gan_cli": []}
    flops = flops_per_image(run, cfg.warmup_steps, batch_size)
    next_step = cfg.warmup_steps + 1
    for _ in range(cfg.repeats):  # alternate, so drifts in machine load hit both loops alike
        seconds["reference"].append(time_reference(reference, cfg.steps, device))
        seconds["gan_cli"].append(time_trainer(run, next_step, cfg.steps, device))
        next_step += cfg.steps
    reference.close()
    images = batch_size * cfg.steps
    rates = {loop: [round(images / s, 1) for s in times] for loop, times in seconds.items()}
    median = {loop: statistics.median(values) for loop, values in rates.items()}
    return {
        "config": setup,
        "model": train_cfg.model.name,
        "image_shape": [train_cfg.dataset.channels, *image_shape(train_cfg.dataset.image_size)],
        "batch_size": batch_size,
        "data": cfg.data,
        "img_per_sec": median,
        "img_per_sec_repeats": rates,
        "speedup": round(median["gan_cli"] / median["reference"], 3),
        "model_gflop_per_image": round(flops / 1e9, 4),
        "gan_cli_tflop_per_sec": round(flops * median["gan_cli"] / 1e12, 4),  # model FLOPs, achieved
        # share_of_fp32_peak: added by bench() once the peak is measured after the rows too
        "peak_memory_mb": {"gan_cli": ours_mb, "reference": reference_mb},
        "other_cpu_share": other_cpu_share(ticks) if device.type == "cpu" else None,
    }


def machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def check_settings(cfg: DictConfig) -> None:
    for key in ("steps", "warmup_steps", "repeats"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise GanCliError(f"invalid value {key}={cfg[key]!r}: allowed is an integer >= 1")
    if not cfg.batch_sizes or any(not isinstance(b, int) or b < 1 for b in cfg.batch_sizes):
        raise GanCliError(f"invalid value batch_sizes={list(cfg.batch_sizes)}: allowed is a list of integers >= 1")
    unknown = [name for name in cfg.configs if name not in cfg.setups]
    if unknown or not cfg.configs:
        raise GanCliError(f"invalid value configs={list(cfg.configs)}: allowed are names from {list(cfg.setups)}")
    check_device(cfg.device, "device")
    if cfg.data not in DATA_MODES:
        raise GanCliError(f"invalid value data={cfg.data!r}: allowed is memory or stream")
    if not isinstance(cfg.peak_matmul_size, int) or cfg.peak_matmul_size < 1:
        raise GanCliError(f"invalid value peak_matmul_size={cfg.peak_matmul_size!r}: allowed is an integer >= 1")


def table(result: dict[str, Any]) -> Table:
    view = Table(title=f"gan-bench on {result['machine']['device']} ({result['machine']['cpu']}), "
                       f"median of {result['settings']['repeats']} x {result['settings']['steps']} steps, "
                       f"data={result['settings']['data']}, fp32 matmul peak {result['fp32_peak_gflops']:,.0f} GFLOP/s")
    for column in ("config", "shape", "batch", "gan-cli img/s", "reference img/s", "speedup", "GFLOP/img",
                   "gan-cli TFLOP/s", "of fp32 peak", "gan-cli peak MB", "reference peak MB", "others' CPU"):
        view.add_column(column, justify="left" if column in ("config", "shape") else "right")
    megabytes = lambda value: "-" if value is None else f"{value:,.0f}"
    share = lambda value: "-" if value is None else f"{value:.0%}"
    for row in result["rows"]:
        rate, mb = row["img_per_sec"], row["peak_memory_mb"]
        view.add_row(row["config"], "x".join(map(str, row["image_shape"])), str(row["batch_size"]),
                     f"{rate['gan_cli']:,.0f}", f"{rate['reference']:,.0f}", f"{row['speedup']:.2f}x",
                     f"{row['model_gflop_per_image']:.3f}", f"{row['gan_cli_tflop_per_sec']:.3f}",
                     share(row["share_of_fp32_peak"]),
                     megabytes(mb["gan_cli"]), megabytes(mb["reference"]), share(row["other_cpu_share"]))
    return view


def bench(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every (config, batch size) row; print the table, write the JSON, return it."""
    check_settings(cfg)
    out = Path(cfg.out)
    check_writable(out, cfg.out)  # before minutes of timing, not after them
    out.parent.mkdir(parents=True, exist_ok=True)
    console = console or Console(width=None if sys.stdout.isatty() else 160)  # logs keep whole columns
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train() does: fixed shapes, autotune once
    settings = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(settings, dict)
    # Before the rows and after them; the larger counts: other processes can only lower a measurement
    first = matmul_peak_gflops(device, cfg.peak_matmul_size)
    console.print(f"fp32 peak: {first:,.0f} GFLOP/s ({cfg.peak_matmul_size}^3 matmul on {device}; measured again "
                  "after the rows)")
    result: dict[str, Any] = {"machine": machine(device), "settings": settings,
                              "memory": MEMORY_NOTES.get(device.type, "not measured on this device"), "rows": []}
    with tempfile.TemporaryDirectory(prefix="gan-bench-") as scratch:
        for setup in cfg.configs:
            for batch_size in cfg.batch_sizes:
                result["rows"].append(bench_row(cfg, setup, batch_size, device, Path(scratch), console))
    peak = max(first, matmul_peak_gflops(device, cfg.peak_matmul_size))
    result["fp32_peak_gflops"] = round(peak, 1)
    for row in result["rows"]:
        row["share_of_fp32_peak"] = round(row["gan_cli_tflop_per_sec"] * 1e3 / peak, 3)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(table(result))
    console.print(f"wrote {out}")
    return result


def bench_row(cfg: DictConfig, setup: str, batch_size: int, device: torch.device, scratch: Path,
              console: Console) -> dict[str, Any]:
    """One row, printed as it is done (a sweep of rows takes minutes)."""
    row = bench_one(cfg, setup, batch_size, device, scratch)
    console.print(f"{setup} batch {batch_size}: gan-cli {row['img_per_sec']['gan_cli']:,.0f} img/s, "
                  f"reference {row['img_per_sec']['reference']:,.0f} img/s ({row['speedup']:.2f}x), "
                  f"{row['gan_cli_tflop_per_sec'] * 1e3:,.0f} GFLOP/s")
    if (row["other_cpu_share"] or 0) > 0.05:
        console.print(f"  [yellow]other processes used {row['other_cpu_share']:.0%} of the CPU meanwhile: "
                      "these img/s are not reliable[/yellow]")
    gc.collect()
    return row


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
@reported
def _bench(cfg: DictConfig) -> None:
    bench(cfg)


def main() -> None:
    _bench()
