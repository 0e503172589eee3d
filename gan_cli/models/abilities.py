"""Optional abilities of a generator, beyond the G(z, labels) -> images every family has.

Code that needs one asks `is_style_generator(generator)` (it reads the members below, so any
family that grows them gains the tools; no family is named), and mypy then knows the members are
there. Not `isinstance` on a runtime-checkable Protocol: from Python 3.12 that looks members up
statically and misses what nn.Module keeps in its buffers and submodules (w_avg, synthesis).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    from typing_extensions import TypeIs


class Synthesis(Protocol):
    """ws (B, num_ws, w_dim) -> images; `ws_resolutions[i]`: the resolution w i styles."""

    ws_resolutions: list[int]

    def __call__(self, ws: Tensor) -> Tensor: ...


class StyleGenerator(Protocol):
    """A StyleGAN-like generator network (models/stylegan2.py): a mapping network to w, a
    synthesis network from ws, the moving average of w that truncation pulls towards, and the
    running mean of the path-length regularizer (diversity=path_length)."""

    def mapping_ws(self, z: Tensor, labels: Tensor | None = None, truncation: float = 1.0) -> Tensor:
        """(B, num_ws, w_dim): w for every modulated layer, pulled towards w_avg by `truncation` (psi)."""
        ...

    @property
    def synthesis(self) -> Synthesis: ...

    @property
    def w_avg(self) -> Tensor: ...  # (w_dim,)

    @property
    def pl_mean(self) -> Tensor: ...  # 0-dim

    # nn.Module's, which the latent tools use: sampling runs in eval mode on G's device
    def eval(self) -> nn.Module: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


STYLE_ABILITIES = ("mapping_ws", "synthesis", "w_avg", "pl_mean")  # what is_style_generator looks for


def is_style_generator(generator: object) -> TypeIs[StyleGenerator]:
    """Whether `generator` has a StyleGenerator's abilities (every nn.Module has the rest)."""
    return all(hasattr(generator, name) for name in STYLE_ABILITIES)
