"""`cmil model`: fit the world model on a demo directory and show what it learnt.

    cmil model --demos /work/shared/data/paper-kitchen-demos --updates 2000 --out out/wm-kitchen

Writes to --out:
    metrics.jsonl            one JSON object per log step (x-axis `update`): training losses averaged
                             since the last row, and open-loop prediction errors on fixed windows
    events.*                 the same scalars for TensorBoard
    world_model.safetensors  final weights;  config.json: the world-model config and the arguments
    open_loop.png            real frames (top) and the model's frames (below) for a few held-out windows:
                             `--context` frames filtered by the posterior, then `--horizon` frames
                             predicted by the prior from the recorded actions alone (after the red line)
    open_loop.mp4            the same windows as a video, real | predicted side by side

Demo directories in cmil's episode format load directly; DreamerV2 files (the paper's demos, with
128x128 frames or `discount` instead of the episode flags) are converted in memory on the fly.
Open-loop errors are mean squared errors per pixel on [0, 1] intensities, predicted with latent means
(no sampling) and a fixed seed, so that successive rows are comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from cmil.config_io import DEVICES
from cmil.config_sections import WorldModelConfig
from cmil.data.episodes import Episode, EpisodeError, episode_paths, load_episodes
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.errors import OutputExistsError, UsageError
from cmil.models.world_model import WorldModel, image_to_uint8
from cmil.precision import PRECISIONS, resolve_precision, use_precision
from cmil.presets import PRESETS

OUTPUT_FILES = ("metrics.jsonl", "world_model.safetensors", "open_loop.png")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `model` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser("model", help="fit the world model on demos; log losses and open-loop predictions",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demos", required=True, help="directory of episodes (cmil or DreamerV2 .npz)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--updates", type=int, default=2000, help="world-model updates")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="sizes and batch shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the preset's)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the preset's)")
    p.add_argument("--holdout", type=int, default=1, help="episodes (last by name) kept out of training")
    p.add_argument("--context", type=int, default=5, help="frames observed before the open-loop rollout")
    p.add_argument("--horizon", type=int, default=15, help="open-loop prediction steps")
    p.add_argument("--log-every", type=int, default=100, help="updates between metric rows")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 | bf16 | auto (bf16 where the hardware runs it natively; see cmil.precision)")
    p.add_argument("--force", action="store_true", help="overwrite the outputs of an earlier fit in --out")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Entry point of `cmil model`; prints the last metric row and the output paths."""
    minimums = {"updates": 1, "batch_size": 1, "seq_len": 1, "holdout": 0, "context": 1, "horizon": 1,
                "log_every": 1, "threads": 0, "seed": 0}
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if args.device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {args.device!r}")
    cfg = PRESETS[args.preset]
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    row = fit(args.demos, args.out, args.updates, cfg.wm, args.batch_size or cfg.batch_size,
              args.seq_len or cfg.seq_len, seed=args.seed, holdout=args.holdout, context=args.context,
              horizon=args.horizon, log_every=args.log_every, device=device, force=args.force,
              precision=args.precision, extra_config={"preset": args.preset})
    print(json.dumps(row))
    out = Path(args.out)
    print(f"weights: {out / 'world_model.safetensors'}  open loop: {out / 'open_loop.png'}, {out / 'open_loop.mp4'}")
    return 0


# --- data ---------------------------------------------------------------------------------------
def load_demos(directory: str | Path, image_size: int = 64) -> tuple[list[Episode], str]:
    """Episodes of a cmil demo directory, or DreamerV2 files converted on the fly; returns (episodes, format)."""
    try:
        return load_episodes(directory, image_size), "cmil"
    except EpisodeError as first_error:
        from cmil.data.dreamer_import import convert_dreamer_episode

        episodes = []
        for path in episode_paths(directory):
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
            try:
                episodes.append(convert_dreamer_episode(raw, str(path), image_size))
            except EpisodeError:
                raise first_error from None
        return episodes, "dreamer"


def fixed_windows(episodes: list[Episode], length: int, per_episode: int) -> dict[str, np.ndarray]:
    """Evenly spaced length-`length` windows (inside each episode) as one batch of numpy arrays."""
    rows = []
    for ep in episodes:
        n = len(ep["action"])
        if n < length:
            continue
        for start in ((np.arange(per_episode) + 0.5) / per_episode * (n - length)).round().astype(int):
            rows.append({k: ep[k][start:start + length] for k in ("image", "action", "is_first")})
    if not rows:
        raise ValueError(f"no episode has {length} frames for an open-loop window")
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["is_first"] = np.zeros_like(batch["is_first"])  # each window starts from a zero state anyway
    batch["is_first"][:, 0] = True
    return batch


# --- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def open_loop_errors(wm: WorldModel, batch: dict[str, torch.Tensor], context: int,
                     seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Per-step MSE (T,) of the model's frames vs the real ones, and the predicted uint8 frames."""
    was_training = wm.training
    wm.eval()
    with torch.random.fork_rng(devices=[wm.device] if wm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        pred = wm.open_loop(batch, context, sample=False)
    wm.train(was_training)
    target = batch["image"].float().div(255.0)
    pred01 = (pred + 0.5).clamp(0.0, 1.0).movedim(-3, -1)
    mse = (pred01 - target).square().mean(dim=(0, 2, 3, 4))
    return mse.cpu().numpy(), image_to_uint8(pred)


def eval_metrics(wm: WorldModel, batches: dict[str, dict[str, torch.Tensor]], context: int) -> dict[str, float]:
    out = {}
    for name, batch in batches.items():
        mse, _ = open_loop_errors(wm, batch, context)
        out[f"eval/{name}_recon_mse"] = float(mse[:context].mean())
        out[f"eval/{name}_open_loop_mse"] = float(mse[context:].mean())
        out[f"eval/{name}_open_loop_mse_last"] = float(mse[-1])
    return out


def save_open_loop_media(wm: WorldModel, batch: dict[str, torch.Tensor], context: int, out: Path,
                         rows: int = 3) -> tuple[Path, Path]:
    """open_loop.png (real over predicted, time left to right) and open_loop.mp4 (real | predicted)."""
    import imageio.v3 as iio

    batch = {k: v[:rows] for k, v in batch.items()}
    _, pred = open_loop_errors(wm, batch, context)
    real, pred = batch["image"].cpu().numpy(), pred.cpu().numpy()  # (R, T, H, W, 3)
    R, T, H, W, _ = real.shape
    grid = np.full((R * (2 * H + 4), T * W + 2, 3), 255, np.uint8)
    for r in range(R):
        y = r * (2 * H + 4)
        for t in range(T):
            x = t * W + (2 if t >= context else 0)
            grid[y:y + H, x:x + W] = real[r, t]
            grid[y + H:y + 2 * H, x:x + W] = pred[r, t]
    grid[:, context * W:context * W + 2] = (220, 30, 30)  # where the open-loop prediction starts
    png = out / "open_loop.png"
    iio.imwrite(png, grid)
    frames = np.concatenate([real, pred], axis=3)  # (R, T, H, 2W, 3): real | predicted
    frames = np.concatenate(list(frames), axis=1)  # (T, R*H, 2W, 3)
    frames = frames.repeat(3, axis=1).repeat(3, axis=2)
    mp4 = out / "open_loop.mp4"
    iio.imwrite(mp4, frames, fps=4, codec="libx264", macro_block_size=1)
    return png, mp4


# --- fitting ------------------------------------------------------------------------------------
def fit(demos: str | Path, out: str | Path, updates: int, wm_cfg: WorldModelConfig, batch_size: int,
        seq_len: int, seed: int = 0, holdout: int = 1, context: int = 5, horizon: int = 15,
        log_every: int = 100, device: str = "cpu", force: bool = False, tensorboard: bool = True,
        progress: bool = True, precision: str = "fp32", extra_config: dict | None = None) -> dict[str, float]:
    """Fit a world model on the demos in `demos`, logging to `out`; returns the last metric row.

    `precision` applies to the training updates (the evaluations run in fp32); config.json records
    the resolved one."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    if not force and any((out / f).exists() for f in OUTPUT_FILES):
        raise OutputExistsError(f"{out}: holds an earlier fit; pass --force to overwrite it")
    torch.manual_seed(seed)
    episodes, fmt = load_demos(demos)  # every input is checked before `out` is touched
    holdout = min(holdout, len(episodes) - 1)
    train_eps, test_eps = episodes[:len(episodes) - holdout], episodes[len(episodes) - holdout:]
    window = context + horizon
    try:
        eval_sets = {"train": fixed_windows(train_eps, window, 1)}
        if test_eps:
            eval_sets["test"] = fixed_windows(test_eps, window, 8)
    except ValueError as exc:
        raise UsageError(f"--context + --horizon: {exc}") from None
    replay = SequenceReplay(seq_len, seed=seed)
    for ep in train_eps:
        replay.add_episode(ep)
    action_dim = episodes[0]["action"].shape[1]
    wm = WorldModel(action_dim, wm_cfg, episodes[0]["image"].shape[1]).to(device)
    wm.make_optimizer()
    precision = resolve_precision(precision, wm.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    eval_batches = {k: batch_to_torch(v, device) for k, v in eval_sets.items()}
    config = {"world_model": dataclasses.asdict(wm_cfg), "demos": str(demos), "demo_format": fmt,
              "episodes_train": len(train_eps), "episodes_test": len(test_eps), "updates": updates,
              "batch_size": batch_size, "seq_len": seq_len, "seed": seed, "context": context,
              "horizon": horizon, "device": device, "precision": precision, "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in wm.parameters()), **(extra_config or {})}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out))

    def log(update: int, metrics: dict[str, float]) -> dict[str, float]:
        row = {"update": update, "wall_time": round(time.time() - start, 2),
               **{k: v for k, v in metrics.items() if math.isfinite(v)}}
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, update)
        return row

    start = time.time()
    row = log(0, eval_metrics(wm, eval_batches, context))
    sums: dict[str, float] = {}
    count, interval_start = 0, time.time()
    bar = tqdm(range(1, updates + 1), desc="world model", disable=not progress, dynamic_ncols=True)
    for update in bar:
        with use_precision(precision):
            _, metrics = wm.train_step(batch_to_torch(replay.sample(batch_size), device))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if update % log_every == 0 or update == updates:
            train = {k: v / count for k, v in sums.items()}
            train["time/updates_per_s"] = count / (time.time() - interval_start)
            row = log(update, {**train, **eval_metrics(wm, eval_batches, context)})
            bar.set_postfix(recon=f"{train['model/recon']:.1f}", kl=f"{train['model/kl_raw']:.2f}",
                            ol=f"{row.get('eval/test_open_loop_mse', row['eval/train_open_loop_mse']):.4f}")
            sums, count, interval_start = {}, 0, time.time()
    bar.close()
    if writer is not None:
        writer.close()
    save_file({k: v.detach().contiguous().cpu() for k, v in wm.state_dict().items()},
              str(out / "world_model.safetensors"))
    save_open_loop_media(wm, eval_batches.get("test", eval_batches["train"]), context, out)
    return row
