"""The RSSM's latent state outside a single update: the acting policy's belief filter (`LatentPolicy`) and the
posterior state carried from one training batch to the next (`CarriedState`, `wm.carry_state`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmil.models.actor_critic import Actor
from cmil.models.world_model import STATE_KEYS, WorldModel


class CarriedState(nn.Module):
    """The last posterior state of the previous training batch (`wm.carry_state`), held in buffers so that
    a resumed run starts its next batch from the same state as an uninterrupted one."""

    def __init__(self, rows: int, deter: int, stoch: int):
        super().__init__()
        self.register_buffer("valid", torch.zeros((), dtype=torch.bool))
        for key, size in zip(STATE_KEYS, (deter, stoch, stoch, stoch), strict=True):
            self.register_buffer(key, torch.zeros(rows, size))

    def get(self) -> dict[str, torch.Tensor]:
        """The carried state; before the first `set` the buffers hold zeros, the state a window starts from
        without one, so no host read of `valid` is needed (CUDA graphs). `valid` stays in the checkpoints."""
        return {k: getattr(self, k) for k in STATE_KEYS}

    @torch.no_grad()
    def set(self, state: dict[str, torch.Tensor]) -> None:
        for key in STATE_KEYS:
            getattr(self, key).copy_(state[key])
        self.valid.fill_(True)


class LatentPolicy:
    """Acts in the environment: filters the belief with the posterior, then queries the actor."""

    def __init__(self, wm: WorldModel, actor: Actor, action_dim: int, device: torch.device, explore_noise: float = 0.0):
        self.wm, self.actor, self.action_dim, self.device = wm, actor, action_dim, device
        self.explore_noise = explore_noise  # agent.explore_noise: extra std on sampled (not deterministic) actions
        self.reset()

    def reset(self) -> None:
        self.state = self.wm.initial(1)
        self.prev_action = torch.zeros(1, self.action_dim, device=self.device)
        self.first = True

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        image = torch.as_tensor(obs, device=self.device)[None, None]
        embed = self.wm.encode(image)[:, 0]
        is_first = torch.tensor([self.first], device=self.device)
        self.state, _ = self.wm.obs_step(self.state, self.prev_action, embed, is_first)
        dist = self.actor(self.wm.agent_feat(self.state))
        action = dist.mode() if deterministic else dist.rsample()
        if self.explore_noise and not deterministic:
            action = (action + self.explore_noise * torch.randn_like(action)).clamp(-1, 1)
        self.prev_action = action
        self.first = False
        return action[0].cpu().numpy()
