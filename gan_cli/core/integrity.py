"""A checkpoint's checksum: sha256 over everything it holds, in a fixed order, stored beside it.

torch.load does not check the zip's CRCs, so bytes overwritten inside a tensor load as other
weights (gan-sample drew black images, resume crashed in the RNG restore). The digest covers every
tensor's dtype, shape and raw bytes and every plain value, walking dicts in sorted key order, so
it is the same for the same content however torch laid out the file. A checkpoint written before
checksums existed has none and loads as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

KEY = "checksum"


def digest(state: dict[str, Any]) -> str:
    """`sha256:<hex>` of `state` without its own checksum entry."""
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in state.items() if key != KEY})
    return f"sha256:{hasher.hexdigest()}"


def _feed(hasher: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, no copy
    elif isinstance(value, dict):
        hasher.update(b"{")
        for key in sorted(value, key=repr):
            hasher.update(f"{key!r}=".encode())
            _feed(hasher, value[key])
        hasher.update(b"}")
    elif isinstance(value, (list, tuple)):
        hasher.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(hasher, item)
        hasher.update(b"]")
    else:  # int, float (repr round-trips exactly), str, bool, None
        hasher.update(f"{type(value).__name__}:{value!r};".encode())
