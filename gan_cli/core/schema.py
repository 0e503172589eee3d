"""Typed schema of the composed configs (no torch import: the command line is checked against it
before training starts). config.validate merges the config onto these dataclasses.

Every node is typed: a plain node by its dataclass, a *component* node (a field marked with
`component()`: a node with a `_target_` that gan-cli builds) by its target's constructor, whose
parameters and annotations are the node's keys and types (schema_check.py). A dataset node is both:
its dataclass fields plus its loader's parameters. A stored config (a checkpoint's) is checked
against the same schema before anything reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gan_cli.core.sizes import ImageSize

DEFAULT_EPOCHS = 5  # trainer.epochs when neither it nor trainer.max_steps is set
COMPONENT = "component"  # field metadata: the node is built from its `_target_`
CHECKED_AS = "checked_as"  # field metadata: the type schema_check checks an Any field's value against


def component(**default: Any) -> Any:
    """A field holding a component node (`_target_` + the constructor's keyword arguments)."""
    return field(metadata={COMPONENT: True}, **(default or {"default": None}))


def checked_as(hint: Any, default: Any) -> Any:
    """A field OmegaConf types as Any (its structured configs take no union of a scalar and a
    list) whose values schema_check holds to `hint`, as a stored config's are."""
    return field(default=default, metadata={CHECKED_AS: hint})


@dataclass
class DatasetSchema:
    _target_: str = "???"
    name: str = "???"
    root: str = "data"
    download: bool = True
    channels: int = 1
    # an integer n (n x n) or [height, width]: Any to OmegaConf, whose structured configs take a Union
    # of scalars only (2.3: no `int | list[int]`); schema_check holds it to ImageSize, config.CHECKS
    # to the sizes allowed (sizes.is_size)
    image_size: Any = checked_as(ImageSize, 28)
    num_classes: int = 0
    hflip: bool = False
    test_root: str | None = None  # dataset=hr_folder: a folder of test images



@dataclass
class ModelSchema:
    name: str = "???"
    z_dim: int = 100
    conditional: bool = False
    generator: Any = component()
    discriminator: Any = component()
    # model=stylegan2's shared settings (null for the other models)
    w_dim: int | None = None
    channel_base: int | None = None
    channel_max: int | None = None
    mapping_layers: int | None = None
    style_mixing_prob: float | None = None


@dataclass
class OptimSchema:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    alpha: float | None = None  # optim=rmsprop's smoothing constant
    beta1: float | None = None  # hparams_search=optuna searches it: optim.betas is [beta1, 0.999]
    g: Any = component()
    d: Any = component()


@dataclass
class TrainerSchema:
    epochs: int | None = None  # null: DEFAULT_EPOCHS, unless max_steps is set (see config.run_length)
    max_steps: int | None = None
    time_limit_minutes: float | None = None
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    precision: str = "32"
    compile: bool = False
    ckpt_every_n_steps: int = 1000
    keep_checkpoints: int = 3
    on_nan: str = "stop"
    resume: str | None = None
    overwrite: bool = False  # a fresh run into a folder with another run's checkpoints (runlock.check_run_dir)
    num_threads: int | None = None
    dist_timeout_minutes: float = 10.0  # torchrun: how long a collective waits for a rank that stopped answering


@dataclass
class LogSchema:
    every_n_steps: int = 50
    sample_every_n_steps: int = 500
    num_samples: int = 64


@dataclass
class EvalSchema:
    enabled: bool = True
    every_n_steps: int = 1000
    num_samples: int = 5000
    features: str = "classifier"
    inception_weights: str | None = None
    batch_size: int = 250
    classifier_epochs: int = 4
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    cache_dir: str | None = None


@dataclass
class TrainSchema:
    task: Any = component()
    dataset: DatasetSchema = component(default_factory=DatasetSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    loss: Any = component()
    reg: Any = component()
    augment: Any = component()
    diversity: Any = component()
    ema: Any = component()
    optim: OptimSchema = field(default_factory=OptimSchema)
    lr_schedule: Any = component()
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    log: LogSchema = field(default_factory=LogSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    optimized_metric: str | None = None


@dataclass
class SampleSchema:
    checkpoint: str = "???"
    num_samples: int = 64
    out: str = "samples.png"
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    nrow: int = 0
    input: str | None = None  # translation tasks: a folder, an .npz, or test
    direction: str = "a2b"
    seeds: Any = None  # z -> image: [1,2,3] or 0-63, one image per seed (latent_tools.parse_seeds)
    truncation: float = 1.0
    interpolate: int = 0
    fps: int = 12
    upscale: int | None = None  # nearest-neighbour factor for .png grids and animations (sample.display_scale)
    mix: Any = None  # coarse | middle | fine | a list of them
    mix_seeds: Any = None
    layout: str = "flat"  # classes: out=DIR/<class>/*.png (an ImageFolder tree)
    latents: str | None = None  # z -> image: an .npz of saved latents (gan-project's), redrawn as they are
    text: str | None = None  # task=text2image: one prompt, num_samples (or one per seed) images of it
    text_file: str | None = None  # task=text2image: one prompt per line, one grid row each


@dataclass
class PrdcSchema:
    pr_k: int = 3
    dc_k: int = 5


@dataclass
class MemorizationSchema:
    quantile: float = 0.01
    probe: int = 2000


@dataclass
class UsefulnessSchema:
    steps: int = 400
    batch_size: int = 128
    percents: list[float] = field(default_factory=lambda: [1.0, 10.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class EvaluateSchema:
    """gan-eval's keys (conf/evaluate.yaml): the command line is checked against them."""

    dataset: DatasetSchema = component(default_factory=DatasetSchema)
    checkpoint: str | None = None
    run: str | None = None
    sweep: str | None = None
    images: str | None = None
    root: str | None = None
    reference: str | None = None
    metrics: list[str] = field(default_factory=lambda: ["fd", "kd", "is", "prdc", "classes", "memorization", "cas",
                                                        "augment_gain"])
    num_samples: int = 10000
    seed: int = 0
    out: str | None = None
    csv: str | None = None
    tensorboard: bool = True
    device: str = "auto"
    num_threads: int | None = None
    features: str = "classifier"
    inception_weights: str | None = None
    classifier_epochs: int = 4
    cache_dir: str | None = None
    batch_size: int = 250
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc: PrdcSchema = field(default_factory=PrdcSchema)
    memorization: MemorizationSchema = field(default_factory=MemorizationSchema)
    usefulness: UsefulnessSchema = field(default_factory=UsefulnessSchema)


@dataclass
class DrawSchema:
    checkpoint: str = "???"
    host: str = "127.0.0.1"  # where the app listens: this machine only, unless asked
    port: int = 7860
    device: str = "auto"
    candidates: int = 4  # z -> image: the images shown for a sketch (each the best of `starts`)
    starts: int = 2
    steps: int = 60
    lr: float = 0.1
    seed: int = 0
    pixel_weight: float = 1.0
    perceptual_weight: float = 0.0  # > 0: the dataset's feature classifier (gan-project's term)
    lpips: str | None = None  # the perceptual term: LPIPS from this weights file instead of the classifier
    background: float = 0.3  # the undrawn pixels' weight in the mask, toward the black canvas
    live: bool = False  # project on every stroke, not only on the Project button
    canvas: int = 280  # the sketch canvas's side in screen pixels
    root: str | None = None
    classifier_epochs: int = 4
    cache_dir: str | None = None


@dataclass
class ProjectSchema:
    checkpoint: str = "???"
    target: str = "???"  # an image, a folder of images, or an .npz (arr_0 uint8 NHWC)
    mask: str = "none"  # none | top_half | bottom_half | left_half | right_half | an image
    out: str = "projected.png"
    space: str = "auto"  # auto | z | w | w_plus
    starts: int = 4
    steps: int = 300
    lr: float = 0.1
    seed: int = 0
    pixel_weight: float = 1.0
    perceptual_weight: float = 0.5
    lpips: str | None = None  # the perceptual term: LPIPS from this weights file (sampling/lpips.py)
    noise_weight: float = 1e5  # StyleGAN: projector.py's regularize_noise_weight
    batch_size: int = 64  # targets optimized together
    device: str = "auto"
    gif: str | None = None
    fps: int = 12
    upscale: int | None = None
    root: str | None = None  # the dataset's folder, for training its feature classifier when not cached
    classifier_epochs: int = 4
    cache_dir: str | None = None


@dataclass
class DataSchema:
    source: str = "???"  # a folder of images (ImageFolder layout or flat) | mnist | fashion_mnist | cifar10
    out: str = "???"  # the dataset folder to write (dataset=converted dataset.root=OUT reads it)
    root: str = "data"  # the torchvision sources' folder (never downloaded here)
    image_size: Any = checked_as(ImageSize, 64)  # an integer or [height, width], as DatasetSchema.image_size
    channels: int = 3
    crop: str = "center"  # center | resize | pad
    on_error: str = "skip"  # skip | stop: an unreadable file
    num_workers: int | None = None  # decoding processes; None: min(4, CPUs)
    captions: str | None = None  # a flat captioned folder's jsonl file name (or .txt per image); None: no captions
    layout: str = "images"  # images | unpaired (trainA, trainB, testA, testB) | paired (pix2pix's train, test)
