"""StyleGAN2 conditioned on a caption embedding (task=text2image), built from models/stylegan2.py's
networks, conditioned as stylegan2-ada-pytorch conditions on its c:

G: the caption embedding goes through one fully connected layer to w_dim numbers (the class
embedding's place), is normalized like z, and is concatenated to z before the mapping network:
every style of the synthesis network depends on the text, and GAN-INT's interpolated captions are
just other points of that input.
D: StyleGAN2's D with its projection head reading the caption: logit += <M(t), h> / sqrt(dim) on
the last hidden features h, where M is a small mapping of the caption embedding (two fully
connected layers; stylegan2-ada's cmap). The task's loss (GAN-CLS) makes it matching-aware: a real
image with another image's caption must score as fake, which only the projection can tell.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from gan_cli.core.sizes import ImageSize
from gan_cli.models import stylegan2
from gan_cli.models.stylegan2_layers import EqualLinear
from gan_cli.models.text2image import caption_width


class CaptionMapping(nn.Sequential):
    """(B, text_dim) caption embeddings -> (B, dim): D's view of the text for its projection."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__(EqualLinear(text_dim, dim, activate=True), EqualLinear(dim, dim))


class TextStyleGenerator(stylegan2.Generator):
    """(z (B, z_dim), caption embedding (B, text_dim)) -> images (B, C, H, W); a StyleGenerator
    (models/abilities.py) whose condition is the caption embedding: truncation pulls towards the
    caption's own mean w."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, text_dim: int | None = None, channels: int = 1,
                 image_size: ImageSize = 28, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                 style_mixing_prob: float = 0.9, w_avg_beta: float = 0.995):
        super().__init__(z_dim, w_dim, channels, image_size, channel_base, channel_max, mapping_layers,
                         num_classes=0, conditional=False, style_mixing_prob=style_mixing_prob,
                         w_avg_beta=w_avg_beta,
                         condition=partial(EqualLinear, caption_width(text_dim, "text_stylegan2")))


class TextStyleDiscriminator(stylegan2.Discriminator):
    """(images (B, C, H, W), caption embeddings (B, text_dim)) -> logits (B,): real and matching."""

    def __init__(self, channels: int = 1, image_size: ImageSize = 28, channel_base: int = 32768, channel_max: int = 512,
                 text_dim: int | None = None, minibatch_std: int = 4, residual: bool = True):
        super().__init__(channels, image_size, channel_base, channel_max, num_classes=0, conditional=False,
                         minibatch_std=minibatch_std, residual=residual,
                         condition=partial(CaptionMapping, caption_width(text_dim, "text_stylegan2")))

    def forward(self, images: Tensor, text: Tensor | None = None) -> Tensor:  # the task passes text=
        if text is None or text.dim() != 2 or text.shape[0] != images.shape[0]:
            got = "None" if text is None else tuple(text.shape)
            raise ValueError(f"a text-conditional D needs caption embeddings of shape ({images.shape[0]}, text_dim), "
                             f"got {got}")
        return super().forward(images, text)
