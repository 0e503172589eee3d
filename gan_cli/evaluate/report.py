"""Where gan-eval's numbers go: a rich table on the terminal, a JSON file, a CSV (sweep=) and
eval/* scalars in a run's TensorBoard (run=), beside its training curves."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Columns of the run=/sweep= tables (every key is in the JSON and CSV); those no row has are left out.
TABLE_KEYS = ("fd_classifier", "fid", "kd_classifier", "kid", "inception_score", "precision", "recall", "density",
              "coverage", "class_share_max_dev", "as_asked", "memorized", "cas", "augment_gain_k1", "augment_gain_k10")


def terminal() -> Console:
    """Rich's console; piped output (a log, a test) gets wide lines rather than wrapped columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def shown(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        return " ".join(shown(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}:{shown(v)}" for k, v in value.items())
    return str(value)


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (a class with no samples has no FD)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def print_values(values: dict[str, Any], title: str, console: Console | None = None) -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        table.add_row(key, shown(value))
    (console or terminal()).print(table)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The TABLE_KEYS the rows have, then every number of the rows a task's own evaluation scored
    (image -> image checkpoints, which carry `task`), under the task's names."""
    keys = [key for key in TABLE_KEYS if any(key in row for row in rows)]
    own = [key for row in rows if "task" in row for key, value in row.items()
           if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (*keys, "step")]
    return keys + list(dict.fromkeys(own))


def print_rows(rows: list[dict[str, Any]], title: str, label: str, console: Console | None = None) -> None:
    keys = columns(rows)
    table = Table(title=title, show_header=True, header_style="bold")
    for column in (label, *keys):  # long names (a task's baseline/*) fold over lines rather than end in ...
        table.add_column(column, justify="left" if column == label else "right", overflow="fold")
    for row in rows:
        table.add_row(str(row.get(label, "")), *[shown(row[key]) if key in row else "" for key in keys])
    (console or terminal()).print(table)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(plain(data), indent=2) + "\n")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numbers as flat scalars: lists become key/index (class_shares/3)."""
    flat: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[key] = value  # an int stays one (step, num_images in the CSV)
        elif isinstance(value, list):
            flat.update({f"{key}/{index}": float(v) for index, v in enumerate(value) if isinstance(v, (int, float))})
    return flat


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per job; lists spread over key/index columns."""
    flat = [{key: value for key, value in row.items() if isinstance(value, str)} | scalars(row) for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)


def write_tensorboard(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """eval/<metric> at each checkpoint's step, in a new event file in the run dir (TensorBoard
    merges every event file of a folder, so the curves sit beside the training ones)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir), filename_suffix=".gan-eval") as writer:
        for row in rows:
            for key, value in scalars(row).items():
                if key not in ("step", "num_images") and math.isfinite(value):
                    writer.add_scalar(f"eval/{key}", value, int(row["step"]))
