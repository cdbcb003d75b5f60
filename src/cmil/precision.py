"""Numeric precision of training: float32 everywhere, or bf16 autocast where the hardware runs it fast.

`Config.precision` is `fp32`, `bf16` or `auto`; `resolve_precision` turns `auto` into `bf16` on CUDA
devices with bf16 support and on CPUs with bf16 instructions (AVX512-BF16 or AMX), `fp32` elsewhere.
Emulated bf16 (a CPU without those instructions) is slower than fp32, hence fp32 there.

What runs in bf16 under `use_precision("bf16")`: the regions `autocast_region` marks, i.e. the MLPs
(actor, critics, discriminator, BC and DAC heads) and the conv image encoder and decoder: the bulk of
the FLOPs. Each region returns float32, so the losses, the distributions, the optimiser states and
the weights stay float32. The RSSM (GRU, prior/posterior heads, KL) stays float32 too: its state is
carried along the whole sequence and imagination horizon, where bf16's 8-bit mantissa would compound.

The switch is a process-wide flag set by a context manager (the training loop wraps its updates in
it) rather than a module attribute, so that model code and checkpoints do not depend on it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")

_bf16_active = False


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), read at run time."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so assume not
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls and convs run natively (faster than fp32) on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`fp32` | `bf16` as asked; `auto` -> `bf16` where `bf16_is_fast(device)`, else `fp32`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


@contextlib.contextmanager
def use_precision(precision: str) -> Iterator[None]:
    """Run the marked regions (`autocast_region`) in bf16 inside this block when `precision` is bf16.

    `precision` must be resolved (`fp32` or `bf16`); nesting restores the outer setting on exit."""
    global _bf16_active
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"use_precision needs a resolved precision (fp32 | bf16), got {precision!r}")
    outer = _bf16_active
    _bf16_active = precision == "bf16"
    try:
        yield
    finally:
        _bf16_active = outer


def bf16_active() -> bool:
    return _bf16_active


def autocast_region(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """bf16 autocast on x's device inside a `use_precision('bf16')` block; a no-op otherwise.

    The caller casts the region's output back to x's dtype (`out.to(x.dtype)`)."""
    if not _bf16_active:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


def fp32_on_cpu(layer: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`layer(x, ...)` in float32 when inside a bf16 block on the CPU, as is elsewhere (CUDA keeps bf16).

    For layers whose oneDNN bf16 kernels are slower than fp32 on the CPU (the decoder's last, 12-output
    sub-pixel conv: its bf16 backward is 1.6x slower, docs/performance.md)."""
    if not (_bf16_active and x.device.type == "cpu"):
        return layer(x, *args, **kwargs)
    with torch.autocast("cpu", enabled=False):
        return layer(x.float(), *args, **kwargs)
