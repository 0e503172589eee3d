"""task=text2image: captions of both folder layouts and their one-line errors, MNIST captions from
hand-drawn strokes, unknown words, the matching-aware D loss, the prompt grid, bitwise resume,
gan-sample text= / text_file= and the test captions' distance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.data.captions import CLASS_WORDS, SLANTS, THICKNESS, attributes, load_captioned_folder, made_captions
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate import classifier
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.step import build_task
from gan_cli.loop.train import seed_everything, train
from gan_cli.models.text import tokenize
from gan_cli.sampling.sample import sample
from gan_cli.tasks.text2image import TextToImage
from gan_cli.tasks.text_captions import CaptionSettings, caption_table
from gan_cli.tasks.text_eval import TextEvaluation
from tests.conftest import compose_train, run_cli

PROMPTS = ["a thick seven", "a thin one", "a two"]
TINY_TEXT = ["task=text2image", "dataset=fake", "dataset.num_samples=64", "dataset.num_classes=10",
             "trainer.device=cpu", "trainer.batch_size=8", "trainer.max_steps=4", "trainer.num_threads=1",
             "task.text_encoder_steps=5", "task.text_width=8", "task.text_dim=8", "task.drop_attribute=0",
             "task.preview_per_prompt=3", "task.prompts=[" + ",".join(f'"{p}"' for p in PROMPTS) + "]",
             "log.every_n_steps=2", "log.sample_every_n_steps=2", "eval.enabled=false", "ema.start_step=1",
             "ema.bn_samples=16"]
TINY_MODELS = {  # each model option of task=text2image, tiny
    "text_dcgan": ["model.generator.ngf=4", "model.discriminator.ndf=4", "model.generator.condition_dim=4",
                   "model.discriminator.condition_dim=4"],
    "text_stylegan2": ["model=text_stylegan2", "model.z_dim=8", "model.w_dim=8", "model.channel_base=56",
                       "model.channel_max=8", "model.discriminator.channel_base=56",
                       "model.discriminator.channel_max=8"],
}
TINY_T2I = [*TINY_TEXT, *TINY_MODELS["text_dcgan"]]


def folder_of_images(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        Image.new("RGB", (20, 16), (40, 90, 200)).save(root / name)
    return root


def load(root: Path) -> list[list[str]]:
    return load_captioned_folder(root=str(root), channels=3, image_size=8).captions


def test_captions_jsonl_several_per_image_and_one_line_errors(tmp_path: Path) -> None:
    root = folder_of_images(tmp_path / "birds", ["a.png", "b.png"])
    lines = [{"file": "a.png", "text": "a red bird"}, {"file": "b.png", "text": "a blue bird"},
             {"file": "a.png", "text": " a small red bird "}]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert load(root) == [["a red bird", "a small red bird"], ["a blue bird"]]
    Image.new("RGB", (20, 16)).save(root / "c.png")  # an image no line names
    with pytest.raises(GanCliError, match=r"c\.png has no caption \(no line of captions\.jsonl names it\)") as err:
        load(root)
    assert "\n" not in str(err.value)
    (root / "captions.jsonl").write_text('{"file": "a.png", "text": "x"}\n{"file": "a.png"}\n')
    with pytest.raises(GanCliError, match=r"captions\.jsonl:2: not a"):
        load(root)
    (root / "captions.jsonl").write_text('{"file": "zebra.png", "text": "x"}\n')
    with pytest.raises(GanCliError, match=r"'zebra\.png' is not an image"):
        load(root)


def test_captions_txt_per_image_and_one_line_errors(tmp_path: Path) -> None:
    root = folder_of_images(tmp_path / "flowers", ["a.png", "b.jpg"])
    with pytest.raises(GanCliError, match="has no captions: add captions.jsonl") as err:
        load(root)  # neither layout
    assert "\n" not in str(err.value)
    (root / "a.txt").write_text("a yellow flower\n\nwith five petals\n")
    with pytest.raises(GanCliError, match=r"b\.jpg has no caption \(b\.txt is missing or empty\)"):
        load(root)
    (root / "b.txt").write_text("a white flower\n")
    assert load(root) == [["a yellow flower", "with five petals"], ["a white flower"]]


def stroke(width: int, lean: int) -> torch.Tensor:
    """A hand-made 28 px digit: a straight stroke from row 4 to row 23, `width` px wide, its top
    `lean` px right of its bottom (lean > 0: leaning right, like "/")."""
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    for row in range(4, 24):
        center = 14 + round(lean * (13.5 - row) / 19)
        image[0, row, center - width // 2 : center - width // 2 + width] = 255
    return image


def test_mnist_captions_say_what_hand_made_strokes_show() -> None:
    # class 7: thin, middle and thick strokes, each leaning left, upright and leaning right
    shapes = [(width, lean) for width in (1, 3, 6) for lean in (-8, 0, 8)]
    data = ImageData(torch.stack([stroke(w, lean) for w, lean in shapes]), torch.full((9,), 7), 10)
    thickness, slant = attributes(data, slant_threshold=0.15)
    assert [THICKNESS[t] or "middle" for t in thickness.tolist()] == ["thin"] * 3 + ["middle"] * 3 + ["thick"] * 3
    assert [SLANTS[s] for s in slant.tolist()] == ["slanted left", "upright", "slanted right"] * 3
    sentences, codes = made_captions(data, "digits", per_image=24, drop_attribute=0.0, slant_threshold=0.15, seed=0)
    said = [{sentences[c] for c in row} for row in codes.tolist()]
    assert said[2] == {"a thin seven, slanted right", "a thin 7, slanted right", "7, slanted right"}
    assert said[6] == {"a thick seven, slanted left", "a thick 7, slanted left", "7, slanted left"}
    assert "a seven, upright" in said[4]  # the middle third is never said
    _, dropped = made_captions(data, "digits", per_image=200, drop_attribute=0.5, slant_threshold=0.15, seed=0)
    assert {"a thick seven", "a seven"} <= {sentences[c] for c in dropped[8].tolist()}  # attributes left out


def test_unknown_words_of_a_prompt_are_one_line() -> None:
    vocabulary = ["a", "seven", "thick", "thin"]
    assert tokenize(["a thick seven"], vocabulary, 4).tolist() == [[1, 3, 2, 0]]
    with pytest.raises(GanCliError, match="unknown words 'purple', 'zebra'") as err:
        tokenize(["a purple seven zebra"], vocabulary, 4)
    assert "\n" not in str(err.value) and "thick" in str(err.value)  # says which words it knows


def make_task(overrides: list[str], model: str = "text_dcgan") -> TextToImage:
    cfg = validate(compose_train([*TINY_TEXT, *TINY_MODELS[model], *overrides]))
    seed_everything(cfg.trainer.seed)
    task = build_task(cfg, torch.device("cpu"))
    assert isinstance(task, TextToImage)
    return task


@pytest.mark.parametrize("model", list(TINY_MODELS))
def test_matching_aware_d_loss_counts_a_mismatched_pair_as_fake(model: str) -> None:
    task = make_task([], model)
    loss, stats, handed = task.d_loss(0, 0, None)
    real, _ = task.sampler.batch(0)
    text, fake, d = handed.text, handed.images.detach(), task.discriminator
    real_logits, fake_logits, wrong_logits = d(real, text), d(fake, text), d(real, text.roll(1, 0))
    # BCE, the paper's GAN-CLS: log D(real, right) + (log(1 - D(real, wrong)) + log(1 - D(fake, right))) / 2
    fakes = 0.5 * (F.softplus(fake_logits).mean() + F.softplus(wrong_logits).mean())
    expected = F.softplus(-real_logits).mean() + fakes
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    as_real = F.softplus(-real_logits).mean() + F.softplus(-wrong_logits).mean() + F.softplus(fake_logits).mean()
    assert loss.item() != pytest.approx(as_real.item(), rel=1e-3)
    assert stats["prob/mismatch"].item() == pytest.approx(torch.sigmoid(wrong_logits).mean().item(), rel=1e-5)
    assert not torch.equal(text, text.roll(1, 0))  # the batch's captions differ: the wrong ones are wrong


@pytest.mark.parametrize(("fraction", "count"), [(1.0, 8), (0.25, 2), (0.01, 2)])
def test_gan_int_runs_on_its_share_of_the_batch(fraction: float, count: int) -> None:
    task = make_task([f"task.interpolation_fraction={fraction}"])
    _, _, handed = task.d_loss(0, 0, None)
    sizes: list[int] = []
    hook = task.generator.register_forward_hook(lambda module, inputs, output: sizes.append(output.shape[0]))
    _, stats, _ = task.g_loss(0, 0, handed)
    hook.remove()
    assert sizes[0] == count  # GAN-INT's forward (the mode-seeking one follows when diversity is on)
    assert stats["loss/int"].item() > 0


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5"])
def test_a_gan_int_share_outside_0_1_is_one_line(value: str) -> None:
    with pytest.raises(GanCliError, match=f"task.interpolation_fraction={value}: allowed is a number in") as err:
        make_task([f"task.interpolation_fraction={value}"])
    assert "\n" not in str(err.value)


def test_text_stylegan2_conditions_the_mapping_and_the_projection_on_the_caption() -> None:
    task = make_task([], "text_stylegan2")
    generator, discriminator = task.generator, task.discriminator
    text = F.normalize(torch.randn(4, 8), dim=1)
    other = text.roll(1, 0)
    z = torch.randn(4, 8)
    generator.eval()
    # the caption reaches every style through w (stylegan2-ada's conditioning on c) ...
    assert not torch.equal(generator.mapping_ws(z, text), generator.mapping_ws(z, other))
    assert not torch.equal(generator(z, text), generator(z, other))
    # ... and D's projection: the same images score differently under other captions
    images = torch.randn(4, 1, 28, 28)
    assert not torch.equal(discriminator(images, text), discriminator(images, other))
    # truncation pulls each caption's w towards that caption's own mean w, not a caption-less one
    centers = generator.truncation_center(torch.cat([text[:1], other[:1], text[:1]]))
    assert torch.equal(centers[0], centers[2]) and not torch.equal(centers[0], centers[1])
    assert torch.allclose(generator.mapping_ws(z[:1], text[:1], truncation=0.0)[0, 0], centers[0], atol=1e-6)


@pytest.mark.parametrize("model", list(TINY_MODELS))
def test_a_text_model_under_another_task_says_which_task_takes_it(model: str) -> None:
    cfg = validate(compose_train(["dataset=fake", f"model={model}", "trainer.device=cpu"]))
    with pytest.raises(GanCliError, match=f"model={model} draws from captions: use it with task=text2image") as err:
        build_task(cfg, torch.device("cpu"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model", list(TINY_MODELS))
def test_trains_with_a_row_per_prompt_and_resumes_bitwise(tmp_path: Path, model: str) -> None:
    straight = [*TINY_TEXT, *TINY_MODELS[model], "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    metrics = train(compose_train(straight), run_dir=tmp_path / "straight")
    for name in ("loss/d", "loss/g", "loss/int", "prob/mismatch"):
        assert math.isfinite(metrics[name]), name
    grid = Image.open(tmp_path / "straight" / "samples" / "step_0000006.png")
    assert grid.size == (3 * 30 + 2, len(PROMPTS) * 30 + 2)  # a row per prompt, 28 px + padding
    events = b"".join(p.read_bytes() for p in (tmp_path / "straight").rglob("events.out.tfevents*"))
    assert all(prompt.encode() in events for prompt in PROMPTS)  # the prompts in the Text tab
    middle = tmp_path / "straight" / "checkpoints" / "step_0000003.pt"
    train(compose_train([*straight, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
    expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert resumed["step"] == expected["step"] == 6
    assert set(expected["networks"]) == {"generator", "discriminator", "text_encoder"}
    for kind in ("networks", "averages"):
        for name, weights in expected[kind].items():
            for key, value in weights.items():
                assert torch.equal(value, resumed[kind][name][key]), f"{kind}.{name}.{key}"


def test_gan_sample_draws_a_prompt_and_a_row_per_prompt_of_a_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("gan-train", [*TINY_T2I, f"hydra.run.dir={run}"], cwd=tmp_path)
    checkpoint = f"checkpoint={run}/checkpoints/last.pt"
    run_cli("gan-sample", [checkpoint, "text=a thick seven", "num_samples=4", "out=one.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "one.npz")["arr_0"].shape == (4, 28, 28, 1)
    (tmp_path / "prompts.txt").write_text("a thin one\n\na thick seven\n7, slanted left\n")
    run_cli("gan-sample", [checkpoint, "text_file=prompts.txt", "num_samples=5", "out=rows.png"], cwd=tmp_path)
    assert Image.open(tmp_path / "rows.png").size == (5 * 30 + 2, 3 * 30 + 2)  # 3 prompts x 5 columns
    run_cli("gan-sample", [checkpoint, "text_file=prompts.txt", "seeds=[4,9]", "out=seeded.npz"], cwd=tmp_path)
    seeded = np.load(tmp_path / "seeded.npz")["arr_0"]
    assert seeded.shape == (6, 28, 28, 1) and not np.array_equal(seeded[0], seeded[2])  # rows differ by prompt
    run_cli("gan-sample", [checkpoint, "text=a thick seven", "seeds=[9]", "out=nine.npz"], cwd=tmp_path)
    assert np.array_equal(np.load(tmp_path / "nine.npz")["arr_0"][0], seeded[3])  # seed 9, same image
    result = run_cli("gan-sample", [checkpoint, "text=a purple seven", "out=x.png"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "unknown words 'purple'" in result.stderr and "Traceback" not in result.stderr
    # gan-eval scores it by the task's own evaluation (the one training logs), beside real images
    run_cli("gan-eval", [checkpoint, "num_samples=40", "classifier_epochs=1", "out=eval.json"], cwd=tmp_path)
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["task"] == "TextToImage" and scores["step"] == 4
    assert {"fd_classifier", "fd_classifier_asked", "fd_classifier_captioned", "asked_class",
            "asked_class_thin_thick", "thick_over_thin_ink", "slant_agreement"} <= set(scores)
    assert scores["baseline/asked_class_real"] > scores["asked_class"]  # 4 steps: far from the real digits


@pytest.fixture(scope="module", params=list(TINY_MODELS))
def tiny_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp(request.param)
    train(compose_train([*TINY_TEXT, *TINY_MODELS[request.param]]), run_dir=run)
    return run / "checkpoints" / "last.pt"


def sample_of(checkpoint: Path, out: Path, *overrides: str) -> Path:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint={checkpoint}", f"out={out}", "device=cpu", *overrides])
    return sample(cfg)


def test_interpolate_walks_from_prompt_to_prompt_through_their_text_images(tiny_checkpoint: Path,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "walk.txt").write_text("a thin one\na thick seven\na two\n")
    prompts = f"text_file={tmp_path / 'walk.txt'}"
    rows = np.load(sample_of(tiny_checkpoint, tmp_path / "rows.npz", prompts, "seeds=[4,9]"))["arr_0"]
    first = np.load(sample_of(tiny_checkpoint, tmp_path / "first.npz", "text=a thin one", "seeds=[4,9]"))["arr_0"]
    assert np.array_equal(first, rows[:2])  # text= draws what text_file= draws in that prompt's row
    walk = sample_of(tiny_checkpoint, tmp_path / "walk.gif", prompts, "seeds=[4,9]", "nrow=2", "interpolate=5")
    # a frame: the two seeds' images side by side, 2 px apart as in .png grids, enlarged 8x (to >= 256 px)
    with Image.open(walk) as gif:
        assert gif.n_frames == 5 and gif.size == (62 * 8, 32 * 8)
        frames = []
        for index in range(5):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("L"))[::8, ::8])

    def frame_of(prompt: int) -> np.ndarray:
        expected = np.zeros((32, 62), dtype=np.uint8)
        expected[2:30, 2:30], expected[2:30, 32:60] = rows[2 * prompt, :, :, 0], rows[2 * prompt + 1, :, :, 0]
        return expected

    # frames 0, 2 and 4 sit on the prompts (walk positions 0, 1, 2): their text= images, byte for byte
    for frame, prompt in ((0, 0), (2, 1), (4, 2)):
        assert np.array_equal(frames[frame], frame_of(prompt)), f"frame {frame} is not prompt {prompt}'s images"
    assert not np.array_equal(frames[1], frames[0]) and not np.array_equal(frames[1], frames[2])  # between them
    one = sample_of(tiny_checkpoint, tmp_path / "one.gif", prompts, "seeds=[4]", "interpolate=3", "upscale=1")
    with Image.open(one) as gif:  # a single column: each frame is the image itself
        assert gif.n_frames == 3 and gif.size == (28, 28)
        assert np.array_equal(np.asarray(gif.convert("L")), rows[0, :, :, 0])


@pytest.mark.parametrize(("overrides", "message"), [
    (["text=a thin one"], r"interpolate=4 walks from prompt to prompt and text= gives one: give text_file= with two"),
    (["text_file=one.txt"], r"text_file=one\.txt holds one: give text_file= with two or more prompts"),
    (["text_file=walk.txt", "interpolate=2"], r"interpolate=2 frames cannot visit the 3 prompts of text_file=walk"),
])
def test_interpolate_needs_two_or_more_prompts_and_enough_frames(tiny_checkpoint: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 overrides: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.txt").write_text("a thin one\n")
    (tmp_path / "walk.txt").write_text("a thin one\na thick seven\na two\n")
    with pytest.raises(GanCliError, match=message) as err:
        sample_of(tiny_checkpoint, tmp_path / "w.gif", "interpolate=4", *overrides)
    assert "\n" not in str(err.value) and not (tmp_path / "w.gif").exists()


def test_captioned_distance_asks_for_the_reference_digits_own_captions(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`_captioned`: one caption per reference image, by the training grammar, so a generator that
    draws the class it is told matches the reference and one that ignores the caption does not."""
    monkeypatch.setattr(classifier, "MIN_STEPS", 100)
    cfg = validate(compose_train([*TINY_T2I, "eval.enabled=true", "eval.num_samples=80", "eval.batch_size=32",
                                  "eval.classifier_epochs=1", "eval.kid_subsets=5", "eval.kid_subset_size=32",
                                  f"eval.cache_dir={tmp_path}", "dataset.num_samples=400", "task.drop_attribute=0.3"]))
    data = build_task(cfg, torch.device("cpu")).data  # fake: no test split, the training images are the reference
    table = caption_table(data, CaptionSettings("digits", 1, 0.3, 0.15, 12, 0))
    class_of = {table.vocabulary.index(word) + 1: label for label, word in enumerate(CLASS_WORDS["digits"])}
    class_of |= {table.vocabulary.index(str(label)) + 1: label for label in range(10)}
    told: list[int] = []

    def by_class(z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # an image of the class the caption names
        labels = [next(class_of[int(t)] for t in row if int(t) in class_of) for row in text]
        told.extend(labels)
        members = [torch.nonzero(data.labels == label).view(-1) for label in labels]
        rows = torch.stack([m[int(1000 * v.abs()) % len(m)] for m, v in zip(members, z[:, 0], strict=True)])
        return data.images[rows].float() / 127.5 - 1

    evaluation = TextEvaluation(cfg, data, table, lambda tokens: tokens.float(), by_class, torch.device("cpu"))
    told.clear()
    right = evaluation.evaluate(step=1)
    prompted, captioned = told[:80], told[80:]  # the 40 prompts' samples (2 each), then the test captions'
    assert len(told) == 160 and sorted(prompted) == sorted(list(range(10)) * 8)
    assert sorted(captioned) == sorted(data.labels[torch.randperm(400, generator=torch.Generator()
                                                                  .manual_seed(0))[:80]].tolist())
    evaluation.sample = lambda z, text: data.images[data.labels == 3][: z.shape[0]].float() / 127.5 - 1
    wrong = evaluation.evaluate(step=2)  # one class whatever the caption says
    fd = "metrics/fd_classifier_captioned"
    assert right[fd] < 0.5 * wrong[fd] and "baseline/fd_classifier_captioned_real" in evaluation.baseline
