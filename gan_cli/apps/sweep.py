"""Multiruns: what one job hands back to the sweeper, and the summary of a sweep.

`run_task` is gan-train's task function body. In a multirun a failing job is logged and handed
back as a `JobFailure` instead of raised: Hydra 1.3's basic sweeper re-raises the first failed
job's exception once its batch is done (the sweep then ends with a traceback and no summary),
and the Optuna sweeper records any return value that is not a float as a failed trial and goes on.

`SweepSummary` is the Hydra callback set in conf/train.yaml (`hydra.callbacks`). It runs where the
job runs (in-process, in a joblib worker, in a submitit/SLURM job), so each job writes its own
outcome to `<job dir>/job.json` and rewrites `summary.csv` in the sweep dir from all of them; at
the end of the sweep the parent writes it once more and prints one table.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gan_cli.core.errors import GanCliError
from gan_cli.loop.signals import PARENT_GONE, TrainingInterrupted, watch_parent

log = logging.getLogger("gan_cli")

JOB_FILE = "job.json"  # one job's outcome, in its own folder
SUMMARY_FILE = "summary.csv"  # one row per job, in the sweep folder
SWEEP_PID = "GAN_CLI_SWEEP_PID"  # the sweep's process, inherited by the launcher's worker processes


@dataclass(frozen=True)
class JobFailure:
    """What a failed multirun job returns. Not float-castable on purpose: the Optuna sweeper
    then tells the study this trial FAILed (a NaN would crash hydra-optuna-sweeper 1.3.0)."""

    error: str

    def __str__(self) -> str:
        return f"failed: {self.error}"


def error_line(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def objective(cfg: DictConfig, metrics: dict[str, Any]) -> Any:
    """The metrics dict, or the one float `optimized_metric` names (what a sweeper minimizes)."""
    key = cfg.get("optimized_metric")
    if not key:
        return metrics
    if key not in metrics:
        raise GanCliError(f"optimized_metric={key!r} is not a metric train() returns: one of {sorted(metrics)}")
    return float(metrics[key])


def run_task(train: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> Any:
    """Train and return `objective(...)`. In a multirun, a job that raises, or whose objective is
    NaN or infinite, is logged and returned as a JobFailure so that the other jobs still run."""
    set_torch_threads(cfg)
    if not in_multirun():
        return objective(cfg, train(cfg))
    if os.environ.get(SWEEP_PID) == str(os.getppid()):  # a worker process of the sweep (joblib/loky)
        watch_parent()  # the sweep SIGKILLed: checkpoint and stop, do not train on as an orphan
    try:
        result = objective(cfg, train(cfg))
    except TrainingInterrupted as err:  # Ctrl-C / SIGTERM: stop the sweep, not only this job
        err.is_error = True  # a sweep left with unfinished jobs: not a clean end, even on Ctrl-C
        if PARENT_GONE.is_set():  # an orphaned worker: checkpoint written, no one to return to; exit
            log.error("%s; the sweep's process is gone, so this worker exits", err)
            logging.shutdown()
            os._exit(err.exit_code)
        raise
    except Exception as err:  # one job's crash must not end the sweep
        log.error("job failed: %s", error_line(err), exc_info=not isinstance(err, GanCliError))
        return JobFailure(error_line(err))
    if isinstance(result, float) and not math.isfinite(result):
        log.error("job failed: %s is %s", cfg.optimized_metric, result)
        return JobFailure(f"{cfg.optimized_metric} is {result}")
    return result


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(launcher: DictConfig) -> int | None:
    """Torch CPU threads for one job when the launcher runs several jobs side by side: the
    cores a submitit/SLURM job was given (`cpus_per_task`), or this machine's cores shared out
    among joblib's `n_jobs` workers (negative n_jobs counts back from all cores, as joblib does).
    None: leave torch's default (one job at a time has the machine)."""
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if not n_jobs:
        return None
    cores = available_cores()
    parallel = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
    return max(cores // parallel, 1)


def set_torch_threads(cfg: DictConfig) -> None:
    threads = cfg.trainer.get("num_threads")
    if not threads and in_multirun():
        threads = threads_per_job(HydraConfig.get().launcher)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        log.info("torch CPU threads: %d", threads)


def job_record(job_return: JobReturn, job_dir: Path, started: float | None) -> dict[str, Any]:
    """One job's row: its overrides, status, error line and final metrics (metrics.json)."""
    value = job_return._return_value  # the `return_value` property re-raises a failed job's error
    if job_return.status == JobStatus.FAILED:  # an exception escaped the task function
        status, error = "failed", error_line(value)
    elif isinstance(value, JobFailure):
        status, error = "failed", value.error
    else:
        status, error = "completed", ""
    metrics_file = job_dir / "metrics.json"
    return {
        "num": job_return.hydra_cfg.hydra.job.num if job_return.hydra_cfg else None,
        "overrides": list(job_return.overrides or []),
        "status": status,
        "error": error,
        "started": started,
        "seconds": round(time.time() - started, 1) if started else None,
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
    }


def read_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder under the sweep dir, with job.json or, for a job that never reached its
    end (killed, or still running), only `.hydra/overrides.yaml`: status `unfinished`."""
    records = {}
    for depth in ("*", "*/*"):  # hydra.sweep.subdir is one folder, or two (a/b)
        for path in sweep_dir.glob(f"{depth}/.hydra/overrides.yaml"):
            records[path.parent.parent] = {"overrides": list(OmegaConf.load(path)), "status": "unfinished",
                                           "error": "", "started": path.stat().st_mtime, "metrics": {}}
        for path in sweep_dir.glob(f"{depth}/{JOB_FILE}"):
            records[path.parent] = json.loads(path.read_text())
    rows = [{"job": str(job_dir.relative_to(sweep_dir)), **record} for job_dir, record in records.items()]
    return sorted(rows, key=lambda row: (row.get("started") or 0, row.get("num") or 0))


def constant_overrides(overrides: list[str]) -> list[str]:
    """Keys set to one value for the whole sweep: `a=1 b=2,3` -> ['a']."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.key_or_group for o in parsed if not o.is_sweep_override() and not o.is_hydra_override()]


def split_constant(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], dict[str, Any]]
                   ) -> tuple[list[str], dict[str, Any]]:
    """(names whose value differs between rows, {name: value} for those equal in every row)."""
    dicts = [key(row) for row in rows]
    names = list(dict.fromkeys(name for d in dicts for name in d))
    same = {n: dicts[0].get(n) for n in names if len(rows) > 1 and all(d.get(n) == dicts[0].get(n) for d in dicts)}
    return [n for n in names if n not in same], same


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv from every job folder so far; replaced whole, as parallel jobs rewrite it."""
    rows = read_records(sweep_dir)
    partial = sweep_dir / f".{SUMMARY_FILE}.{os.getpid()}"
    write_csv(partial, rows)
    partial.replace(sweep_dir / SUMMARY_FILE)
    return rows


def override_values(row: dict[str, Any]) -> dict[str, str]:
    """A job's overrides as {key: value as typed}: `optim.lr=1e-4` -> {"optim.lr": "1e-4"}."""
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in row["overrides"])


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per job: job, status, one column per overridden key (pandas reads the numbers as
    numbers), the error line, then every metric of metrics.json."""
    keys = list(dict.fromkeys(key for row in rows for key in override_values(row)))
    metric_names = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job", "status", *keys, "error", *metric_names])
        for row in rows:
            given = override_values(row)
            writer.writerow([row["job"], row["status"], *[given.get(key, "") for key in keys], row["error"],
                             *[row["metrics"].get(name, "") for name in metric_names]])


def _shown(value: Any) -> str:
    """Numbers to 4 significant digits, also in override strings (Optuna's `lr=3.0812537e-05`)."""
    if isinstance(value, str) and any(c in value for c in ".e"):  # not "2": a choice stays as typed
        try:
            value = float(value)
        except ValueError:
            return value
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


# The metrics a sweep is read by, in this order; at most TABLE_METRICS of those the jobs have get
# a column (the search's own objective first). The rest are in summary.csv.
KEY_METRICS = ("metrics/fid", "metrics/fd_classifier", "loss/d", "loss/g", "prob/real", "img_per_sec")
TABLE_METRICS = 4


def table_metrics(rows: list[dict[str, Any]], objective: str | None) -> list[str]:
    present = {name for row in rows for name in row["metrics"]}
    wanted = [objective, *KEY_METRICS] if objective else list(KEY_METRICS)
    return [name for name in dict.fromkeys(wanted) if name in present][:TABLE_METRICS]


def sweep_table(rows: list[dict[str, Any]], title: str, override_names: list[str], metric_names: list[str]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD)
    for name in ["job", "status", *override_names]:
        table.add_column(name, overflow="fold", no_wrap=name in ("job", "status"))
    for name in metric_names:  # numbers are never broken over lines
        table.add_column(name.removeprefix("metrics/"), justify="right", no_wrap=True)
    for row in rows:
        style = {"failed": "red", "unfinished": "yellow"}.get(row["status"])
        given = override_values(row)
        table.add_row(row["job"], row["status"], *[_shown(given.get(n, "")) for n in override_names],
                      *[_shown(row["metrics"].get(n)) for n in metric_names], style=style)
    return table


def print_table(rows: list[dict[str, Any]], title: str, objective: str | None = None, width: int | None = None
                ) -> None:
    """The sweep at a glance, within the terminal's width: the overrides that differ between jobs
    and up to TABLE_METRICS key metrics (headers without their `metrics/` prefix; fewer when the
    terminal is narrow); the overrides every job shares are listed once under the table, every
    metric is in summary.csv."""
    from rich.console import Console

    console = Console(width=width or (None if sys.stdout.isatty() else 120), highlight=False)
    override_names, common_overrides = split_constant(rows, override_values)
    metric_names = table_metrics(rows, objective)
    table = sweep_table(rows, title, override_names, metric_names)
    unbounded = console.options.update_width(10_000)  # the width the table wants, not what it gets
    while metric_names and console.measure(table, options=unbounded).maximum > console.width:
        metric_names = metric_names[:-1]  # the least important metric goes first
        table = sweep_table(rows, title, override_names, metric_names)
    shared = [f"{k}={v}" for k, v in common_overrides.items()]
    table.caption = (f"every job: {' '.join(shared)}; " if shared else "") + "all metrics: summary.csv"
    console.print(table)
    for row in rows:
        if row["error"]:
            console.print(f"job {row['job']} failed: {row['error']}", style="red", soft_wrap=True)


class SweepSummary(Callback):
    """Hydra callback: the per-job record and the end-of-sweep table and summary.csv.

    fail_on_job_error: exit with status 1 after the summary when a job failed (a grid sweep
    whose job crashed is an error; the Optuna preset turns it off: a failed trial is a result).
    """

    def __init__(self, fail_on_job_error: bool = True) -> None:
        self.fail_on_job_error = fail_on_job_error
        self.started: dict[str, float] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the sweep dir (the Optuna sweeper opens its sqlite study there before any
        launcher creates it), and name each job's TensorBoard run by the overrides that vary:
        the keys set once for the whole sweep go to `override_dirname.exclude_keys` of every
        job's config (jobs are composed from `hydra.overrides.hydra` plus their own overrides)."""
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        os.environ[SWEEP_PID] = str(os.getpid())  # before the launcher starts its workers
        exclude = list(config.hydra.job.config.override_dirname.exclude_keys)
        exclude += [k for k in constant_overrides(list(config.hydra.overrides.task)) if k not in exclude]
        if exclude:
            quoted = ",".join(f"'{key}'" for key in exclude)
            with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{quoted}]")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started[config.hydra.runtime.output_dir] = time.time()
        if config.hydra.mode == RunMode.MULTIRUN:  # listed as unfinished if the sweep is killed now
            write_summary(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        record = job_record(job_return, job_dir, self.started.pop(str(job_dir), None))
        (job_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
        write_summary(Path(config.hydra.sweep.dir))  # there even if the sweep never reaches its end

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        if not rows:
            return
        failed = [row for row in rows if row["status"] != "completed"]
        print_table(rows, f"{sweep_dir}: {len(rows) - len(failed)} completed, {len(failed)} failed or unfinished",
                    objective=config.get("optimized_metric"))
        log.info("sweep summary: %s", sweep_dir / SUMMARY_FILE)
        if failed and self.fail_on_job_error:
            log.error("%d of %d jobs failed or did not finish: see above and each job's train.log", len(failed),
                      len(rows))
            sys.exit(1)
