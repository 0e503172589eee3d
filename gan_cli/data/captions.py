"""Captioned images for task=text2image: a folder with its captions, or captions made from a
labelled dataset's labels and measured attributes (MNIST, Fashion-MNIST).

A folder (`dataset=captioned`) holds images and either
  * `captions.jsonl`: one line per caption, `{"file": "0001.png", "text": "a red bird"}`
    (several lines may name one file: one of its captions is drawn per step), or
  * one `.txt` beside each image (`0001.png` -> `0001.txt`), one caption per line (the CUB-200 /
    Oxford-102 layout of Reed et al. 2016).

The caption grammar for a labelled dataset (`made_captions`; docs/families.md, task=text2image):

    caption   := "a" [thickness] name [", " slant]  |  numeral ", " slant
    thickness := "thin" | "thick"            the lower / upper third of ink within the image's class
    slant     := "slanted left" | "upright" | "slanted right"   from the image moments (`shear`)
    name      := the class word ("seven") or, for digits, the numeral ("7")

Each image gets `captions_per_image` captions, each attribute left out with probability
`drop_attribute` (as people leave them out); a middle-third thickness is never said.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize
from gan_cli.data.datasets import ImageData
from gan_cli.data.domains import IMAGE_SUFFIXES, read_images

CLASS_WORDS = {
    "digits": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fashion": ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
}
THICKNESS = ("thin", "", "thick")  # lower, middle (never said), upper third of ink within the class
SLANTS = ("slanted left", "upright", "slanted right")
FORMS = 3  # "a seven", "a 7", "7, ..." (the last two for digits only)


@dataclass
class Captioned(ImageData):
    """Images with their captions: `captions[i]` holds image i's captions (at least one)."""

    captions: list[list[str]] = field(default_factory=list)


def load_captioned_folder(*, root: str, channels: int, image_size: ImageSize, captions: str = "captions.jsonl",
                          **_unused: Any) -> Captioned:
    """root/*.png|jpg with root/`captions` (jsonl) or one .txt per image; images resized and
    center-cropped once, unlabelled."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise GanCliError(f"dataset.root={root!r} is not a folder of captioned images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GanCliError(f"dataset.root={root!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    texts = read_captions(folder, files, captions)
    images = read_images(files, channels, image_size)
    return Captioned(images, torch.zeros(len(files), dtype=torch.long), 0, texts)


def read_captions(folder: Path, files: list[Path], captions: str, key: str = "dataset.root") -> list[list[str]]:
    """Each image's captions: from folder/`captions` (jsonl) when it exists, else one .txt per image."""
    jsonl = folder / captions
    return read_jsonl(jsonl, files) if jsonl.is_file() else read_txt(folder, files, jsonl, key)


def own_captions(data: ImageData) -> list[list[str]] | None:
    """Image i's captions: a captioned folder's, or those gan-data stored beside a converted one's
    arrays (captions.jsonl); None: a labelled dataset, whose captions are made (made_captions)."""
    captions: list[list[str]] | None = getattr(data, "captions", None)
    return captions or None


def read_jsonl(path: Path, files: list[Path]) -> list[list[str]]:
    """Each image's captions from `{"file", "text"}` lines; one line of error per problem."""
    by_name: dict[str, list[str]] = {p.name: [] for p in files}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name, text = entry["file"], entry["text"]
        except (ValueError, KeyError, TypeError):
            raise GanCliError(f"{path}:{number}: not a {{\"file\": ..., \"text\": ...}} line: {line[:80]!r}") from None
        if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
            raise GanCliError(f"{path}:{number}: file and text must be non-empty strings: {line[:80]!r}")
        if name not in by_name:
            raise GanCliError(f"{path}:{number}: {name!r} is not an image of {path.parent}")
        by_name[name].append(text.strip())
    return [checked(by_name[p.name], p, f"no line of {path.name} names it") for p in files]


def read_txt(folder: Path, files: list[Path], jsonl: Path, key: str = "dataset.root") -> list[list[str]]:
    """Each image's captions from the .txt beside it, one per line."""
    if not any(p.with_suffix(".txt").is_file() for p in files):
        raise GanCliError(f"{key}={str(folder)!r} has no captions: add {jsonl.name} ({{\"file\", \"text\"}} "
                          "lines) or one .txt per image with one caption per line")
    texts = []
    for image in files:
        txt = image.with_suffix(".txt")
        lines = txt.read_text(encoding="utf-8").splitlines() if txt.is_file() else []
        said = [line.strip() for line in lines if line.strip()]
        texts.append(checked(said, image, f"{txt.name} is missing or empty"))
    return texts


def checked(texts: list[str], image: Path, why: str) -> list[str]:
    if not texts:
        raise GanCliError(f"image {image} has no caption ({why})")
    return texts


def ink(images: Tensor) -> Tensor:
    """Mean intensity of uint8 images (N, C, H, W) in [0, 1]: the stroke thickness of a digit."""
    return images.float().mean(dim=(1, 2, 3)) / 255


def shear(images: Tensor) -> Tensor:
    """The slant of each image from its second moments (N,): -mu11 / mu02 with x to the right and
    y down, so > 0 leans right (a "/"-like stroke), < 0 leans left; 0 for an upright stroke."""
    weights = images.float().mean(1)  # (N, H, W)
    height, width = weights.shape[1:]
    y = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    mass = weights.sum(dim=(1, 2)).clamp_min(1e-6)
    cy = (weights * y).sum(dim=(1, 2)) / mass
    cx = (weights * x).sum(dim=(1, 2)) / mass
    dy, dx = y - cy.view(-1, 1, 1), x - cx.view(-1, 1, 1)
    mu11 = (weights * dx * dy).sum(dim=(1, 2)) / mass
    mu02 = (weights * dy * dy).sum(dim=(1, 2)) / mass
    return -mu11 / mu02.clamp_min(1e-6)


MEASURED_ROWS = 4096  # images measured at once: a memory-mapped dataset is read this many rows at a time


def measured(images: Tensor) -> tuple[Tensor, Tensor]:
    """ink and shear of every image (N,) each, `MEASURED_ROWS` images at a time: a converted
    dataset's memory-mapped images are read once, in file order, and never held whole (their
    float copy would be 4x the file); each image's numbers are its own, whatever the chunking."""
    chunks = [(ink(chunk), shear(chunk)) for chunk in images.split(MEASURED_ROWS)]
    return torch.cat([amount for amount, _ in chunks]), torch.cat([slant for _, slant in chunks])


def attributes(data: ImageData, slant_threshold: float) -> tuple[Tensor, Tensor]:
    """(thickness, slant) indices per image into THICKNESS and SLANTS: ink thirds within each
    class, and the shear beyond +-slant_threshold."""
    (amount, slant), thickness = measured(data.images), torch.ones(data.images.shape[0], dtype=torch.long)
    for label in data.labels.unique():
        members = data.labels == label
        low, high = torch.quantile(amount[members], torch.tensor([1 / 3, 2 / 3]))
        thickness[members & (amount < low)] = 0
        thickness[members & (amount > high)] = 2
    return thickness, 1 + (slant > slant_threshold).long() - (slant < -slant_threshold).long()


def caption(words: tuple[str, ...], label: int, thickness: int, slant: int | None, form: int) -> str:
    """One sentence of the grammar; slant None leaves it out, form 0 word / 1 "a 7" / 2 "7, ..."."""
    numeral = form > 0 and words is CLASS_WORDS["digits"]
    name = str(label) if numeral else words[label]
    if numeral and form == 2 and slant is not None:
        return f"{name}, {SLANTS[slant]}"
    text = " ".join(part for part in ("a", THICKNESS[thickness], name) if part)
    return text if slant is None else f"{text}, {SLANTS[slant]}"


def made_captions(data: ImageData, class_words: str, per_image: int, drop_attribute: float,
                  slant_threshold: float, seed: int) -> tuple[list[str], Tensor]:
    """Captions of every image of a labelled dataset, by the grammar above: (every distinct
    sentence, (N, per_image) indices into it). Drawn with tensors from `seed`: the sentences are
    a table of (label, thickness, slant, form), each image's captions indices into it."""
    if class_words not in CLASS_WORDS:
        raise GanCliError(f"invalid value task.class_words={class_words!r}: allowed are "
                          f"{', '.join(CLASS_WORDS)}, or a dataset=captioned folder")
    words = CLASS_WORDS[class_words]
    if data.num_classes > len(words) or data.num_classes < 1:
        raise GanCliError(f"task.class_words={class_words} names {len(words)} classes; the dataset has "
                          f"{data.num_classes}")
    thickness, slant = attributes(data, slant_threshold)
    noise = torch.Generator().manual_seed(seed)
    shape = (data.images.shape[0], per_image)
    keep_thickness = torch.rand(shape, generator=noise) >= drop_attribute
    keep_slant = torch.rand(shape, generator=noise) >= drop_attribute
    forms = torch.randint(FORMS, shape, generator=noise)
    said_thickness = torch.where(keep_thickness, thickness.view(-1, 1), 1)  # 1: not said
    said_slant = torch.where(keep_slant, slant.view(-1, 1), len(SLANTS))  # 3: not said
    codes = ((data.labels.view(-1, 1) * 3 + said_thickness) * (len(SLANTS) + 1) + said_slant) * FORMS + forms
    table = [caption(words, label, thick, None if slanted == len(SLANTS) else slanted, form)
             for label in range(data.num_classes) for thick in range(3)
             for slanted in range(len(SLANTS) + 1) for form in range(FORMS)]
    return table, codes
