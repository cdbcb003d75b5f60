"""The optimiser pieces every learnt part of the world-model methods shares: DreamerV2's Adam with decoupled
weight decay, one clipped step on a subset of parameters, and one host read for a step's metrics."""

from __future__ import annotations

import torch
from torch import nn


def decoupled_adam(params, lr: float, eps: float, weight_decay: float, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam with the authors' (DreamerV2's) per-step decoupled decay w <- (1 - wd) w. AdamW decays by lr * wd,
    so it is given wd / lr. `capturable`: step counts live on the device, so that a CUDA graph can replay the step."""
    return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay / lr, fused=True,
                             capturable=capturable)


def clipped_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float) -> torch.Tensor:
    """Backward into `params` only (a shared graph may also reach other modules), clip, step; returns the
    gradient norm before clipping, as a tensor (an update that reads nothing back to the host stays graph-safe)."""
    params = list(params)
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    norm = nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return norm


def to_floats(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Tensor (and float) metrics -> floats, with one read back to the host for all the tensors."""
    tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    values = dict(zip(tensors, torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist(),
                      strict=True))
    return {k: values.get(k, v) for k, v in metrics.items()}
