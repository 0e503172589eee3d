"""How task=text2image is scored, on rank 0, from samples of the EMA generator for fixed prompts
and latents (seed 0), each number next to the same number on real images (`baseline/*_real`):

    metrics/fd_classifier        Frechet distance to the test split in the feature classifier's
                                 space (metrics/fid with eval.features=inception); kd likewise
captions made from labels (MNIST, Fashion-MNIST), prompts "a thin <c>", "a thick <c>",
"a <c>, slanted left" and "a <c>, slanted right" for every class c, equal shares of the samples:
    metrics/fd_classifier_asked  the same distance to test images that fit the prompts, as many
                                 per prompt: the prompts ask for thirds of each class, and even
                                 real digits that fit them are far (~0.21) from the whole split
    metrics/fd_classifier_captioned  the distance to the test split of samples made for the test
                                 split's own captions (one each, by the training grammar and
                                 drop_attribute, seed 0): a caption per test image, as text-to-image
                                 FIDs are measured (COCO captions), so prompts and reference agree
    metrics/asked_class          share of samples the classifier reads as the class asked for
    metrics/asked_class_thin_thick  the same over the "a thin <c>" and "a thick <c>" prompts alone
    metrics/thick_over_thin_ink  mean ink of the `thick` samples over that of the `thin` ones
    metrics/slant_agreement      share of `slanted left` samples with a measured shear < 0 and of
                                 `slanted right` ones with a shear > 0 (data/captions.shear)
The real images are training images whose own attributes fit each prompt (the thinnest third of
a class for "a thin <c>", ...), as many per prompt. A captioned folder's prompts are its own
captions (one per image, from seed 0) and it gets the distances alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.data.captions import CLASS_WORDS, SLANTS, attributes, caption, ink, made_captions, own_captions, shear
from gan_cli.data.datasets import ImageData, to_uint8
from gan_cli.evaluate.metrics import Evaluator, ReferenceMetrics, predicted_labels, timed
from gan_cli.models.text import tokenize
from gan_cli.sampling.generate import draw_latents
from gan_cli.tasks.text_captions import CaptionTable

Encode = Callable[[Tensor], Tensor]  # token ids (B, L) -> caption embeddings (B, text_dim)
Sample = Callable[[Tensor, Tensor], Tensor]  # (z, caption embeddings) -> [-1, 1] images
KINDS = ("thin", "thick", "left", "right")  # the attribute prompts, in this order for each class


def attribute_prompts(class_words: str, classes: int) -> list[str]:
    words = CLASS_WORDS[class_words]
    return [text for label in range(classes) for text in (
        caption(words, label, 0, None, 0), caption(words, label, 2, None, 0),
        caption(words, label, 1, 0, 0), caption(words, label, 1, len(SLANTS) - 1, 0))]


def real_rows(data: ImageData, slant_threshold: float, per_prompt: int) -> Tensor:
    """Rows of images fitting each attribute prompt, `per_prompt` each, in prompt order: distinct
    images where enough fit (the attributes are measured within `data`, as for its captions)."""
    thickness, slant = attributes(data, slant_threshold)
    fits = {"thin": thickness == 0, "thick": thickness == 2, "left": slant == 0, "right": slant == len(SLANTS) - 1}
    noise, rows = torch.Generator().manual_seed(0), []
    for label in range(data.num_classes):
        for kind in KINDS:
            members = torch.nonzero((data.labels == label) & fits[kind]).view(-1)
            if not len(members):  # tiny data: no image fits; any image of the class (or any) stands in
                members = torch.nonzero(data.labels == label).view(-1) if (data.labels == label).any() \
                    else torch.arange(data.labels.shape[0])
            drawn = torch.randperm(len(members), generator=noise)[:per_prompt] if len(members) >= per_prompt \
                else torch.randint(len(members), (per_prompt,), generator=noise)
            rows.append(members[drawn])
    return torch.cat(rows)


class TextEvaluation:
    def __init__(self, cfg: DictConfig, data: ImageData, captions: CaptionTable, encode: Encode, sample: Sample,
                 device: torch.device):
        self.features = Evaluator(cfg, data, device)
        self.primary, self.sample, self.device = self.features.primary_metric, sample, device
        self.batch = cfg.eval.batch_size
        task = cfg.task
        self.by_attribute = own_captions(data) is None and data.num_classes > 0
        if self.by_attribute:
            prompts = attribute_prompts(task.class_words, data.num_classes)
            self.per_prompt = max(cfg.eval.num_samples // len(prompts), 1)
            tokens = tokenize(prompts, captions.vocabulary, task.max_words, "evaluation prompt")
            tokens = tokens.repeat_interleave(self.per_prompt, 0)
            self.asked = torch.arange(data.num_classes).repeat_interleave(len(KINDS) * self.per_prompt)
            self.kinds = torch.arange(len(KINDS)).repeat_interleave(self.per_prompt).repeat(data.num_classes)
        else:
            rows = torch.randint(captions.codes.shape[0], (cfg.eval.num_samples,), generator=torch.Generator()
                                 .manual_seed(0))
            tokens = captions.tokens[captions.codes[rows, 0]]
        self.text = torch.cat([encode(chunk.to(device)) for chunk in tokens.split(self.batch)])
        z_dim = int(cfg.model.z_dim)
        self.z = draw_latents(self.text.shape[0], z_dim, 0, chunk=self.batch)
        self.baseline: dict[str, float] = {}
        self.asked_reference: dict[str, ReferenceMetrics] = {}
        self.captioned: tuple[Tensor, Tensor] | None = None  # (latents, embeddings) of test captions
        if self.by_attribute and self.features.enabled:
            # The prompts ask for thirds of each class, not the test split's mix: even real digits
            # that fit them sit at FD ~0.21 from it. `_asked` measures against test digits that fit.
            test = self.features.reference_data
            asked = test.images[real_rows(test, task.slant_threshold, self.per_prompt)]
            self.asked_reference = {"_asked": self.features.reference_metrics(asked)}
            # `_captioned`: one caption per test image drawn as the training captions are, so the
            # prompts are the test split's mix and the split itself is the reference
            sentences, codes = made_captions(test, task.class_words, 1, task.drop_attribute, task.slant_threshold, 0)
            count = min(cfg.eval.num_samples, codes.shape[0])
            rows = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(0))[:count]
            said = tokenize([sentences[c] for c in codes[rows, 0].tolist()], captions.vocabulary, task.max_words,
                            "test caption")
            self.captioned = (draw_latents(count, z_dim, 1, chunk=self.batch),
                              torch.cat([encode(chunk.to(device)) for chunk in said.split(self.batch)]))
            real = data.images[real_rows(data, task.slant_threshold, self.per_prompt)]
            random_real = data.images[torch.randperm(data.images.shape[0], generator=torch.Generator()
                                                     .manual_seed(0))[:count]]
            self.baseline = {f"baseline/{k.removeprefix('metrics/')}_real": v
                             for k, v in self.scores(real, random_real).items()}

    def scores(self, images: Tensor, captioned: Tensor | None = None) -> dict[str, float]:
        """The metrics of uint8 images (N, C, H, W) made for this evaluation's prompts, in order,
        and of those made for the test captions (`captioned`, when measured)."""
        values = self.features.score(images, also=self.asked_reference) if self.features.enabled else {}
        if captioned is not None:  # to the whole reference, as the prompts are its own captions
            values |= self.features.distances(captioned, {"_captioned": (self.features.fid, self.features.kid)})
        values.pop("metrics/class_coverage_max_dev", None)  # the prompts ask for classes: coverage is by design
        if not self.by_attribute:
            return values
        images = images.cpu()
        if self.features.classifier is not None:
            read = predicted_labels(self.features.classifier, images, self.batch, self.device)
            right = read == self.asked
            values["metrics/asked_class"] = float(right.float().mean())
            values["metrics/asked_class_thin_thick"] = float(right[self.kinds <= 1].float().mean())  # KINDS[:2]
        amount, slant = ink(images), shear(images)
        values["metrics/thick_over_thin_ink"] = float(amount[self.kinds == 1].mean() / amount[self.kinds == 0].mean())
        agree = torch.cat([slant[self.kinds == 2] < 0, slant[self.kinds == 3] > 0])
        values["metrics/slant_agreement"] = float(agree.float().mean())
        return values

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        def samples(z: Tensor, text: Tensor) -> Tensor:
            return torch.cat([to_uint8(self.sample(latents.to(self.device), said)).cpu()
                              for latents, said in zip(z.split(self.batch), text.split(self.batch), strict=True)])

        def scored() -> dict[str, float]:
            prompted = samples(self.z, self.text)  # first: a G that draws noise draws it as before
            captioned = None if self.captioned is None else samples(*self.captioned)
            return self.scores(prompted, captioned)

        def shown(key: str, value: float) -> str:
            name = key.removeprefix("metrics/")
            real = self.baseline.get(f"baseline/{name}_real")
            return f"{name}={value:.4g}" + ("" if real is None else f" (real {real:.4g})")

        return timed(step, scored, shown)
