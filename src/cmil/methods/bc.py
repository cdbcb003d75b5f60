"""Behaviour cloning from pixels: conv encoder + MLP, regressing the expert's actions.

Pairs are (image[t], action[t+1]) of every demo step (the stored `action[t+1]` is the action taken
at frame t). The policy outputs tanh(mean); the loss is the mean squared error to the expert's
action. Images get random-shift augmentation, which matters with only ~10 demos.
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


@register("bc")
class BC(Method):
    online = False
    uses_seed_episodes = False

    def __init__(self, cfg: Config, action_dim: int, device: torch.device):
        super().__init__(cfg, action_dim, device)
        self.net = PixelPolicy(action_dim, cfg.image_size, cfg.bc.cnn_depth, units=cfg.bc.units,
                               encoder=cfg.bc.encoder, keypoints=cfg.bc.keypoints).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.bc.lr, fused=True)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self.rng = np.random.default_rng(cfg.seed)

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
        self.net.train()
        while self.updates < self.cfg.bc.steps:
            idx = self.rng.integers(0, len(images), self.cfg.bc.batch)
            image = torch.as_tensor(images[idx], device=self.device)
            target = torch.as_tensor(actions[idx], device=self.device)
            loss = (self.net(image, augment=self.cfg.bc.augment) - target).pow(2).sum(-1).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.updates += 1
            metrics = {"train/bc_loss": loss.item()}
            progress(1)
        self.net.eval()
        return metrics
