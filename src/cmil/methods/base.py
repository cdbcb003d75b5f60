"""What every learning method provides to the shared training loop (`cmil.train`)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from cmil.config import Config
from cmil.data.episodes import Episode
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
    replay_keys: tuple[str, ...] = ()
    """Per-frame labels `label_episode` attaches to each online episode, which the replay keeps and samples."""
    checkpointed_attrs: tuple[str, ...] = ()
    """Attributes besides weights and optimisers that a resumed run needs (e.g. running diagnostics);
    each must hold JSON data, and a dict keeps its type (a defaultdict stays one) when restored."""

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

    def label_episode(self, ep: Episode) -> Episode:
        """The episode as the online replay stores it: with `replay_keys`' per-frame labels, computed once as it
        enters (and again when a resumed run reloads it). The episode files keep the episode as played."""
        return ep

    def reset_graphs(self) -> None:
        """Forget anything compiled or captured against the current tensors (CUDA graphs); called after a
        checkpoint's states were loaded into the method. Nothing to do for a method that captures nothing."""

    def diagnostics(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        """Extra metrics computed at evaluation time (e.g. discriminator accuracies)."""
        return {}

    def extra_state(self) -> dict[str, str]:
        """`checkpointed_attrs` as JSON strings (a checkpoint holds tensors and plain data only)."""
        return {name: json.dumps(getattr(self, name)) for name in self.checkpointed_attrs}

    def load_extra_state(self, state: dict[str, str]) -> None:
        for name in self.checkpointed_attrs:
            value = json.loads(state[name]) if name in state else None
            current = getattr(self, name)
            if isinstance(current, dict):
                current.clear()
                current.update(value or {})
            elif value is not None:
                setattr(self, name, value)


# --- the registry: a method module registers its class; nothing else names it ----------------------
METHODS: dict[str, type[Method]] = {}


def register(*names: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: `@register("cmil", "vmail")` makes `cfg.method` of those names build the class."""

    def decorate(cls: type[Method]) -> type[Method]:
        for name in names:
            METHODS[name] = cls
        return cls

    return decorate


def method_classes() -> dict[str, type[Method]]:
    """Every method in the `cmil.methods` package, by name (importing the modules registers them)."""
    import cmil.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base":
            importlib.import_module(f"cmil.methods.{info.name}")
    return METHODS


def make_method(cfg: Config, action_dim: int, device: torch.device) -> Method:
    classes = method_classes()
    if cfg.method not in classes:
        raise ValueError(f"unknown method {cfg.method!r} (known: {', '.join(sorted(classes))})")
    return classes[cfg.method](cfg, action_dim, device)
