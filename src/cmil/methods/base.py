"""What every learning method provides to the shared training loop (`cmil.train`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from cmil.config import Config
from cmil.data.replay import SequenceReplay


class Policy(Protocol):
    """A stateful acting policy (recurrent methods keep a belief between steps)."""

    def reset(self) -> None:
        """Start of an episode."""

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Action in [-1, 1] for the uint8 image `obs`."""


class StatelessPolicy:
    """A policy that maps each image to an action on its own, with no memory between steps.

    `act_fn(image uint8 (1, H, W, 3), deterministic) -> action (1, A)` runs without gradients."""

    def __init__(self, act_fn, device: torch.device):
        self.act_fn, self.device = act_fn, device

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        image = torch.as_tensor(obs, device=self.device)[None]
        return self.act_fn(image, deterministic)[0].cpu().numpy()


class Method:
    """Base class: networks, optimisers and update rules of one method.

    The loop calls `pretrain` once (offline, demos only), then alternates environment steps with
    `update` calls. Methods that learn offline only (BC) set `online = False`.
    """

    online: bool = True
    uses_seed_episodes: bool = True

    def __init__(self, cfg: Config, action_dim: int, device: torch.device):
        self.cfg = cfg
        self.action_dim = action_dim
        self.device = device
        self.updates = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every network whose weights make up the method (checkpointed and exported)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def policy(self) -> Policy:
        raise NotImplementedError

    def pretrain(self, expert: SequenceReplay, progress) -> dict[str, float]:
        """Offline training on demos before any environment step; returns its last metrics.

        `progress(n)` advances the caller's progress bar by n updates."""
        return {}

    def pretrain_steps(self) -> int:
        """How many updates `pretrain` runs (for the progress bar)."""
        return 0

    def update(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        """One update from an expert batch and a replay batch; returns scalar metrics."""
        raise NotImplementedError

    def diagnostics(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        """Extra metrics computed at evaluation time (e.g. discriminator accuracies)."""
        return {}
