"""`trainer.precision=bf16` on a CPU: fast only with native BF16 instructions.

Without them (an AVX2-only x86 CPU: no avx512_bf16, no amx_bf16), oneDNN emulates bf16 and the
default DCGAN trained 12-16x slower than in fp32 (measured, issue 14). That is worth one loud
line at the start rather than a silent slowdown; the run still does what was asked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("gan_cli")

NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags; "bf16" is the Arm Features name


def cpu_flags() -> set[str] | None:
    """The CPU's flags from /proc/cpuinfo (Linux), or None where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return {flag for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
            for flag in line.split(":", 1)[1].split()}


def cpu_has_native_bf16() -> bool:
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # macOS and others: oneDNN's own answer


def warn_about_slow_precision(precision: str, device: torch.device) -> str | None:
    """Log (and return) a warning when bf16 autocast would be emulated on this CPU."""
    if precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return None
    message = ("trainer.precision=bf16 on a CPU without native BF16 instructions (no avx512_bf16 or amx_bf16 in "
               "/proc/cpuinfo): bf16 is emulated here and measured 12-16x slower than precision=32; "
               "use precision=32 on this machine")
    log.warning(message)
    return message
