"""gan-draw: a local web app (Gradio) on a checkpoint. A z -> image generator gets a sketch canvas
whose strokes are projected into G (the k images it draws that agree with them, and a walk between
two) and a sampling panel; an image -> image checkpoint gets an input -> output panel. What each
panel computes is in draw_panels.py; this file only lays out the page and serves it.

    gan-draw checkpoint=outputs/.../checkpoints/last.pt        # then open the URL it prints
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from omegaconf import DictConfig

from gan_cli.apps.cli import CONFIG_DIR, check_keys
from gan_cli.apps.draw_panels import Sketch, candidates, pictures, samples, strokes, translated, walk
from gan_cli.core.errors import NOTHING_WRITTEN, GanCliError, interrupted, interrupts_deferred, reported
from gan_cli.core.schema import DrawSchema
from gan_cli.tasks.base import Translator

if TYPE_CHECKING:
    import gradio

log = logging.getLogger("gan_cli")

WALK_FRAMES = 16  # images on the path between two candidates
SHOWN = 128  # px: 28 px images are enlarged (nearest) to at least this on the page
FONTS, MONO = ["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"]  # local: nothing fetched


def display_scale(size: int) -> int:
    return max(-(-SHOWN // size), 1)


def flattened(layers: list[np.ndarray], side: int) -> np.ndarray:
    """The canvas's stroke layers over each other (alpha over), uint8 RGBA (side, side, 4)."""
    out = np.zeros((side, side, 4), np.float32)
    for layer in layers:
        rgba = layer.astype(np.float32) / 255
        if rgba.shape[-1] == 3:  # an opaque layer
            rgba = np.concatenate([rgba, np.ones_like(rgba[..., :1])], -1)
        alpha = rgba[..., 3:]
        out[..., :3] = rgba[..., :3] * alpha + out[..., :3] * (1 - alpha)
        out[..., 3:] = alpha + out[..., 3:] * (1 - alpha)
    return (out * 255).round().astype(np.uint8)


def sketch_panel(gr: Any, sketch: Sketch) -> None:
    cfg, scale = sketch.cfg, display_scale(sketch.size)
    black = np.zeros((cfg.canvas, cfg.canvas, 3), np.uint8)
    with gr.Tab("Sketch"):
        gr.Markdown("Draw strokes (white, or black to keep a place empty), then **Project**: "
                    f"the {cfg.candidates} images G draws that agree best with them, best first. Choose another one "
                    "and move the slider to walk from the best to it.")
        with gr.Row():
            pad = gr.Sketchpad(value={"background": black, "layers": [], "composite": black}, type="numpy",
                               image_mode="RGBA", canvas_size=(cfg.canvas, cfg.canvas), fixed_canvas=True,
                               layers=False, label="Strokes", elem_id="strokes",
                               brush=gr.Brush(default_size=max(cfg.canvas // 14, 2), colors=["#ffffff", "#000000"],
                                              default_color="#ffffff"))
            with gr.Column():
                button = gr.Button("Project", variant="primary", elem_id="project")
                gr.Markdown("**Candidates**, best fit first")
                gallery = gr.Gallery(show_label=False, columns=cfg.candidates, elem_id="candidates",
                                     object_fit="contain", height="auto")
                others = [str(n) for n in range(2, cfg.candidates + 1)]
                other = gr.Radio(others, value=others[0] if others else None, label="Walk from candidate 1 to",
                                 visible=bool(others))
                slider = gr.Slider(0, WALK_FRAMES - 1, value=0, step=1, label="Walk (frame)")
                frame = gr.Image(label="On the walk", type="numpy", interactive=False, height=SHOWN * 2)
        found, frames = gr.State(None), gr.State(None)

        def project(value: dict[str, Any] | None, walk_to: str | None) -> tuple[Any, ...]:
            layers = [layer for layer in (value or {}).get("layers") or [] if layer is not None]
            target, mask = strokes(flattened(layers, cfg.canvas), sketch.channels, sketch.size, cfg.background)
            if not (mask == 1).any():
                raise gr.Error("Nothing drawn yet: draw a stroke on the canvas first")
            result = candidates(sketch, target, mask)
            path = walk(sketch, result.latents, 0, int(walk_to or 1) - 1, WALK_FRAMES)
            return (pictures(result.images, scale), result, path, gr.update(value=0), pictures(path[:1], scale)[0])

        def chose(result: Any, walk_to: str | None) -> tuple[Any, ...]:
            if result is None:
                return None, gr.update(), None
            path = walk(sketch, result.latents, 0, int(walk_to or 1) - 1, WALK_FRAMES)
            return path, gr.update(value=WALK_FRAMES - 1), pictures(path[-1:], scale)[0]

        outputs = [gallery, found, frames, slider, frame]
        button.click(project, [pad, other], outputs)
        if cfg.live:
            pad.change(project, [pad, other], outputs, trigger_mode="always_last")
        other.change(chose, [found, other], [frames, slider, frame])
        slider.change(lambda path, index: None if path is None else pictures(path[int(index):int(index) + 1],
                                                                              scale)[0], [frames, slider], frame)
    sample_panel(gr, sketch, scale)


def sample_panel(gr: Any, sketch: Sketch, scale: int) -> None:
    with gr.Tab("Sample"):
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            which = gr.Dropdown(["random", *map(str, range(sketch.classes))], value="random", label="Class",
                                visible=bool(sketch.classes))
            truncation = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Truncation (psi)", visible=sketch.style)
        button = gr.Button("Sample", variant="primary")
        gallery = gr.Gallery(label="Samples", columns=8, height="auto")

        def sampled(seed_value: float, class_value: str, psi: float) -> list[np.ndarray]:
            chosen = None if class_value == "random" else int(class_value)
            return pictures(samples(sketch, int(seed_value or 0), 16, chosen, float(psi)), scale)

        button.click(sampled, [seed, which, truncation], gallery)


def translate_panel(gr: Any, translator: Translator) -> None:
    with gr.Tab("Input -> output"):
        gr.Markdown("Upload an image (or draw on one) and **Run**: the checkpoint's generator applied to it"
                    + ("" if translator.size is None else f" (brought to {translator.size}x{translator.size} px)."))
        with gr.Row():
            editor = gr.ImageEditor(type="numpy", image_mode="RGB", sources=("upload", "clipboard"), label="Input",
                                    layers=False)
            output = gr.Image(label="Output", type="numpy", interactive=False)
        button = gr.Button("Run", variant="primary")

        def run(value: dict[str, Any] | None) -> np.ndarray:
            image = (value or {}).get("composite")
            if image is None:
                raise gr.Error("No input yet: upload an image first")
            result = translated(translator, image)
            return result.repeat(display_scale(result.shape[0]), 0).repeat(display_scale(result.shape[1]), 1)

        button.click(run, editor, output)


def gradio_module() -> Any:
    """Gradio, imported with its analytics off (nothing leaves the machine), or one line."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise GanCliError("gan-draw needs Gradio: pip install 'gan-cli[app]' (make install includes it)") from None
    return gradio


def build_app(cfg: DictConfig, panel: Sketch | Translator) -> gradio.Blocks:
    """The page for a loaded checkpoint (draw_panels.load)."""
    gr = gradio_module()
    with gr.Blocks(title="gan-draw", analytics_enabled=False) as app:
        gr.Markdown(f"### gan-draw: `{cfg.checkpoint}`")
        if isinstance(panel, Sketch):
            sketch_panel(gr, panel)
        else:
            translate_panel(gr, panel)
    return app


def serve(cfg: DictConfig) -> None:
    """Load the checkpoint, print where to open the app, serve until Ctrl-C."""
    from gan_cli.apps.draw_panels import load
    from gan_cli.core.config import validate_draw

    cfg = validate_draw(cfg)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests: not news
    panel = load(cfg)
    app = build_app(cfg, panel)
    try:
        _, url, _ = app.launch(server_name=cfg.host, server_port=cfg.port, prevent_thread_lock=True, quiet=True,
                               footer_links=[], theme=gradio_module().themes.Default(font=FONTS, font_mono=MONO))
    except OSError as err:
        raise GanCliError(f"cannot serve on {cfg.host}:{cfg.port}: {str(err).splitlines()[0]}; choose another "
                          "port=") from None
    print(f"gan-draw: open {url} (Ctrl-C stops it)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="draw")
@reported
def _draw(cfg: DictConfig) -> None:
    serve(cfg)


def main() -> None:
    try:
        with interrupts_deferred():
            check_keys(sys.argv[1:], "draw", DrawSchema, "gan-draw")
        _draw()
    except KeyboardInterrupt:
        interrupted(NOTHING_WRITTEN)


if __name__ == "__main__":
    main()
