"""gan-data's conversion: a folder of images or a torchvision dataset -> the format of converted.py.

Sources yield (name, PIL image or an error, label) one image at a time; `fit` crops and resizes each
to the target size; `write` fills images.npy chunk by chunk through a memory map (the dataset is
never held whole) in a hidden folder beside `out`, renamed to `out` only when complete, so a killed
conversion leaves no half dataset under the name a run would read.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, image_shape
from gan_cli.data.converted import (
    CAPTIONS,
    IMAGES,
    INFO,
    LABELS,
    LAYOUT,
    UNPAIRED_SPLITS,
    DatasetInfo,
    captions_jsonl,
    is_converted,
    layout_json,
)

log = logging.getLogger("gan_cli")

CROPS = ("center", "resize", "pad")
ON_ERROR = ("skip", "stop")
TORCHVISION_SOURCES = ("mnist", "fashion_mnist", "cifar10")  # conf/dataset/<name>.yaml names the class
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
CHUNK = 256  # images decoded between two writes: bounded memory, whatever the dataset's size
DECODE_BATCH = 64  # images a decoding worker hands over at once
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Item:
    """One source image: a name for messages, a loader (raises READ_ERRORS when unreadable), a label."""

    name: str
    open: Callable[[], Image.Image | tuple[Image.Image, Image.Image]]  # a pair: A and B, joined on channels
    label: int


@dataclass(frozen=True)
class Source:
    items: list[Item]
    classes: list[str]
    description: str
    captions: list[list[str]] | None = None  # item i's captions (a captioned folder); None: none
    paired: bool = False  # each item a pair (layout=paired): its images hold A's channels, then B's


def fit(image: Image.Image, size: ImageSize, crop: str, mode: str) -> np.ndarray:
    """An image of any size -> (C, H, W) uint8 of `size` (n: n x n, or [H, W]). center: scaled (aspect
    kept) to cover H x W, then the middle (load_image_folder's policy; for a square size, the shorter
    side to n); resize: both sides to H x W (the aspect changes); pad: scaled to fit inside H x W,
    black bars on the rest. An image already H x W is kept as is."""
    image = image.convert(mode)
    width, height = image.size
    target_height, target_width = image_shape(size)
    if (width, height) != (target_width, target_height):
        if crop == "resize":
            image = image.resize((target_width, target_height), Image.Resampling.LANCZOS)
        else:  # center covers (the larger of the two scales), pad fits inside (the smaller)
            scale = (max if crop == "center" else min)(target_width / width, target_height / height)
            scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(scaled, Image.Resampling.LANCZOS)
            if crop == "center":
                left, top = (scaled[0] - target_width) // 2, (scaled[1] - target_height) // 2
                image = image.crop((left, top, left + target_width, top + target_height))
            else:
                canvas = Image.new(mode, (target_width, target_height))
                canvas.paste(image, ((target_width - scaled[0]) // 2, (target_height - scaled[1]) // 2))
                image = canvas
    pixels = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _opener(path: Path) -> Callable[[], Image.Image]:
    def read() -> Image.Image:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return image
    return read


def folder_source(root: Path) -> Source:
    """ImageFolder's layout: root/<class>/**/<image> (labels in sorted class order), or a flat folder
    of images (one unlabelled class)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if classes and loose:
        log.warning(f"{len(loose)} images directly in {root} are left out: with class folders, each image "
                    "belongs in one")
    if not classes:
        items = [Item(str(p), _opener(p), 0) for p in loose]
    else:
        items = [Item(str(p), _opener(p), label) for label, name in enumerate(classes) for p in _images_in(root / name)]
    if not items:
        raise GanCliError(f"source={root} holds no images ({', '.join(IMAGE_SUFFIXES)}), neither directly nor in "
                          "class folders")
    return Source(items, classes, str(root.resolve()))


def captioned_source(root: Path, captions: str) -> Source:
    """A flat folder of captioned images, as dataset=captioned reads it (data/captions.py): the
    images in name order, each with its captions from root/`captions` (jsonl) or its own .txt."""
    from gan_cli.data import captions as captioned

    files = sorted(p for p in root.iterdir() if p.suffix.lower() in captioned.IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise GanCliError(f"source={root} holds no images directly ({', '.join(captioned.IMAGE_SUFFIXES)}): "
                          "captions= reads a flat folder of captioned images")
    texts = captioned.read_captions(root, files, captions, key="source")
    return Source([Item(str(p), _opener(p), 0) for p in files], [], str(root.resolve()), texts)


def unpaired_sources(root: Path) -> dict[str, Source]:
    """CycleGAN's layout: root/trainA and root/trainB (testA, testB optional), each a flat folder of
    images (in name order, unlabelled), as dataset=unpaired reads it."""
    sources = {}
    for split in UNPAIRED_SPLITS:
        folder = root / split
        if split.startswith("test") and not folder.exists():
            continue
        if not folder.is_dir():
            raise GanCliError(f"layout=unpaired needs source/trainA and source/trainB (testA and testB optional) "
                              f"holding images: {folder} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise GanCliError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        sources[split] = Source([Item(str(p), _opener(p), 0) for p in files], [], str(folder.resolve()))
    return sources


def _pair_opener(path_a: Path, path_b: Path) -> Callable[[], tuple[Image.Image, Image.Image]]:
    open_a, open_b = _opener(path_a), _opener(path_b)
    return lambda: (open_a(), open_b())


def _halves_opener(path: Path) -> Callable[[], tuple[Image.Image, Image.Image]]:
    """A file holding A | B side by side -> (left half, right half); an odd middle column is
    dropped, as dataset=aligned does."""
    def read() -> tuple[Image.Image, Image.Image]:
        with Image.open(path) as image:
            image.load()
            half = image.width // 2
            return image.crop((0, 0, half, image.height)), image.crop((image.width - half, 0, image.width,
                                                                        image.height))
    return read


def paired_sources(root: Path) -> dict[str, Source]:
    """pix2pix's layouts, each split's pairs as one source (A and B joined on channels):
    root/train/ (test/ or val/ optional) of A | B files (dataset=aligned), or root/trainA and
    root/trainB (testA, testB optional) of the same file names (dataset=paired)."""
    from gan_cli.data.paired import matched_files

    def flat(folder: Path) -> list[Path]:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise GanCliError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files

    sources = {}
    if (root / "train").is_dir():
        test = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
        for split, folder in (("train", root / "train"), ("test", test)):
            if folder is not None:
                items = [Item(str(p), _halves_opener(p), 0) for p in flat(folder)]
                sources[split] = Source(items, [], str(folder.resolve()), paired=True)
        return sources
    if not (root / "trainA").is_dir() or not (root / "trainB").is_dir():
        raise GanCliError(f"layout=paired needs source/train (A | B side by side in each file; test or val "
                          f"optional) or source/trainA and source/trainB (same file names; testA, testB optional): "
                          f"{root} has neither")
    for split in ("train", "test"):
        folder_a, folder_b = root / f"{split}A", root / f"{split}B"
        if split == "test" and not folder_a.exists() and not folder_b.exists():
            continue
        pairs = matched_files(folder_a, folder_b)
        sources[split] = Source([Item(str(a), _pair_opener(a, b), 0) for a, b in pairs], [], str(root.resolve()),
                                paired=True)
    return sources


def torchvision_source(name: str, root: str) -> Source:
    """A torchvision dataset's training split, read through gan-cli's own loader (never downloaded)."""
    import torch
    import yaml
    from hydra.utils import get_class

    from gan_cli.apps.cli import CONFIG_DIR
    from gan_cli.data.datasets import _where, load_torchvision

    option = yaml.safe_load((Path(CONFIG_DIR) / "dataset" / f"{name}.yaml").read_text())
    dataset_cls = get_class(option["dataset_class"])
    try:
        data = load_torchvision(dataset_class=option["dataset_class"], root=root, download=False,
                                channels=option["channels"], image_size=option["image_size"],
                                num_classes=option["num_classes"])
    except GanCliError:  # its advice names gan-train's keys (dataset.root, dataset.download)
        where = _where(dataset_cls, Path(root).expanduser().resolve())
        local = _where(dataset_cls, Path("<root>")).relative_to("<root>")
        raise GanCliError(f"source={name}: no readable {dataset_cls.__name__} files in {where}, and gan-data never "
                          f"downloads: point root= (or GAN_CLI_DATA_ROOT) at a folder holding {local}/ with the "
                          f"original files (gan-train dataset={name} downloads them)") from None
    named = getattr(dataset_cls, "classes", None)  # MNIST's names are the class's
    count = option["num_classes"]
    classes = [str(c) for c in named] if isinstance(named, list) and len(named) == count else \
        [str(i) for i in range(count)]
    arrays = data.images.permute(0, 2, 3, 1).squeeze(-1) if data.images.shape[1] == 1 else \
        data.images.permute(0, 2, 3, 1)  # (N, H, W[, C]) as PIL takes it

    def opener(index: int) -> Callable[[], Image.Image]:
        return lambda: Image.fromarray(arrays[index].numpy())

    labels: torch.Tensor = data.labels
    items = [Item(f"{name}[{i}]", opener(i), int(labels[i])) for i in range(len(labels))]
    return Source(items, classes, f"{name} (torchvision, {Path(root).expanduser().resolve()})")


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (is_converted(out) or not any(out.iterdir()))):
        raise GanCliError(f"out={out} exists and is not a gan-data dataset: choose a new folder (an existing "
                          "gan-data dataset or an empty folder is replaced)")
    if not out.parent.is_dir():
        raise GanCliError(f"out={out}: folder {out.parent} does not exist")


@dataclass(frozen=True)
class Settings:
    size: int | list[int]  # n (n x n) or [height, width] (sizes.as_setting)
    channels: int
    crop: str  # one of CROPS
    stop_on_error: bool
    workers: int  # decoding processes; 0: in this process

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


class Decoded(Dataset[list[tuple[np.ndarray | None, str]]]):
    """Batch b of DECODE_BATCH items -> for each, (its (C, H, W) uint8 array, "") or (None, why it is
    unreadable): what the decoding workers hand back, in the items' order (a batch per hand-over:
    one per image would cost more than decoding an MNIST digit)."""

    def __init__(self, items: list[Item], settings: Settings):
        self.items, self.settings = items, settings

    def __len__(self) -> int:
        return -(-len(self.items) // DECODE_BATCH)

    def __getitem__(self, batch: int) -> list[tuple[np.ndarray | None, str]]:
        return [self._one(item) for item in self.items[batch * DECODE_BATCH : (batch + 1) * DECODE_BATCH]]

    def _one(self, item: Item) -> tuple[np.ndarray | None, str]:
        settings = self.settings
        try:
            opened = item.open()
            if isinstance(opened, tuple):  # a pair (layout=paired): A's channels, then B's
                return np.concatenate([fit(side, settings.size, settings.crop, settings.mode) for side in opened]), ""
            return fit(opened, settings.size, settings.crop, settings.mode), ""
        except READ_ERRORS as err:
            return None, str(err).splitlines()[0] if str(err) else type(err).__name__


def _as_is(decoded: Any) -> Any:
    return decoded  # no collation: the arrays stay NumPy's


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `out` to write into, renamed to `out` when the block completes
    and removed when it does not: a killed or failed conversion leaves no half dataset at `out`."""
    staging = staging_folder(out)
    if staging.exists():  # a killed conversion's leftover
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write(source: Source, out: Path, settings: Settings, advance: Callable[[int], None] = lambda n: None
          ) -> DatasetInfo:
    """Convert every item of `source` into `out`; unreadable files are skipped with a warning each
    (or, with stop_on_error, the first one stops the conversion). Returns what dataset.json says."""
    with staged(out) as staging:
        rows = _fill(source, staging, settings, advance)
        kept = len(rows)
        if kept == 0:
            raise GanCliError(f"no image of {source.description} could be read: nothing was written")
        channels = settings.channels * (2 if source.paired else 1)
        info = DatasetInfo(kept, channels, settings.size, source.classes, source.description)
        if source.captions is not None:  # the kept images' captions, keyed by their rows
            (staging / CAPTIONS).write_text(captions_jsonl([source.captions[i] for i in rows]), encoding="utf-8")
        (staging / INFO).write_text(info.as_json())
    skipped = len(source.items) - kept
    if skipped:
        log.warning(f"{skipped} of {len(source.items)} images were unreadable and left out")
    return info


def write_layout(layout: str, sources: dict[str, Source], out: Path, settings: Settings,
                 advance: Callable[[int], None] = lambda n: None) -> dict[str, DatasetInfo]:
    """Each source as out/<its name>, a converted dataset, and out/layout.json naming them: built
    in a hidden folder beside `out` and renamed when complete, as `write` does for one dataset."""
    with staged(out) as staging:
        infos = {name: write(source, staging / name, settings, advance) for name, source in sources.items()}
        (staging / LAYOUT).write_text(layout_json(layout, list(sources)))
    return infos


def _fill(source: Source, staging: Path, settings: Settings, advance: Callable[[int], None]) -> list[int]:
    """Decode (in `settings.workers` processes, in order) and write CHUNK images at a time; returns
    the kept items' indices (row r of the arrays is item rows[r])."""
    total, shape = len(source.items), image_shape(settings.size)
    channels = settings.channels * (2 if source.paired else 1)  # a pair: A's channels, then B's
    images = open_memmap(staging / IMAGES, mode="w+", dtype=np.uint8, shape=(total, channels, *shape))
    labels = np.zeros(total, dtype=np.int64)
    decoded = DataLoader(Decoded(source.items, settings), batch_size=None, num_workers=settings.workers,
                         collate_fn=_as_is)
    kept, chunk, rows = 0, list[np.ndarray](), list[int]()
    for index, (array, reason) in enumerate(itertools.chain.from_iterable(decoded)):
        item = source.items[index]
        if array is None:
            if settings.stop_on_error:
                raise GanCliError(f"unreadable image {item.name}: {reason} (on_error=skip leaves such files out)")
            log.warning(f"skipped unreadable image {item.name}: {reason}")
        else:
            labels[kept + len(chunk)] = item.label
            chunk.append(array)
            rows.append(index)
        if len(chunk) == CHUNK or index == total - 1:
            if chunk:
                images[kept : kept + len(chunk)] = np.stack(chunk)
            kept, chunk = kept + len(chunk), []
        if index % CHUNK == CHUNK - 1 or index == total - 1:
            advance(index % CHUNK + 1)
    images.flush()
    del images
    if kept < total:  # skipped files: the array is shorter (copied in chunks, never held whole)
        _shorten(staging / IMAGES, kept)
    np.save(staging / LABELS, labels[:kept])
    return rows


def _shorten(path: Path, count: int) -> None:
    full = np.load(path, mmap_mode="r")
    short = open_memmap(path.with_suffix(".short"), mode="w+", dtype=np.uint8, shape=(count, *full.shape[1:]))
    for start in range(0, count, CHUNK * 16):
        end = min(start + CHUNK * 16, count)
        short[start:end] = full[start:end]
    short.flush()
    del short, full
    path.with_suffix(".short").replace(path)


def _replace(staging: Path, out: Path) -> None:
    """Move the finished dataset to `out`; an old dataset there is removed only after that."""
    if not out.exists():
        staging.rename(out)
        return
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    out.rename(old)
    staging.rename(out)
    shutil.rmtree(old)
