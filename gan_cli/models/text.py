"""Words -> a caption embedding, for task=text2image: a word tokenizer whose vocabulary is the
dataset's own captions, and a small text encoder trained before the GAN with a contrastive
image-text objective (CLIP's, Radford et al. 2021, in place of Reed et al.'s structured joint
embedding) against a small image encoder, then frozen.

The encoder is a bag of words (mean of word embeddings, then an MLP): the captions here are
short templates whose meaning is in their words ("thick", "left", "seven"), not their order.
Its vocabulary travels inside it as a buffer, so a checkpoint is enough to encode a prompt.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError

log = logging.getLogger("gan_cli")
WORD = re.compile(r"[a-z0-9]+")  # lower-cased; punctuation separates words ("t-shirt" -> t, shirt)
PAD = 0  # token id of padding; word k of the vocabulary is id k + 1


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary_of(texts: Sequence[str]) -> list[str]:
    """Every word of `texts`, sorted: the same captions always give the same ids."""
    return sorted({word for text in texts for word in words_of(text)})


def tokenize(texts: Sequence[str], vocabulary: Sequence[str], max_words: int, what: str = "prompt") -> Tensor:
    """(len(texts), max_words) int64 token ids, padded with PAD and cut at max_words. A word the
    vocabulary lacks is a one-line error naming it (the model has never seen it)."""
    ids = {word: index + 1 for index, word in enumerate(vocabulary)}
    tokens = torch.full((len(texts), max_words), PAD, dtype=torch.long)
    for row, text in enumerate(texts):
        words = words_of(text)
        unknown = sorted({word for word in words if word not in ids})
        if unknown or not words:
            known = ", ".join(vocabulary[:40]) + (", ..." if len(vocabulary) > 40 else "")
            said = f"unknown words {', '.join(map(repr, unknown))}" if unknown else "no words"
            raise GanCliError(f"{what} {text!r} has {said}: the training captions' {len(vocabulary)} words are {known}")
        tokens[row, : min(len(words), max_words)] = torch.tensor([ids[w] for w in words[:max_words]])
    return tokens


class TextEncoder(nn.Module):
    """(B, L) token ids -> (B, text_dim) unit-length caption embeddings."""

    vocabulary_bytes: Tensor

    def __init__(self, vocabulary: Sequence[str], width: int = 128, text_dim: int = 128):
        super().__init__()
        self.embed = nn.Embedding(len(vocabulary) + 1, width, padding_idx=PAD)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, text_dim))
        self.text_dim = text_dim
        packed = torch.tensor(list("\n".join(vocabulary).encode()), dtype=torch.uint8)
        self.register_buffer("vocabulary_bytes", packed)  # the words, stored with the weights

    @property
    def vocabulary(self) -> list[str]:
        return words_from(self.vocabulary_bytes)

    def forward(self, tokens: Tensor) -> Tensor:
        present = (tokens != PAD).unsqueeze(-1).float()  # (B, L, 1)
        bag = (self.embed(tokens) * present).sum(1) / present.sum(1).clamp_min(1)  # (B, width)
        return F.normalize(self.mlp(bag), dim=1)


def words_from(packed: Tensor) -> list[str]:
    """The vocabulary a TextEncoder's `vocabulary_bytes` buffer holds."""
    text = bytes(packed.cpu().tolist()).decode()
    return text.split("\n") if text else []


class ImageEncoder(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, text_dim) unit-length embeddings (pretraining only)."""

    def __init__(self, channels: int, text_dim: int = 128, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU(),  # (B, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),  # (B, 2w, H/4, W/4)
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU(),  # (B, 4w, H/8, W/8)
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * width, text_dim))

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.net(images), dim=1)


def contrastive_loss(text: Tensor, image: Tensor, same_caption: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over a batch of (caption, image) pairs. Pairs whose captions are the same
    sentence are all positives (a short grammar repeats sentences within a batch): the target of
    each row spreads over them instead of calling them negatives."""
    logits = text @ image.T / temperature  # (B, B)
    targets = same_caption.float() / same_caption.float().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def pretrain(encoder: TextEncoder, images: Tensor, tokens: Tensor, steps: int, batch_size: int,
             seed: int, temperature: float = 0.1) -> TextEncoder:
    """Train `encoder` for `steps` batches of (image, one of its captions) against a fresh image
    encoder; `images` uint8 (N, C, H, W) on the device of `tokens` (N, K, L), or a converted
    dataset's memory-mapped images on the CPU (each batch's rows read and moved). Returns it frozen."""
    device = tokens.device
    image_encoder = ImageEncoder(images.shape[1], encoder.text_dim).to(device)
    parameters = [*encoder.parameters(), *image_encoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=2e-3)
    noise = torch.Generator(device=device).manual_seed(seed)
    started, losses = time.perf_counter(), []
    for step in range(steps):
        rows = torch.randint(images.shape[0], (batch_size,), device=device, generator=noise)
        picks = torch.randint(tokens.shape[1], (batch_size,), device=device, generator=noise)
        chosen = tokens[rows, picks]  # (B, L)
        same = (chosen.unsqueeze(0) == chosen.unsqueeze(1)).all(-1)  # (B, B)
        pixels = images[rows.to(images.device)].to(device).float().div(127.5).sub(1)
        loss = contrastive_loss(encoder(chosen), image_encoder(pixels), same, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
    log.info("text encoder: %d contrastive steps in %.0f s, loss %s", steps, time.perf_counter() - started,
             " -> ".join(f"{value:.3f}" for value in losses[:: max(len(losses) // 4, 1)]))
    return encoder.eval().requires_grad_(False)
