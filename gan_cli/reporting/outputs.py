"""gan-sample's outputs, written so that a failure leaves nothing behind and a big request takes
one batch of memory.

Every output is written under a temporary name in its destination folder and renamed at the end
(a folder output: a temporary folder, whose files are renamed into `out`), so an interrupted or
failed write (a full disk, Ctrl-C) removes the temporary and leaves no partial file. A .npz or a
folder is written batch by batch as the images are drawn: np.savez needs the whole array, so the
.npz is a zip of .npy members written here with numpy's own header (np.load reads it as before).
A .png grid or an animation needs every image at once: it is refused, before anything is drawn,
when it would not fit in the memory this machine has available.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch
from numpy.lib import format as npy
from torch import Tensor

from gan_cli.core.errors import GanCliError

Batches = Iterable[tuple[Tensor, Tensor | None]]  # uint8 (B, C, H, W) on the CPU, and (B,) labels or None

# Bytes of memory per image value a .png grid or an animation takes at its peak: the uint8 images,
# torchvision's float copy and float grid (1-channel images become 3-channel there), the encoder's
# copy. A rough upper bound: it only has to tell a possible request from an impossible one.
IN_MEMORY_BYTES_PER_VALUE = 10
INSTEAD = "write the images as they are drawn with out=DIR (a folder of PNGs) or out=FILE.npz"


def size_text(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def available_memory() -> int:
    """What the kernel says a new allocation can get (MemAvailable), else the physical memory."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(count: int, shape: tuple[int, ...], what: str) -> None:
    """`what` ("out='x.png' (one grid image)") holds all `count` images of (C, H, W) `shape` at once."""
    channels, height, width = shape
    needed = IN_MEMORY_BYTES_PER_VALUE * count * max(channels, 3) * height * width
    available = available_memory()
    if needed > available:
        raise GanCliError(f"{what} holds all {count:,} images of {channels}x{height}x{width} in memory at once: "
                          f"about {size_text(needed)}, and this machine has {size_text(available)} available; "
                          f"{INSTEAD}, or draw fewer")


def check_disk(needed: int, folder: Path, spec: str, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise GanCliError(f"out={spec!r} needs about {size_text(needed)} of disk for {what}, and {folder} has "
                          f"{size_text(free)} free: draw fewer, or write to another disk")


@contextlib.contextmanager
def disk_errors(spec: str) -> Iterator[None]:
    """A full disk (or a quota) while writing: one line. The temporary is removed by `staged`."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise GanCliError(f"out={spec!r}: the disk filled while writing ({err.strerror}); nothing was written, "
                          "free some space or write to another disk") from None


@contextlib.contextmanager
def staged(out: Path, spec: str) -> Iterator[Path]:
    """A temporary path beside `out` (same suffix, so writers pick the same format), renamed to
    `out` when the block ends normally and removed when it does not."""
    folder = out.parent
    if out.suffix:
        handle, name = tempfile.mkstemp(dir=folder, prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}")
        os.close(handle)
    else:
        folder.mkdir(parents=True, exist_ok=True)  # out=runs/a/pngs makes runs/a, as it always did
        name = tempfile.mkdtemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with disk_errors(spec):
            yield temporary
            publish(temporary, out)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced(path: Path, what: str) -> Iterator[Path]:
    """A training output (a sample grid, metrics.json): a temporary beside `path` (same suffix),
    renamed over it when the block ends; a full disk is one line naming `what`, and no partial
    file is left. A reader never sees half a file."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        raise GanCliError(f"could not write {what} {path}: {'disk full' if full else err.strerror or err} "
                          "(no partial file was left; the run's checkpoints are intact)") from None
    finally:
        temporary.unlink(missing_ok=True)


def publish(temporary: Path, out: Path) -> None:
    """Rename the finished output into place. A folder that is already there (a rerun into it)
    gets each file renamed into it: its other files stay, as they always did."""
    if temporary.is_file() or not out.is_dir():
        os.replace(temporary, out)
        return
    for path in sorted(temporary.iterdir()):
        publish(path, out / path.name)  # a class subfolder that is there already: file by file


def write_npz(batches: Batches, count: int, shape: tuple[int, ...], path: Path) -> int:
    """`arr_0` uint8 (N, H, W, C) and, when the batches carry labels, `arr_1` int64 (N,), as
    np.savez writes them (stored, not compressed), one batch at a time. Returns images written."""
    channels, height, width = shape
    written = 0
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive, tempfile.TemporaryFile(dir=path.parent) as labels:
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            write_header(member, np.uint8, (count, height, width, channels))
            for images, batch_labels in batches:
                member.write(images.permute(0, 2, 3, 1).contiguous().numpy().tobytes())  # (B, H, W, C)
                if batch_labels is not None:
                    labels.write(batch_labels.to(torch.int64).numpy().tobytes())
                written += len(images)
        if written != count:
            raise AssertionError(f"drew {written} images, announced {count}")
        if labels.tell():
            labels.seek(0)
            with archive.open("arr_1.npy", "w", force_zip64=True) as member:
                write_header(member, np.int64, (count,))
                shutil.copyfileobj(labels, member)
    return written


def write_header(member: IO[bytes], dtype: type, shape: tuple[int, ...]) -> None:
    header = {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    npy.write_array_header_1_0(member, header)


def npz_bytes(count: int, shape: tuple[int, ...], labeled: bool) -> int:
    channels, height, width = shape
    return count * (channels * height * width + (8 if labeled else 0)) + 4096  # + headers and the zip directory


def write_folder(batches: Batches, count: int, names: list[str] | None, folder: Path, spec: str,
                 by_class: bool = False) -> int:
    """One PNG per image (000000.png, ... unless `names`); `by_class` (gan-sample layout=classes):
    in one subfolder per class asked of a conditional G, an ImageFolder tree any training pipeline
    reads. After the first batch, the PNG size so far tells how much disk the rest needs: refused
    then, not when the disk is full."""
    from torchvision.utils import save_image

    written, used = 0, 0
    for images, labels in batches:
        if by_class and labels is None:
            raise GanCliError("layout=classes needs a conditional generator (its samples have classes); this one "
                              "is unconditional: use the default layout=flat")
        for index, image in enumerate(images):
            path = folder / (names[written] if names else f"{written:06d}.png")
            if by_class:
                path = folder / str(int(labels[index])) / path.name  # type: ignore[index]
                path.parent.mkdir(exist_ok=True)
            save_image(image.float() / 255, path)
            used += path.stat().st_size
            written += 1
        if written == len(images) and written < count:
            check_disk(used * (count - written) // written, folder, spec,
                       f"{count - written:,} more PNGs (about {size_text(used / written)} each so far)")
    return written
