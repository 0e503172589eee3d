"""gan-project: find the latents whose images match target images where a mask says, for any
z -> image checkpoint (sampling/project.py does the optimization), and write the projections: a
.png of target and projection rows, an .npz with the images and their latents (which
`gan-sample latents=` redraws), or a folder of PNGs; `gif=` animates the optimization.

    gan-project checkpoint=.../last.pt target=digits/ mask=top_half out=projected.npz
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan_cli.apps.cli import CONFIG_DIR, check_keys
from gan_cli.core.errors import NOTHING_WRITTEN, GanCliError, interrupted, interrupts_deferred, reported
from gan_cli.core.schema import ProjectSchema, SampleSchema
from gan_cli.core.sizes import square_size

log = logging.getLogger("gan_cli")

OUTPUTS = ".png (target and projection rows), .npz (arr_0 images, latents, labels) or no suffix (a folder of PNGs)"


def check_out(cfg: DictConfig) -> Path:
    """`out` and `gif` before anything is loaded: known suffixes, existing folders."""
    from gan_cli.sampling.sample import check_writable

    out = Path(cfg.out).expanduser()
    if out.suffix not in ("", ".png", ".npz"):
        raise GanCliError(f"out={cfg.out!r} has an unknown extension {out.suffix!r}: allowed are {OUTPUTS}")
    for spec, path in ((cfg.out, out), (cfg.gif, Path(cfg.gif or ".").expanduser())):
        if spec and path.suffix and not path.parent.is_dir():
            raise GanCliError(f"{'gif' if spec == cfg.gif else 'out'}={spec!r}: folder {path.parent} does not exist")
    if out.suffix and out.is_dir():
        raise GanCliError(f"out={cfg.out!r} is a folder, not a file: choose another name")
    if not out.suffix and out.exists() and not out.is_dir():
        raise GanCliError(f"out={cfg.out!r} is a file: a name without a suffix writes a folder of PNGs")
    if cfg.gif is not None and Path(cfg.gif).suffix != ".gif":
        raise GanCliError(f"gif={cfg.gif!r}: the animation of the optimization is a .gif, e.g. gif=projection.gif")
    check_writable(out, cfg.out)
    return out


def project(cfg: DictConfig) -> Path:
    """Project cfg.target into cfg.checkpoint's generator and write cfg.out (and cfg.gif)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from gan_cli.apps import project_output
    from gan_cli.core.config import build, resolve_device, validate_project
    from gan_cli.core.trusted import stored_config
    from gan_cli.loop.checkpoint import load_checkpoint
    from gan_cli.loop.resume import LEGACY_TASK
    from gan_cli.models.abilities import is_style_generator
    from gan_cli.sampling import project as projection
    from gan_cli.sampling.generate import class_count
    from gan_cli.sampling.project_inputs import load_mask, load_targets
    from gan_cli.sampling.project_terms import FitLoss, perceptual_features
    from gan_cli.tasks import image_sampling
    from gan_cli.tasks.adversarial import sampling_network
    from gan_cli.tasks.base import sampling_of

    cfg = validate_project(cfg)
    out = check_out(cfg)
    if not Path(cfg.target).expanduser().exists():
        raise GanCliError(f"target={cfg.target} does not exist: give an image, a folder of images or an .npz")
    device = resolve_device(cfg.device)
    state = load_checkpoint(cfg.checkpoint)
    train_cfg = stored_config(state, cfg.checkpoint)  # only gan-cli's own classes, plain values (trusted.py)
    target = OmegaConf.select(train_cfg, "task._target_", default=LEGACY_TASK)
    if sampling_of(get_class(target)).draw is not image_sampling.draw:
        raise GanCliError(f"checkpoint {cfg.checkpoint} is a {target.rsplit('.', 1)[-1]} (an image -> image task): "
                          "gan-project projects into z -> image generators (task=image_gan)")
    generator = sampling_network(build(train_cfg.model.generator), state, "generator", cfg.checkpoint, device)
    classes = class_count(generator)
    image_sampling.check_class(classes, cfg["class"])
    if cfg["class"] == "all":
        raise GanCliError("class=all: gan-project tries every class when class is unset; set class=N to fix one")
    size = square_size(train_cfg.dataset.image_size, "gan-project")  # its targets and masks are n x n
    targets = load_targets(cfg.target, train_cfg.dataset.channels, size)
    mask = load_mask(str(cfg.mask), size)
    features = None
    if cfg.perceptual_weight > 0:
        features = perceptual_features(cfg, train_cfg, device)
    fit = FitLoss(targets.to(device).float().div(127.5).sub(1.0), mask.to(device), features, cfg.pixel_weight,
                  cfg.perceptual_weight)
    space = cfg.space if cfg.space != "auto" else ("w" if is_style_generator(generator) else "z")
    tried = None if not classes else ([int(cfg["class"])] if cfg["class"] is not None else list(range(classes)))
    settings = projection.Settings(space, cfg.starts, cfg.steps, cfg.lr, cfg.seed, cfg.noise_weight, cfg.batch_size,
                                   tried, frames=project_output.GIF_FRAMES if cfg.gif else 0)
    # drawn as gan-sample latents= draws them at its default batch size: the same bits
    result = projection.project(generator, fit, len(targets), settings, SampleSchema().batch_size)
    project_output.report(result, targets, mask, space, tried, classes)
    project_output.write(result, targets, mask, out, cfg)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="project")
@reported
def _project(cfg: DictConfig) -> None:
    try:
        project(cfg)
    except KeyboardInterrupt:  # outputs are written under temporary names (outputs.staged)
        interrupted(NOTHING_WRITTEN)


def main() -> None:
    try:
        with interrupts_deferred():
            check_keys(sys.argv[1:], "project", ProjectSchema, "gan-project")
        _project()
    except KeyboardInterrupt:
        interrupted(NOTHING_WRITTEN)


if __name__ == "__main__":
    main()
