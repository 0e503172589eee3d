"""task=text2image's captions as tensors, and its frozen text encoder (trained once, cached).

Every caption of the dataset is a row of `sentences`; image i's captions are `codes[i, :counts[i]]`,
indices into it, so the token ids of every caption of every image are one tensor
(N, max_captions, max_words) on the device and a step picks its captions by indexing, with no
Python per sample. The text encoder is trained on those captions with the images (models/text.py)
before the GAN, cached like the feature classifier (`eval.cache_dir`, ~/.cache/gan_cli) under a
name made from the captions and the encoder's settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.data.captions import made_captions, own_captions
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate.classifier import save_atomic
from gan_cli.evaluate.metrics import cache_dir, dataset_key
from gan_cli.models.text import TextEncoder, pretrain, tokenize, vocabulary_of

log = logging.getLogger("gan_cli")


@dataclass(frozen=True)
class CaptionSettings:
    """The task options that decide the captions of a labelled dataset (task.* of text2image)."""

    class_words: str
    per_image: int
    drop_attribute: float
    slant_threshold: float
    max_words: int
    seed: int


@dataclass
class CaptionTable:
    sentences: list[str]  # every distinct caption
    codes: Tensor  # (N, K) int64: image i's captions are sentences[codes[i, :counts[i]]]
    counts: Tensor  # (N,) int64, >= 1
    vocabulary: list[str]
    tokens: Tensor  # (len(sentences), max_words) token ids of each sentence

    def image_tokens(self) -> Tensor:
        """(N, K, max_words) token ids of every caption of every image."""
        return self.tokens[self.codes]

    def digest(self) -> str:
        content = json.dumps(self.sentences).encode() + self.codes.numpy().tobytes() + self.counts.numpy().tobytes()
        return hashlib.sha1(content).hexdigest()[:10]


def caption_table(data: ImageData, settings: CaptionSettings) -> CaptionTable:
    """A captioned folder's own captions (or a converted one's), or captions made from a labelled
    dataset (data/captions.py)."""
    own = own_captions(data)
    if own is not None:
        index: dict[str, int] = {}
        for texts in own:
            for text in texts:
                index.setdefault(text, len(index))
        width = max(len(texts) for texts in own)
        codes = torch.tensor([[index[t] for t in texts] + [index[texts[0]]] * (width - len(texts))
                              for texts in own], dtype=torch.long)
        counts = torch.tensor([len(texts) for texts in own], dtype=torch.long)
        sentences = list(index)
    else:
        sentences, codes = made_captions(data, settings.class_words, settings.per_image, settings.drop_attribute,
                                         settings.slant_threshold, settings.seed)
        counts = torch.full((codes.shape[0],), codes.shape[1], dtype=torch.long)
    vocabulary = vocabulary_of(sentences)
    return CaptionTable(sentences, codes, counts, vocabulary,
                        tokenize(sentences, vocabulary, settings.max_words, "caption"))


def trained_encoder(cfg: DictConfig, table: CaptionTable, images: Tensor, width: int, text_dim: int, steps: int,
                    device: torch.device) -> TextEncoder:
    """The text encoder for these captions, from the cache or trained now (and cached); frozen.
    Made under its own RNG, so the GAN's networks and batches are the same either way."""
    name = f"{dataset_key(cfg.dataset)}_text_encoder_{table.digest()}_w{width}_d{text_dim}_s{steps}.pt"
    path = cache_dir(cfg) / name
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        encoder = TextEncoder(table.vocabulary, width, text_dim).to(device)
        if path.is_file():
            encoder.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            log.info("text encoder from %s (%d words)", path, len(table.vocabulary))
            return encoder.eval().requires_grad_(False)
        log.info("text encoder: training on %d captions of %d images, %d words (once; cached at %s)",
                 len(table.sentences), images.shape[0], len(table.vocabulary), path)
        tokens = table.image_tokens().to(device)
        # one caption drawn per image and step: an image with fewer captions repeats its first ones
        # the images stay where they are (a converted dataset's may be a memory map larger than memory):
        # each step's rows are read and moved to the device, the same rows and pixels either way
        encoder = pretrain(encoder, images, tokens, steps, min(256, images.shape[0]), seed=0)
    save_atomic(encoder.state_dict(), path)
    return encoder
