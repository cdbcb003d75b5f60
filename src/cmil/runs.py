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
        eval/              `cmil eval` results and videos (the only place `cmil eval` writes)
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmil.config import Config
from cmil.fileio import atomic_write_bytes


def default_run_dir(cfg: Config, root: str = "runs") -> Path:
    from cmil.envs import task_slug

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{task_slug(cfg.task)}__{cfg.method}__seed{cfg.seed}__{stamp}"


def source_commit(directory: Path | None = None) -> str:
    """Short git commit of the checkout this `cmil` is imported from, or of the one holding `directory`
    ('unknown' outside a git checkout), so that benchmark results name the code that produced them whatever
    the working directory; '-dirty' is appended when tracked files differ from that commit (the results then
    come from code no commit holds)."""
    cwd = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=cwd).stdout.strip()
        clean = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True, cwd=cwd).returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit if clean else f"{commit}-dirty"


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


class MetricLogger:
    """Appends metrics to metrics.jsonl and TensorBoard; keeps the latest value of each for display.

    `keep_rows` (the row count a checkpoint recorded) drops the rows logged after that checkpoint,
    so that a resumed run does not log them twice; a half-written last line goes with them."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_rows: int = 0):
        self.path = run_dir / "metrics.jsonl"
        self.start = time.time()
        self.latest: dict[str, float] = {}
        self.rows = truncate_lines(self.path, keep_rows)
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
        self.rows += 1
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, env_step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_lines(path: Path, keep: int) -> int:
    """Cut the file at `path` after its first `keep` complete lines (if it is longer); returns the count kept."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    end, kept = 0, 0
    while kept < keep:
        nl = data.find(b"\n", end)
        if nl < 0:
            break
        end, kept = nl + 1, kept + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return kept


# Temporary files that an interrupted atomic write can leave behind, by folder of the run directory
# (fileio.atomic_write_bytes); none of them matches a glob that reads data.
STALE_TEMP_PATTERNS = {".": (".config.yaml.*", ".final.json.*", ".model.safetensors.*"),
                       "checkpoints": (".step_*",), "episodes": (".*.npz.*", "tmp*.npz")}  # tmp*.npz: older versions


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the leftovers of interrupted writes (only ever called before the run starts writing)."""
    removed = []
    for folder, patterns in STALE_TEMP_PATTERNS.items():
        for pattern in patterns:
            for path in (run_dir / folder).glob(pattern):
                if path.is_file():
                    path.unlink()
                    removed.append(path)
    return removed


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
             counters: dict[str, int], rng: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        payload = {
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "counters": dict(counters),
            "rng": rng,
            **(extra or {}),
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

    def load_latest(self, warn, quarantine: bool = True) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint and its payload (None if there is none).

        A damaged newer one (truncated, corrupt) is skipped with one `warn(line)`; with `quarantine`
        it is also renamed `*.corrupt`, out of the way of later saves and pruning (a write: only once
        the run is validated)."""
        for path in reversed(self.list()):
            try:
                payload = self.load(path)
                if not {"modules", "optimizers", "counters", "rng"} <= set(payload):
                    raise KeyError("incomplete payload")
                return path, payload
            except Exception as exc:  # a damaged zip or pickle surfaces as many exception types
                note = ""
                if quarantine:
                    path.rename(path.with_name(path.name + ".corrupt"))
                    note = f" (renamed to {path.name}.corrupt)"
                warn(f"warning: checkpoint {path} is unreadable ({type(exc).__name__}){note}; using an older one")
        return None


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
