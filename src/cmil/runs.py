"""Run directories, metric logging and atomic checkpoints.

Layout of a run directory::

    runs/{task}__{method}__seed{N}__{timestamp}/
        config.yaml        resolved config (reloaded on resume)
        metrics.jsonl      one JSON object per log step; x-axis `env_step`
        events.*           TensorBoard events (same scalars)
        checkpoints/       step_{N}.pt (torch.load(weights_only=True)-safe), the last few kept
        episodes/          the online episodes, in the episode format (the replay is rebuilt from them)
        videos/            evaluation mp4s
        model.safetensors  final weights
        final.json         final evaluation; its presence marks the run as finished
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmil.config import Config


def default_run_dir(cfg: Config, root: str = "runs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.task}__{cfg.method}__seed{cfg.seed}__{stamp}"


def atomic_write_bytes(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


class MetricLogger:
    """Appends metrics to metrics.jsonl and TensorBoard; keeps the latest value of each for display."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.start = time.time()
        self.latest: dict[str, float] = {}
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir))

    def log(self, env_step: int, metrics: dict[str, Any]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.latest.update(clean)
        row = {"env_step": int(env_step), "wall_time": round(time.time() - self.start, 2), **clean}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, env_step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- random-number state -------------------------------------------------------------------

def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(np_rng.bit_generator.state)}


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = json.loads(state["numpy"])


# --- checkpoints ---------------------------------------------------------------------------

class Checkpointer:
    """Saves {modules, optimizers, counters, rng} atomically; keeps the last `keep` files."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.dir = run_dir / "checkpoints"
        self.keep = keep

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             counters: dict[str, int], rng: dict[str, Any]) -> Path:
        payload = {
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "counters": dict(counters),
            "rng": rng,
        }
        path = self.dir / f"step_{step:09d}.pt"
        atomic_write_bytes(path, lambda f: torch.save(payload, f))
        for old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def list(self) -> list[Path]:
        return sorted(self.dir.glob("step_*.pt")) if self.dir.exists() else []

    def latest(self) -> Path | None:
        paths = self.list()
        return paths[-1] if paths else None

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)


def restore(payload: dict[str, Any], modules: dict[str, torch.nn.Module],
            optimizers: dict[str, torch.optim.Optimizer] | None = None) -> None:
    """Load module (and optimiser) states; a missing or extra name is an error, not a silent skip."""
    missing = set(modules) - set(payload["modules"])
    if missing:
        raise KeyError(f"checkpoint lacks modules {sorted(missing)}")
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    for name, opt in (optimizers or {}).items():
        opt.load_state_dict(payload["optimizers"][name])


def export_safetensors(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """All modules' weights in one safetensors file, keys `{module}.{param}`."""
    from safetensors.torch import save

    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    atomic_write_bytes(path, lambda f: f.write(save(tensors)))
