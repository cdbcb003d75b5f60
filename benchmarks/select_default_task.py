"""Measurement tool for choosing the default Meta-World task (docs/default_task.md).

Subcommands (all print one JSON object per line, and append it to --out if given):
  expert  expert success rate over N seeded episodes, steps to first success, env steps/s with
          rendering, and frames/s of the renderer alone.
  bc      a quick pixel behaviour-cloning probe: a small conv net trained on K expert demos, evaluated
          on held-out seeds. It only estimates how hard pixel BC finds a task; cmil's BC lives in
          cmil.methods. Numbers from it are a difficulty signal, not a baseline to report.
  grid    save a 4x4 grid of first frames (different seeds) as a PNG.

Examples (keep runs short, the CPU is shared):
  OMP_NUM_THREADS=1 python benchmarks/select_default_task.py expert --tasks push reach --episodes 50
  OMP_NUM_THREADS=1 python benchmarks/select_default_task.py bc --task push --demos 10 --steps 3000
  python benchmarks/select_default_task.py grid --task push --png docs/img/default_task.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from cmil.envs.metaworld_env import METAWORLD_TASKS, make_metaworld_env  # noqa: E402
from cmil.experts.metaworld_expert import make_metaworld_expert  # noqa: E402
from cmil.models.networks import preprocess_image, random_shift  # noqa: E402

# Seeds: demos and expert statistics use 0.., BC evaluation uses held-out seeds from here on.
EVAL_SEED0 = 10_000


def emit(record: dict, out: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def rollout_expert(env, expert, seed: int, keep_frames: bool = False, stop_on_success: bool = False) -> dict:
    """One expert episode over the env's full fixed length (or up to its first success)."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    frames, actions, first = [obs], [], None
    t = 0
    done = False
    while not done:
        action = expert.act()
        obs, _, term, trunc, info = env.step(action)
        t += 1
        done = term or trunc
        if keep_frames:
            frames.append(obs)
            actions.append(action)
        if info["success"] and first is None:
            first = t
            done = done or stop_on_success
    return {"first_success": first, "steps": t, "frames": frames, "actions": actions}


def cmd_expert(args) -> None:
    for task in args.tasks:
        env = make_metaworld_env(task, episode_length=args.max_steps)
        expert = make_metaworld_expert(env)
        firsts, steps, t0 = [], 0, time.perf_counter()
        for i in range(args.episodes):
            r = rollout_expert(env, expert, seed=i, stop_on_success=True)
            firsts.append(r["first_success"])
            steps += r["steps"]
        sps = steps / (time.perf_counter() - t0)
        cam, data = env.unwrapped.camera, env.unwrapped.mw.data
        t0 = time.perf_counter()
        for _ in range(200):
            cam.render(data)
        fps = 200 / (time.perf_counter() - t0)
        env.close()
        ok = [f for f in firsts if f is not None]
        emit({"cmd": "expert", "task": task, "episodes": args.episodes, "max_steps": args.max_steps,
              "success": len(ok) / len(firsts),
              "steps_to_success_mean": float(np.mean(ok)) if ok else None,
              "steps_to_success_p95": float(np.percentile(ok, 95)) if ok else None,
              "steps_to_success_max": int(max(ok)) if ok else None,
              "env_steps_per_s": round(sps, 1), "render_fps": round(fps, 1)}, args.out)


def build_policy_net(action_dim: int):
    """Small conv net: 64x64x3 uint8 -> action in [-1, 1]."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 4, 2), nn.ELU(), nn.Conv2d(32, 64, 4, 2), nn.ELU(),
        nn.Conv2d(64, 64, 4, 2), nn.ELU(), nn.Conv2d(64, 64, 4, 2), nn.ELU(),  # -> 64 x 2 x 2
        nn.Flatten(), nn.Linear(256, 256), nn.ELU(), nn.Linear(256, action_dim), nn.Tanh())


def cmd_bc(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env = make_metaworld_env(args.task, episode_length=args.episode_length)
    expert = make_metaworld_expert(env)
    t0 = time.perf_counter()
    obs, act, demo_success = [], [], []
    for i in range(args.demos):
        r = rollout_expert(env, expert, seed=args.seed * 1000 + i, keep_frames=True)
        obs.append(np.stack(r["frames"][:-1]))  # the frame each action was taken at
        act.append(np.stack(r["actions"]))
        demo_success.append(r["first_success"] is not None)
    dev = torch.device(args.device)
    obs_t = torch.as_tensor(np.concatenate(obs)).to(dev)  # uint8 frames (N, H, W, 3)
    act_t = torch.as_tensor(np.concatenate(act)).to(dev)
    collect_s = time.perf_counter() - t0

    net = build_policy_net(act_t.shape[1]).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(obs_t), (args.batch,), device=dev)
        x = preprocess_image(random_shift(obs_t[idx]) if args.augment else obs_t[idx])
        loss = ((net(x) - act_t[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 1000 == 0:
            elapsed = time.perf_counter() - t0
            print(f"  step {step + 1} loss {loss.item():.4f} ({elapsed:.0f}s)", file=sys.stderr)
    train_s = time.perf_counter() - t0

    net.eval()
    t0 = time.perf_counter()
    successes, firsts = [], []
    for i in range(args.eval_episodes):
        frame, _ = env.reset(seed=EVAL_SEED0 + args.seed * 1000 + i)
        first, done, t = None, False, 0
        while not done:
            with torch.no_grad():
                action = net(preprocess_image(torch.as_tensor(frame[None]).to(dev)))[0].cpu().numpy()
            frame, _, term, trunc, info = env.step(action)
            t += 1
            done = term or trunc
            if info["success"] and first is None:
                first = t
        successes.append(first is not None)
        firsts.append(first)
    eval_s = time.perf_counter() - t0
    env.close()
    emit({"cmd": "bc", "task": args.task, "demos": args.demos, "demo_success": float(np.mean(demo_success)),
          "steps": args.steps, "batch": args.batch, "augment": args.augment, "seed": args.seed,
          "final_loss": round(loss.item(), 5), "eval_episodes": args.eval_episodes,
          "bc_success": float(np.mean(successes)),
          "collect_s": round(collect_s, 1), "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
          "threads": args.threads, "device": args.device}, args.out)


def cmd_grid(args) -> None:
    import imageio.v3 as iio

    env = make_metaworld_env(args.task, image_size=args.size)
    frames = [env.reset(seed=s)[0] for s in range(16)]
    env.close()
    rows = [np.concatenate(frames[r * 4:(r + 1) * 4], axis=1) for r in range(4)]
    grid = np.concatenate(rows, axis=0)
    grid = np.kron(grid, np.ones((args.upscale, args.upscale, 1), np.uint8))  # nearest-neighbour upscale
    os.makedirs(os.path.dirname(args.png) or ".", exist_ok=True)
    iio.imwrite(args.png, grid)
    print(f"wrote {args.png} {grid.shape}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("expert", help="expert success, steps to success, speed")
    e.add_argument("--tasks", nargs="+", default=list(METAWORLD_TASKS))
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--max-steps", type=int, default=200, help="episode length used for the measurement")
    e.add_argument("--out", default=None, help="append JSON lines here")
    b = sub.add_parser("bc", help="quick pixel-BC difficulty probe")
    b.add_argument("--task", required=True)
    b.add_argument("--demos", type=int, default=10)
    b.add_argument("--steps", type=int, default=3000)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--lr", type=float, default=3e-4)
    b.add_argument("--augment", type=int, default=1, help="random-shift augmentation (1/0)")
    b.add_argument("--eval-episodes", type=int, default=20)
    b.add_argument("--episode-length", type=int, default=None, help="default: the task's fixed length")
    b.add_argument("--seed", type=int, default=0, help="selects demo seeds, eval seeds and torch's seed")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--device", default="cpu", help="torch device for training; the result does not depend on it")
    b.add_argument("--out", default=None)
    g = sub.add_parser("grid", help="4x4 grid of first frames")
    g.add_argument("--task", required=True)
    g.add_argument("--png", required=True)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--upscale", type=int, default=2)
    args = p.parse_args(argv)
    {"expert": cmd_expert, "bc": cmd_bc, "grid": cmd_grid}[args.cmd](args)


if __name__ == "__main__":
    main()
