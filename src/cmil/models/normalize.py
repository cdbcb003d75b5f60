"""Running statistics that rescale CMIL's learning signals (options of the CPU preset).

Each is an `nn.Module` whose state lives in buffers, so it is checkpointed with the method and a
resumed run continues with the same statistics. All updates are exponential moving averages: the
quantities they track (latent features, disagreement, returns) drift as the world model trains.
"""

from __future__ import annotations

import torch
from torch import nn


def _first_sets(count: torch.Tensor, weight: float) -> torch.Tensor:
    """The EMA's weight on a new value: 1 for the first (it sets the statistic instead of pulling the
    initial zeros towards it), else `weight`. A tensor, so that no update reads `count` back to the host
    (CUDA graphs, `Config.cuda_graph`); lerp with weight 1 returns the new value exactly."""
    return torch.where(count == 0, 1.0, weight).to(torch.float32)


class RunningMeanStd(nn.Module):
    """Per-dimension EMA of mean and variance; `normalize(x) = (x - mean) / std`. With `freeze_after` > 0 the
    statistics stop moving after that many updates (0: they follow for ever)."""

    def __init__(self, shape: int | tuple[int, ...] = (), decay: float = 0.99, eps: float = 1e-4,
                 freeze_after: int = 0):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.decay, self.eps, self.freeze_after = decay, eps, freeze_after
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """x: (..., *shape); the leading dims are samples."""
        flat = x.detach().reshape(-1, *self.mean.shape).float()
        mean, var = flat.mean(0), flat.var(0, correction=0)
        weight = _first_sets(self.count, 1 - self.decay)
        if self.freeze_after:  # a tensor condition, no host read (CUDA graphs); lerp with weight 0 keeps the value
            weight = torch.where(self.count >= self.freeze_after, 0.0, weight)
        self.mean.lerp_(mean, weight)
        self.var.lerp_(var, weight)
        self.count += 1

    @property
    def std(self) -> torch.Tensor:
        return (self.var + self.eps).sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ReturnScale(nn.Module):
    """DreamerV3's return normalisation: S = EMA of the 95th minus the 5th percentile of returns.

    Dividing the actor's return objective by max(1, S) keeps its gradient O(1) whatever the reward
    scale, so that `beta` sets a real ratio between the RL and BC parts of the actor loss; returns
    smaller than 1 in range are not scaled up (that would amplify noise)."""

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95):
        super().__init__()
        self.decay, self.low, self.high = decay, low, high
        self.register_buffer("range", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # The quantiles' levels live on the module's device (a host-built tensor would be a copy per update).
        self.register_buffer("levels", torch.tensor([low, high]), persistent=False)

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        q = torch.quantile(returns.detach().float().flatten(), self.levels)
        self.range.lerp_(q[1] - q[0], _first_sets(self.count, 1 - self.decay))
        self.count += 1

    @property
    def scale(self) -> torch.Tensor:
        return self.range.clamp_min(1.0)
