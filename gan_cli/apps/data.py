"""gan-data: convert a folder of images or a torchvision dataset once into gan-cli's on-disk format
(data/converted.py), which `gan-train dataset=converted dataset.root=OUT` reads, streaming it from
disk when it does not fit in memory (data/streaming.py).

    gan-data source=~/celeba out=~/celeba64 image_size=64 crop=center
    gan-data source=~/photos out=~/photos48x64 image_size=[48,64]   # [height, width]
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import hydra
from omegaconf import DictConfig

from gan_cli.apps.cli import CONFIG_DIR, check_keys
from gan_cli.core.errors import NOTHING_WRITTEN, GanCliError, interrupted, interrupts_deferred, reported
from gan_cli.core.schema import DataSchema
from gan_cli.core.sizes import as_setting, image_shape, setting_text, shape_text

if TYPE_CHECKING:
    from gan_cli.data.convert import Settings, Source

T = TypeVar("T")

log = logging.getLogger("gan_cli")


def convert(cfg: DictConfig) -> Path:
    """Write cfg.out from cfg.source; returns the dataset folder."""
    from gan_cli.core.config import validate_data
    from gan_cli.data import convert as conversion

    cfg = validate_data(cfg)
    out = Path(cfg.out).expanduser().absolute()
    conversion.check_out(out)
    folder = Path(cfg.source).expanduser()
    if cfg.captions is not None and not folder.is_dir():
        raise GanCliError(f"captions={cfg.captions} reads a folder of captioned images, but source={cfg.source!r} "
                          "is not a folder: give source=DIR, or leave captions out")
    if cfg.layout != "images" and (cfg.captions is not None or not folder.is_dir()):
        raise GanCliError(f"layout={cfg.layout} reads a folder (source=DIR holding trainA, trainB, or train for "
                          "layout=paired) without captions=: give source=DIR and leave captions out")
    if cfg.layout == "unpaired":
        return convert_layout("unpaired", conversion.unpaired_sources(folder), out, cfg)
    if cfg.layout == "paired":
        return convert_layout("paired", conversion.paired_sources(folder), out, cfg)
    if cfg.captions is not None:
        source = conversion.captioned_source(folder, cfg.captions)
    elif folder.is_dir():
        source = conversion.folder_source(folder)
    elif cfg.source in conversion.TORCHVISION_SOURCES:
        source = conversion.torchvision_source(cfg.source, cfg.root)
    else:
        raise GanCliError(f"source={cfg.source!r} is neither a folder nor a known dataset: allowed is a folder of "
                          f"images or {', '.join(conversion.TORCHVISION_SOURCES)} (read from root=)")
    labels = f"{len(source.classes)} classes" if len(source.classes) > 1 else "unlabelled"
    if source.captions is not None:
        labels += f", {sum(len(texts) for texts in source.captions)} captions"
    log.info(f"gan-data: {len(source.items)} images of {source.description} ({labels}) -> {out} "
             f"({cfg.channels}x{shape_text(cfg.image_size)}, crop={cfg.crop})")
    info = with_progress(len(source.items), partial(conversion.write, source, out, settings_of(cfg)))
    gigabytes = info.count * info.channels * math.prod(info.shape) / 1e9
    log.info(f"gan-data: wrote {info.count} images ({gigabytes:.2f} GB) to {out}; train with: gan-train "
             f"dataset=converted dataset.root={out} dataset.channels={info.channels} "
             f"dataset.image_size={setting_text(info.size)}" + (f" dataset.num_classes={len(info.classes)}"
                                                                if len(info.classes) > 1 else ""))
    return out


def convert_layout(layout: str, sources: dict[str, Source], out: Path, cfg: DictConfig) -> Path:
    """layout=unpaired: each of trainA, trainB (testA, testB) as out/<its name>; layout=paired: the
    train (and test) pairs as out/train, out/test, A and B joined on channels."""
    from gan_cli.data import convert as conversion

    counts = ", ".join(f"{name} {len(source.items)}" for name, source in sources.items())
    log.info(f"gan-data: {layout} layout ({counts} images) -> {out} ({cfg.channels}x{shape_text(cfg.image_size)}, "
             f"crop={cfg.crop})")
    infos = with_progress(sum(len(source.items) for source in sources.values()),
                          partial(conversion.write_layout, layout, sources, out, settings_of(cfg)))
    written = ", ".join(f"{name} {info.count}" for name, info in infos.items())
    trains = "cyclegan" if layout == "unpaired" else "pix2pix"
    log.info(f"gan-data: wrote {written} images to {out}; train with: gan-train task={trains} dataset=converted "
             f"dataset.root={out} dataset.channels={cfg.channels} dataset.image_size={setting_text(cfg.image_size)}")
    return out


def settings_of(cfg: DictConfig) -> Settings:
    from gan_cli.data.convert import Settings
    from gan_cli.data.streaming import default_workers

    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    size = as_setting(*image_shape(cfg.image_size))  # plain (a ListConfig would go to every worker)
    return Settings(size, cfg.channels, cfg.crop, cfg.on_error == "stop", workers)


def with_progress(total: int, write: Callable[[Callable[[int], None]], T]) -> T:
    """`write(advance)` under a rich progress bar of `total` images (gone when done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("convert", total=total)
        return write(lambda done: progress.advance(task, done))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data")
@reported
def _convert(cfg: DictConfig) -> None:
    try:
        convert(cfg)
    except KeyboardInterrupt:  # the dataset is written under a hidden name, renamed when complete
        interrupted(NOTHING_WRITTEN)


def main() -> None:
    try:
        with interrupts_deferred():
            check_keys(sys.argv[1:], "data", DataSchema, "gan-data")
        _convert()
    except KeyboardInterrupt:
        interrupted(NOTHING_WRITTEN)


if __name__ == "__main__":
    main()
