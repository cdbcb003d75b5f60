"""Behaviour cloning from pixels: conv encoder + MLP, regressing the expert's actions.

Pairs are (image[t], action[t+1]) of every demo step (the stored `action[t+1]` is the action taken
at frame t). The policy outputs tanh(mean); the loss is the mean squared error to the expert's
action. Images get random-shift augmentation, which matters with only ~10 demos. With `bc.members` > 1
several independently initialised policies train side by side, each on its own batches, and act with their
mean action (their errors away from the demos are partly independent: docs/results.md, rounds 33 and 35).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmil.config import Config
from cmil.data.replay import SequenceReplay, demo_pairs
from cmil.methods.base import Method, StatelessPolicy, register
from cmil.models.networks import ConvEncoder, KeypointEncoder, mlp, preprocess_image, random_shift


class PixelPolicy(nn.Module):
    """image uint8 (..., H, W, 3) -> action in [-1, 1]."""

    def __init__(self, action_dim: int, image_size: int = 64, depth: int = 32, layers: int = 2, units: int = 256,
                 encoder: str = "conv", keypoints: int = 32):
        super().__init__()
        # BCConfig.encoder: `encoder` is DreamerV2's conv encoder ('conv', 'both') or the spatial-softmax one
        # ('keypoints'); 'both' adds the keypoints beside the conv features.
        self.encoder = (KeypointEncoder(depth, image_size, keypoints) if encoder == "keypoints"
                        else ConvEncoder(depth, image_size))
        self.keypoint_encoder = KeypointEncoder(depth, image_size, keypoints) if encoder == "both" else None
        extra = self.keypoint_encoder.out_dim if self.keypoint_encoder is not None else 0
        self.head = mlp(self.encoder.out_dim + extra, action_dim, layers, units)

    def _encode(self, image: torch.Tensor, augment: bool) -> torch.Tensor:
        x = preprocess_image(random_shift(image) if augment else image)
        feat = self.encoder(x)
        if self.keypoint_encoder is not None:
            feat = torch.cat([feat, self.keypoint_encoder(x)], -1)
        return feat

    def forward(self, image: torch.Tensor, augment: bool = False) -> torch.Tensor:
        return torch.tanh(self.head(self._encode(image, augment)))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """The head's last hidden layer (..., units): what the policy's action is a linear readout of."""
        return self.head[:-1](self._encode(image, False))


class PolicyEnsemble(nn.Module):
    """Independently initialised pixel policies acting as one: image -> the mean of their actions (bc.members)."""

    def __init__(self, members: list[PixelPolicy]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, image: torch.Tensor, augment: bool = False) -> torch.Tensor:
        return torch.stack([member(image, augment) for member in self.members]).mean(0)


def pixel_policy(cfg: Config, action_dim: int) -> PixelPolicy | PolicyEnsemble:
    """The `bc` method's network for cfg.bc: one pixel policy, or an ensemble of bc.members of them."""
    def member() -> PixelPolicy:
        return PixelPolicy(action_dim, cfg.image_size, cfg.bc.cnn_depth, units=cfg.bc.units, encoder=cfg.bc.encoder,
                           keypoints=cfg.bc.keypoints)
    # One member keeps the plain network (and its checkpoint keys, which encoder_from reads).
    return member() if cfg.bc.members == 1 else PolicyEnsemble([member() for _ in range(cfg.bc.members)])


@register("bc")
class BC(Method):
    online = False
    uses_seed_episodes = False

    def __init__(self, cfg: Config, action_dim: int, device: torch.device):
        super().__init__(cfg, action_dim, device)
        self.net = pixel_policy(cfg, action_dim).to(device)
        # One Adam for every member: its moments are per parameter, so the members still train independently.
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.bc.lr, fused=True)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        # Each member draws its own batches; the first member's stream is the single policy's.
        self.rngs = [np.random.default_rng(cfg.seed)] + [np.random.default_rng([cfg.seed, k])
                                                         for k in range(1, cfg.bc.members)]

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.opt}

    def policy(self) -> StatelessPolicy:
        return StatelessPolicy(lambda image, _deterministic: self.net(image), self.device)

    def pretrain_steps(self) -> int:
        return self.cfg.bc.steps

    def pretrain(self, expert: SequenceReplay, progress) -> dict[str, float]:
        images, actions = demo_pairs(expert)
        metrics: dict[str, float] = {}
        members = self.net.members if isinstance(self.net, PolicyEnsemble) else [self.net]
        self.net.train()
        while self.updates < self.cfg.bc.steps:
            losses = []
            for member, rng in zip(members, self.rngs, strict=True):
                idx = rng.integers(0, len(images), self.cfg.bc.batch)
                image = torch.as_tensor(images[idx], device=self.device)
                target = torch.as_tensor(actions[idx], device=self.device)
                losses.append((member(image, augment=self.cfg.bc.augment) - target).pow(2).sum(-1).mean())
            loss = torch.stack(losses).sum()  # a sum: each member's gradient is its own loss's
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.updates += 1
            metrics = {"train/bc_loss": loss.item() / len(losses)}  # the members' mean
            progress(1)
        self.net.eval()
        return metrics
