"""The contract between the training loop and a GAN family (a *task*): the `task` config group.

A task owns its networks, optimizers and data, and says what one training step does as a list
of phases (stylegan2-ada-pytorch's `Gmain`/`Dmain`/`Dreg` idea: phases are data). The loop in
train.py runs, for each step and each phase, `phase.repeats` times:

    loss, stats, handed = phase.loss(step, repeat, handed)   # under autocast
    optimizers[phase.optimizer]: zero_grad, backward, all-reduce, NaN policy, step
    phase.after_update(step)

`handed` is what the previous phase passed on (None for the first): the real batch and the fakes
D's phase drew, which G's phase reuses. Passing it through the loop keeps a phase's inputs in its
signature rather than in attributes one phase sets and the next reads.

then updates the EMA copies (`task.averages`). Everything else the loop does (logging, grids, evaluation,
checkpoints, resume) works from the names a task declares (pytorch-CycleGAN-and-pix2pix's
`model_names`/`loss_names`/`visual_names`), so the loop never branches on a family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.components.ema import GeneratorEMA

Stats = dict[str, Tensor]  # named 0-dim device tensors ("loss/d", "loss/cycle"); no host sync


# (step, repeat, what the previous phase handed on) -> (loss, statistics, what to hand on)
PhaseLoss = Callable[[int, int, object], "tuple[Tensor, Stats, object]"]


def nothing(step: int) -> None:
    return None


@dataclass(frozen=True)
class Phase:
    name: str  # "d", "g": a label for logs
    optimizer: str  # key of Task.optimizers: whose parameters this phase updates
    loss: PhaseLoss  # the scalar to minimize for one update, and named statistics
    repeats: int = 1  # updates per training step (n_critic for a WGAN critic)
    after_update: Callable[[int], None] = nothing  # (step) after the optimizer step (WGAN weight clipping)


@dataclass
class Preview:
    """One TensorBoard / samples/*.png grid: images (N, C, H, W) in [-1, 1], `nrow` per row;
    `rows`: what each row shows, when rows differ by their input (text2image's prompts), written
    to the Text tab once."""

    images: Tensor
    nrow: int
    rows: Sequence[str] = ()


Batches = Iterable["tuple[Tensor, Tensor | None]"]  # uint8 (B, C, H, W) on the CPU, (B,) labels or None


@dataclass
class Drawn:
    """What gan-sample writes: `count` uint8 images of `shape` (C, H, W), read from `batches`, a
    generator that draws each batch only when the writer asks for it (a .npz or a folder of any
    size takes one batch of memory; labels of conditional samples go to the .npz as arr_1).
    `grid`, when set, turns all the images into the .png's cells (translations put each input
    beside its output); `in_memory`: the task makes them all at once, so any output must fit in
    memory, which the writer checks before reading `batches`."""

    count: int
    shape: tuple[int, ...]
    batches: Batches
    grid: Callable[[Tensor], Tensor] | None = None
    nrow: int = 0  # 0: square-ish
    names: list[str] | None = None  # file names in a folder (default 000000.png, ...)
    in_memory: bool = False

    def picture(self) -> Tensor:
        """Every image at once, as the .png grid shows them (reads `batches`)."""
        images = torch.cat([images for images, _ in self.batches])
        return images if self.grid is None else self.grid(images)


def drawn_at_once(count: int, shape: tuple[int, ...], make: Callable[[], tuple[Tensor, Tensor]], nrow: int,
                  names: list[str] | None = None) -> Drawn:
    """A Drawn for what a task makes in one go (walks, mixing grids, translations): `make` ->
    (images, the .png's grid) runs when the writer reads the batches, after its memory check."""
    made: list[tuple[Tensor, Tensor]] = []

    def batches() -> Iterator[tuple[Tensor, Tensor | None]]:
        made.append(make())
        yield made[0][0], None

    return Drawn(count, shape, batches(), grid=lambda images: made[0][1], nrow=nrow, names=names, in_memory=True)


Draw = Callable[[DictConfig, Mapping[str, Any], DictConfig, torch.device], Drawn]


@dataclass(frozen=True)
class Translator:
    """An image -> image checkpoint's generator as one call (gan-draw's input -> output panel):
    `apply` maps uint8 (B, channels, H, W) to uint8 outputs; `size` is the input size it was
    trained on (None: any size, e.g. SRGAN's low-resolution inputs)."""

    channels: int
    size: int | None
    apply: Callable[[Tensor], Tensor]


# (train_cfg, state, checkpoint path, device) -> the checkpoint's generator as a Translator
Translate = Callable[[DictConfig, Mapping[str, Any], str, torch.device], Translator]


@dataclass(frozen=True)
class Sampling:
    """gan-sample's entry for a task: `draw(train_cfg, state, cfg, device)` makes what the sample
    config `cfg` asks from a checkpoint (`state`, trained with `train_cfg`); `options` are the
    sample keys it reads beyond out, device, batch_size, nrow, layout and upscale. `translate`,
    for an image -> image task, is the same generator as one uint8 batch -> batch call (gan-draw)."""

    options: tuple[str, ...]
    draw: Draw
    translate: Translate | None = None


@runtime_checkable
class Evaluation(Protocol):
    """What a task's evaluation scores, on rank 0: `evaluate` -> {"metrics/...": value}."""

    primary: str  # the metric best.pt minimizes
    # What doing nothing scores (the input as it is, bicubic upsampling), computed once: it goes to
    # metrics.json, the Text tab and the HParams row, not to charts of a single point.
    baseline: dict[str, float]

    def evaluate(self, step: int) -> dict[str, float]: ...


@runtime_checkable
class Task(Protocol):
    # Read-only for the loop (properties here, so a task may hold a dict or a tuple)
    @property
    def networks(self) -> Mapping[str, nn.Module]: ...  # every trained network, by its checkpoint name
    @property
    def optimizers(self) -> Mapping[str, torch.optim.Optimizer]: ...  # by the name phases refer to
    @property
    def averages(self) -> Mapping[str, GeneratorEMA]: ...  # EMA copies, by the name of the network they average
    @property
    def phases(self) -> Sequence[Phase]: ...
    @property
    def stat_names(self) -> Sequence[str]: ...  # every statistic the phases report, in log order

    batches_per_epoch: int  # of the data stream that defines an epoch
    batches_per_step: int  # batches one step draws from that stream (d_steps for image_gan)
    images_per_step: int  # real images one step draws on this rank, all streams

    def preview(self) -> Preview:
        """The grid the loop logs at `log.sample_every_n_steps`, from fixed inputs."""
        ...

    def real_preview(self) -> Preview:
        """A grid of real training images, logged once at step 0 to compare the samples with."""
        ...

    def evaluation(self, cfg: DictConfig) -> Evaluation | None:
        """Built once before the loop on rank 0 (trains or loads feature caches)."""
        ...

    sampling: ClassVar[Sampling]  # gan-sample's entry: no training object is built to sample


def sampling_of(task_class: type) -> Sampling:
    """The gan-sample entry of a task class (a checkpoint's `task._target_`, already checked to be
    one of gan-cli's tasks)."""
    sampling = getattr(task_class, "sampling", None)
    if not isinstance(sampling, Sampling):
        raise TypeError(f"{task_class.__qualname__} declares no `sampling: ClassVar[Sampling]`")
    return sampling


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Networks that a phase only reads: their parameters get no gradient from this forward.
    Autograd decides at forward time, so leaving the block before backward() is fine."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module, saved in zip(modules, flags, strict=True):
            for parameter, flag in zip(module.parameters(), saved, strict=True):
                parameter.requires_grad_(flag)


@torch.no_grad()
def in_eval_mode(network: nn.Module, *inputs: Tensor | None) -> Tensor:
    """network(*inputs) in eval mode (BatchNorm running statistics), then back to its mode."""
    was_training = network.training
    network.eval()
    try:
        return network(*inputs)
    finally:
        network.train(was_training)
