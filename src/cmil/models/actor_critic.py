"""Actor, twin Q critics and the state-action discriminator, all on latent features."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from cmil.models.networks import mlp

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / _SQRT2))


def _std_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class TruncNormal:
    """Normal(mean, std) truncated to [-1, 1], per action dimension (DreamerV2's actor distribution).

    `rsample` is reparameterised through the inverse CDF, so gradients reach mean and std.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, low: float = -1.0, high: float = 1.0):
        self.mean, self.std = mean, std
        self.alpha = (low - mean) / std
        self.beta = (high - mean) / std
        self.cdf_a = _std_normal_cdf(self.alpha)
        self.z = (_std_normal_cdf(self.beta) - self.cdf_a).clamp_min(1e-6)
        self.low, self.high = low, high

    def rsample(self) -> torch.Tensor:
        u = torch.rand_like(self.mean)
        p = (self.cdf_a + u * self.z).clamp(1e-6, 1 - 1e-6)
        x = self.mean + self.std * _SQRT2 * torch.erfinv(2 * p - 1)
        return x.clamp(self.low + 1e-6, self.high - 1e-6)

    def mode(self) -> torch.Tensor:
        return self.mean.clamp(self.low, self.high)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Summed over action dimensions."""
        xi = (x - self.mean) / self.std
        logp = -0.5 * xi * xi - _LOG_SQRT_2PI_E + 0.5 - torch.log(self.std) - torch.log(self.z)
        return logp.sum(-1)

    def entropy(self) -> torch.Tensor:
        """Closed form, summed over action dimensions."""
        a, b = self.alpha, self.beta
        ent = _LOG_SQRT_2PI_E + torch.log(self.std * self.z) + (a * _std_normal_pdf(a) - b * _std_normal_pdf(b)) / (2 * self.z)
        return ent.sum(-1)


class Actor(nn.Module):
    """pi(a | feat): MLP -> truncated normal with mean tanh(.) and std in [min_std, 1 + min_std].

    With `heads` > 1 the actor is an ensemble of that many independently initialised MLPs whose means and
    stds are averaged into one distribution (what acts, imagines and gets the RL gradient); `with_head_means`
    also returns each head's mean, so that BC can fit every head on its own and the average is an ensemble
    of BC policies (agent.actor_heads)."""

    def __init__(self, feat_dim: int, action_dim: int, layers: int, units: int, min_std: float = 0.1,
                 heads: int = 1):
        super().__init__()
        if heads < 1:
            raise ValueError(f"an actor needs at least one head, got heads={heads}")
        # One head keeps the plain MLP (and its checkpoint keys, `net.*`).
        self.net = (mlp(feat_dim, 2 * action_dim, layers, units) if heads == 1 else
                    nn.ModuleList(mlp(feat_dim, 2 * action_dim, layers, units) for _ in range(heads)))
        self.heads, self.min_std = heads, min_std

    def with_head_means(self, feat: torch.Tensor) -> tuple[TruncNormal, torch.Tensor]:
        """The policy's distribution and every head's mean, stacked first: (heads, ..., action_dim)."""
        out = self.net(feat)[None] if self.heads == 1 else torch.stack([net(feat) for net in self.net])
        mean, std = out.chunk(2, -1)
        mean, std = torch.tanh(mean), torch.sigmoid(std + 2.0) + self.min_std
        return TruncNormal(mean.mean(0), std.mean(0)), mean

    def forward(self, feat: torch.Tensor) -> TruncNormal:
        return self.with_head_means(feat)[0]


class TwinQ(nn.Module):
    """Two Q(feat, action) critics evaluated together, with frozen target copies."""

    def __init__(self, feat_dim: int, action_dim: int, layers: int, units: int):
        super().__init__()
        self.q = nn.ModuleList([mlp(feat_dim + action_dim, 1, layers, units) for _ in range(2)])
        self.target = copy.deepcopy(self.q).requires_grad_(False)

    @staticmethod
    def _eval(nets: nn.ModuleList, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feat, action], -1)
        return torch.stack([net(x).squeeze(-1) for net in nets])  # (2, ...)

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Both critics: (2, ...)."""
        return self._eval(self.q, feat, action)

    def target_values(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Both target critics: (2, ...)."""
        return self._eval(self.target, feat, action)

    def update_target(self) -> None:
        self.target.load_state_dict(self.q.state_dict())


def gradient_penalty(disc, expert: tuple[torch.Tensor, ...], policy: tuple[torch.Tensor, ...],
                     eps: torch.Tensor | None = None, target: float = 1.0) -> torch.Tensor:
    """WGAN-GP penalty: mean over samples of (||grad_x disc(x_hat)||_2 - target)^2.

    x_hat = eps * expert + (1 - eps) * policy with eps ~ U(0, 1) per sample, shared by every input
    tensor of a sample (DAC, CMIL: feature and action); the norm runs over all inputs together.
    `create_graph=True` so the penalty trains the discriminator's weights."""
    if eps is None:
        eps = torch.rand(expert[0].shape[0], device=expert[0].device)
    mixed = []
    for e, p in zip(expert, policy, strict=True):
        w = eps.reshape(-1, *([1] * (e.dim() - 1)))
        mixed.append((w * e + (1 - w) * p).detach().requires_grad_(True))
    out = disc(*mixed)
    grads = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads)
    return (sq.add(1e-12).sqrt() - target).pow(2).mean()


class Discriminator(nn.Module):
    """D(feat, action) as a logit; Gaussian noise on the whole input regularises training (paper sec. 5)."""

    def __init__(self, feat_dim: int, action_dim: int, layers: int, units: int, noise_std: float):
        super().__init__()
        self.net = mlp(feat_dim + action_dim, 1, layers, units)
        self.noise_std = noise_std

    def forward(self, feat: torch.Tensor, action: torch.Tensor, noise: bool = False) -> torch.Tensor:
        x = torch.cat([feat, action], -1)
        if noise and self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return self.net(x).squeeze(-1)


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Stop gradients into these modules' parameters (they still pass gradients to their inputs)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def lambda_returns(reward: torch.Tensor, value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets for Q(s_t, a_t), eq. 11.

    reward: (H, N) = r(s_t, a_t) for t < H; value: (H + 1, N) = V0(s_t) = min_i Q_i(s_t, a_t).
    G_t = r_t + gamma * ((1 - lam) * V0(s_{t+1}) + lam * G_{t+1}), with G_H = V0(s_H).
    """
    horizon = reward.shape[0]
    out = []
    nxt = value[horizon]
    for t in reversed(range(horizon)):
        nxt = reward[t] + gamma * ((1 - lam) * value[t + 1] + lam * nxt)
        out.append(nxt)
    return torch.stack(out[::-1])
