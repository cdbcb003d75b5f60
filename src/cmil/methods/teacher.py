"""The pixel BC teacher of CMIL's anchor (agent.anchor_target 'bc'; issue 9, rounds 24-25 of docs/results.md).

A departure from the paper, off there and in the authors' code: a `bc` policy trained on the demos at the start of
pretraining (or loaded from a `bc` run, Config.anchor_from) labels the policy's own online frames with its action,
as in DAgger, and the online actor is pulled towards those labels.
"""

from __future__ import annotations

import contextlib

import torch

from cmil.config import Config
from cmil.data.replay import SequenceReplay
from cmil.methods.bc import BC, PixelPolicy, PolicyEnsemble

LABEL_KEY = "teacher_action"  # the teacher's action on each frame, kept beside the episode in the online replay


class PixelTeacher:
    """Trains once on the demos (unless `trained`, i.e. loaded by the launcher), then labels frames, frozen.

    It draws from its own random stream, seeded by the run's seed and carried from its initialisation into its
    training, so that it is bit for bit the `bc` run of the same seed and the rest of the run draws what it would
    without it."""

    def __init__(self, cfg: Config, action_dim: int, device: torch.device, trained: bool):
        self.device, self.seed = device, cfg.seed
        self._rng_state: tuple[torch.Tensor, torch.Tensor | None] | None = None
        with self._rng():
            bc = BC(cfg, action_dim, device)
        self._bc: BC | None = None if trained else bc   # dropped once trained: its optimiser is not needed again
        self.net: PixelPolicy | PolicyEnsemble = bc.net.requires_grad_(False).eval()  # bc.members > 1: an ensemble

    @property
    def steps(self) -> int:
        """Progress steps its training still takes (the `bc` method's steps, or none when loaded)."""
        return self._bc.cfg.bc.steps if self._bc is not None else 0

    @contextlib.contextmanager
    def _rng(self):
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            if self._rng_state is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng_state[0])
                if cuda:
                    torch.cuda.set_rng_state(self._rng_state[1], self.device)
            yield
            self._rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)

    def pretrain(self, expert: SequenceReplay, progress) -> dict[str, float]:
        """The `bc` method's training on the demos; {} when there is nothing to train."""
        if self._bc is None:
            return {}
        self.net.requires_grad_(True)
        with self._rng():
            loss = self._bc.pretrain(expert, progress)["train/bc_loss"]
        self.net.requires_grad_(False).eval()
        self._bc = None
        return {"teacher_bc_loss": loss}

    @torch.no_grad()
    def label_episode(self, ep: dict) -> dict:
        """The episode with the teacher's action on every frame (LABEL_KEY), in chunks of 512 frames."""
        image = torch.as_tensor(ep["image"], device=self.device)
        action = torch.cat([self.net(chunk) for chunk in image.split(512)]).float().cpu().numpy()
        return {**ep, LABEL_KEY: action}
