"""gan-data's on-disk format, and `dataset=converted`, its loader.

A converted dataset is a folder of three files:
  images.npy    (N, C, H, W) uint8, NumPy's .npy format: a short header, then the raw array
  labels.npy    (N,) int64
  dataset.json  {"format": 1, "count": N, "channels": C, "size": S, "classes": [...], "source": "..."}
                (size: S for S x S images, as every dataset.json has said; [H, W] for non-square ones)
and, converted from a captioned folder (gan-data captions=...), a fourth:
  captions.jsonl  {"row": i, "text": "..."} per line, one line per caption of image row i (each row
                has at least one), read by task=text2image

Why .npy: any row is an offset into the file (random access without decoding, unlike JPEG or PNG
shards), `np.load(mmap_mode="r")` maps it without reading it (the OS page cache does the caching,
shared by DataLoader workers and by runs), and NumPy is already a dependency. It is the layout
stylegan2-ada-pytorch's dataset_tool targets conceptually (pre-cropped, fixed-size uint8 images and
labels, converted once), without its zip of PNGs to decode on every read.

The loader returns `OnDiskData`: ImageData whose images are the memory-mapped file (nothing read
yet), plus the settings streaming.make_sampler reads to keep it on disk or load it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, as_setting, image_shape, is_size, setting_text, shape_text
from gan_cli.data.datasets import ImageData
from gan_cli.data.domains import Domains
from gan_cli.data.paired import Pairs

FORMAT_VERSION = 1
INFO, IMAGES, LABELS, CAPTIONS = "dataset.json", "images.npy", "labels.npy", "captions.jsonl"
LAYOUT = "layout.json"  # a folder of converted datasets: {"format": 1, "layout": "unpaired", "splits": [...]}
UNPAIRED_SPLITS = ("trainA", "trainB", "testA", "testB")  # CycleGAN's folders; the test ones optional
PAIRED_SPLITS = ("train", "test")  # pix2pix's pairs, A and B joined on channels; test optional
LAYOUTS = {"unpaired": (UNPAIRED_SPLITS, {"trainA", "trainB"}), "paired": (PAIRED_SPLITS, {"train"})}
IN_MEMORY_ALLOWED = "auto, true or false"


@dataclass(frozen=True)
class DatasetInfo:
    """dataset.json: what the arrays hold and where they came from."""

    count: int
    channels: int
    size: int | list[int]  # n: n x n images; [height, width] for non-square ones (sizes.as_setting)
    classes: list[str]  # empty: unlabelled (every label 0)
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return image_shape(self.size)

    def as_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, "count": self.count, "channels": self.channels,
                           "size": self.size, "classes": self.classes, "source": self.source}, indent=2) + "\n"


def is_converted(folder: Path) -> bool:
    return (folder / INFO).is_file() or (folder / LAYOUT).is_file()


def read_json(path: Path) -> object:
    """A JSON file gan-data wrote; unreadable: one line saying to convert again."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GanCliError(f"{path} is not readable JSON ({str(err).splitlines()[0]}): convert the dataset "
                          "again with gan-data") from None


def layout_json(layout: str, splits: list[str]) -> str:
    return json.dumps({"format": FORMAT_VERSION, "layout": layout, "splits": splits}, indent=2) + "\n"


def read_layout(folder: Path) -> tuple[str, list[str]] | None:
    """The layout and splits of a layout folder (layout.json), checked; None: a single dataset."""
    path = folder / LAYOUT
    if not path.is_file():
        return None
    raw = read_json(path)
    splits = raw.get("splits") if isinstance(raw, dict) else None
    layout = raw.get("layout") if isinstance(raw, dict) else None
    allowed, needed = LAYOUTS.get(layout, ((), {""})) if isinstance(layout, str) else ((), {""})
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION or not isinstance(splits, list) \
            or not needed <= set(splits) <= set(allowed):
        raise GanCliError(f"{path} is not a format-{FORMAT_VERSION} unpaired or paired layout: convert the dataset "
                          "again with this version's gan-data layout=unpaired|paired")
    return str(layout), [str(split) for split in splits]


def read_info(folder: Path) -> DatasetInfo:
    """dataset.json of `folder`, checked: one line naming what is wrong."""
    path = folder / INFO
    if not folder.is_dir():
        raise GanCliError(f"dataset.root={str(folder)!r} is not a folder: give a folder written by "
                          "gan-data (gan-data source=... out=DIR)")
    if not path.is_file():
        raise GanCliError(f"{folder} has no {INFO}: it is not a gan-data dataset (convert it with "
                          f"gan-data source={folder} out=NEW_DIR)")
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise GanCliError(f"{path} has format {found!r}; this gan-cli reads format {FORMAT_VERSION}: convert the "
                          "dataset again with this version's gan-data")
    fields = {"count": int, "channels": int, "classes": list, "source": str}
    for key, kind in fields.items():
        if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
            raise GanCliError(f"{path}: {key!r} is {raw.get(key)!r}, not {kind.__name__}: convert the dataset "
                              "again with gan-data")
    if not is_size(raw.get("size"), 1):  # an int (every dataset.json before non-square sizes) or [h, w]
        raise GanCliError(f"{path}: 'size' is {raw.get('size')!r}, not an integer or [height, width]: convert the "
                          "dataset again with gan-data")
    return DatasetInfo(raw["count"], raw["channels"], as_setting(*image_shape(raw["size"])),
                       [str(c) for c in raw["classes"]], raw["source"])


def open_arrays(folder: Path, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """images.npy memory-mapped (nothing read) and labels.npy, each checked against dataset.json."""
    expected = {IMAGES: ((info.count, info.channels, *info.shape), np.uint8),
                LABELS: ((info.count,), np.int64)}
    arrays = []
    for name, (shape, dtype) in expected.items():
        try:
            array = np.load(folder / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise GanCliError(f"cannot read {folder / name} ({str(err).splitlines()[0]}): convert the dataset "
                              "again with gan-data") from None
        if array.shape != shape or array.dtype != dtype:
            raise GanCliError(f"{folder / name} holds {array.dtype} {tuple(array.shape)} but {INFO} says "
                              f"{np.dtype(dtype)} {shape}: the dataset is damaged, convert it again with gan-data")
        arrays.append(array)
    return arrays[0], arrays[1]


def write_arrays(folder: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], source: str
                 ) -> DatasetInfo:
    """Images (N, C, H, W) already in memory -> a converted dataset in the new folder `folder`
    (gan-bench's synthetic images; gan-data writes chunk by chunk instead, convert.py)."""
    folder.mkdir(parents=True)
    np.save(folder / IMAGES, np.ascontiguousarray(images, dtype=np.uint8))
    np.save(folder / LABELS, np.asarray(labels, dtype=np.int64))
    info = DatasetInfo(images.shape[0], images.shape[1], as_setting(images.shape[2], images.shape[3]), classes,
                       source)
    (folder / INFO).write_text(info.as_json())
    return info


def mapped_tensor(array: np.ndarray) -> torch.Tensor:
    """A read-only memory map as a tensor without copying it. torch warns that it cannot protect
    read-only memory; nothing in gan-cli writes to a dataset's images (a write would fail)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@dataclass
class OnDiskData(ImageData):
    """A converted dataset: `images` is the memory-mapped images.npy (pages read on first touch)."""

    folder: Path
    in_memory: bool | str  # auto | True | False: streaming.make_sampler decides from it
    memory_budget_gb: float | None  # None: a share of the training device's free memory
    num_workers: int | None  # DataLoader workers when streaming; None: min(4, CPUs)
    captions: list[list[str]] | None = None  # image i's captions (captions.jsonl); None: none stored

    def loaded(self) -> ImageData:
        """The arrays read into memory (dataset.in_memory=true), as every other dataset is."""
        return ImageData(torch.from_numpy(np.load(self.folder / IMAGES)), self.labels, self.num_classes)


def captions_jsonl(captions: list[list[str]]) -> str:
    """captions.jsonl's text: a line per caption, keyed by the image's row."""
    lines = (json.dumps({"row": row, "text": text}) for row, texts in enumerate(captions) for text in texts)
    return "".join(line + "\n" for line in lines)


def read_captions(folder: Path, count: int) -> list[list[str]] | None:
    """Each row's captions from folder/captions.jsonl, checked; None when the dataset has none."""
    path = folder / CAPTIONS
    if not path.is_file():
        return None
    rows: list[list[str]] = [[] for _ in range(count)]
    again = "convert the dataset again with gan-data"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
            row, text = entry["row"], entry["text"]
        except (ValueError, KeyError, TypeError):
            raise GanCliError(f"{path}:{number}: not a {{\"row\": ..., \"text\": ...}} line: {again}") from None
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < count or not isinstance(text, str) \
                or not text.strip():
            raise GanCliError(f"{path}:{number}: row {row!r} is not one of the {count} images, or its text is "
                              f"empty: {again}")
        rows[row].append(text)
    missing = [row for row, texts in enumerate(rows) if not texts]
    if missing:
        raise GanCliError(f"{path}: image row {missing[0]} has no caption ({len(missing)} rows have none): {again}")
    return rows


def load_converted(
    *,
    root: str,
    channels: int,
    image_size: ImageSize,
    num_classes: int,
    in_memory: bool | str = "auto",
    memory_budget_gb: float | None = None,
    num_workers: int | None = None,
    **_unused: Any,  # keys every dataset option carries (name, download, hflip) that loading does not need
) -> OnDiskData | Domains | Pairs:
    """A folder gan-data wrote: its images stay on disk, mapped, until a sampler reads them. A
    `layout=unpaired` folder is CycleGAN's two domains, each split a converted dataset (missing
    test splits: the training ones, as dataset=unpaired does); a `layout=paired` one pix2pix's pairs."""
    if in_memory not in (True, False, "auto"):
        raise GanCliError(f"invalid value dataset.in_memory={in_memory!r}: allowed is {IN_MEMORY_ALLOWED}")
    folder = Path(root).expanduser()
    settings = (channels, image_size, in_memory, memory_budget_gb, num_workers)
    found = read_layout(folder) if folder.is_dir() else None
    if found is None:
        return load_single(folder, num_classes, *settings)
    layout, splits = found
    if layout == "paired":
        return load_pairs(folder, splits, *settings)
    side = {split: load_single(folder / split, 0, *settings) for split in splits}
    train_a, train_b = side["trainA"], side["trainB"]
    return Domains(train_a, train_b, side.get("testA", train_a), side.get("testB", train_b))


def load_pairs(folder: Path, splits: list[str], channels: int, image_size: ImageSize, in_memory: bool | str,
               memory_budget_gb: float | None, num_workers: int | None) -> Pairs:
    """A layout=paired folder: train (and test) pairs stored A | B on channels, each side `channels`
    wide; the training pairs stay joined (Pairs.stored), so one sampler streams them whole."""
    info = read_info(folder / "train")
    if info.channels != 2 * channels:
        raise GanCliError(f"{folder} holds pairs of {info.channels // 2}-channel images but the config asks for "
                          f"dataset.channels={channels}: set dataset.channels={info.channels // 2}")
    side = {split: load_single(folder / split, 0, 2 * channels, image_size, in_memory, memory_budget_gb, num_workers)
            for split in splits}
    train, test = side["train"], side.get("test", side["train"])
    return Pairs(train.images[:, :channels], train.images[:, channels:], test.images[:, :channels],
                 test.images[:, channels:], stored=train)


def load_single(folder: Path, num_classes: int, channels: int, image_size: ImageSize, in_memory: bool | str,
                memory_budget_gb: float | None, num_workers: int | None) -> OnDiskData:
    """One converted dataset (images.npy, labels.npy, dataset.json), checked against the config."""
    info = read_info(folder)
    if (info.channels, info.shape) != (channels, image_shape(image_size)):
        raise GanCliError(f"{folder} holds {info.channels}x{shape_text(info.size)} images but the config asks for "
                          f"dataset.channels={channels} dataset.image_size={setting_text(image_size)}: set "
                          f"dataset.channels={info.channels} dataset.image_size={setting_text(info.size)}")
    images, labels = open_arrays(folder, info)
    classes = len(info.classes) if len(info.classes) > 1 else 0  # one class folder: unconditional
    if num_classes and num_classes != classes:
        raise GanCliError(f"dataset.num_classes={num_classes} but {folder} has {classes} classes: set "
                          f"dataset.num_classes={classes}")
    return OnDiskData(mapped_tensor(images), torch.from_numpy(np.array(labels)), classes, folder, in_memory,
                      memory_budget_gb, num_workers, read_captions(folder, info.count))
