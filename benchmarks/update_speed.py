"""Full-update speed of every method: seconds, FLOPs, fraction of the matmul peak, memory, phase split.

One record per (method, preset, device, threads, precision), each measured in a fresh subprocess:
  s_per_update      median seconds of `--updates` full updates after `--warmup` ones (CMIL/VMAIL: world
                    model + discriminator + imagination + actor + critics; DAC: one update; BC: one step)
  cpu_s_per_update  the same in process CPU time: on a shared CPU at one thread this counts only the
                    time the update ran, not the time it waited for a core, so old/new ratios use it
  gflop             FLOPs of one update (torch.utils.flop_counter: matmuls and convs, forward + backward)
  gflops            gflop / the best update time
  peak_fp32/bf16    best GFLOP/s of square float32 / bfloat16 matmuls in the same process, probed before
                    every timed update (the machine is shared: the probes track its load)
  frac_fp32/bf16    gflops / peak_fp32, gflops / peak_bf16
  maxrss_mb         the subprocess's peak resident memory; on CUDA also cuda_peak_mb
  ops_per_update    ATen operators one update dispatches (forward + backward + optimiser), and of them
                    `kernel_ops_per_update` that are not views: the kernel launches a GPU must take, so
                    on CUDA (s_per_update - FLOPs / peak) / kernel ops bounds the cost of each launch
  page_faults_per_update  minor page faults per timed update (memory the allocator handed back and
                    had to map again; see cmil.allocator)
  phases            seconds per update by phase, cut at each optimiser step (and around CMIL's
                    imagination): world_model, imagination (forward), actor (reward, critics on the
                    imagined steps and the backward pass through imagination), discriminator, critics,
                    other (diagnostics); DAC: critic, actor, temperature, discriminator
Data are synthetic uint8 episodes (the update's cost does not depend on the pixels). With
`--project`, the run's wall time is projected: updates x s_per_update + env steps x (env step with
rendering + acting), the env step timed on the preset's task in the same process.

On CUDA, `--cuda-graph` replays CMIL's / VMAIL's update as one CUDA graph (`Config.cuda_graph`: timed after 3
eager updates, the capture and one replay; no phase split or FLOP count, since a replay runs no Python),
`--tf32` runs float32 matmuls on TF32 tensor cores (`Config.tf32`), and `--kernel-time` profiles one more
update for its summed GPU kernel time, its kernel count and the kernels that take the most.

With `--baseline-src OLD/src` every case also runs against an older checkout of cmil (always fp32),
the two alternating A B A B in fresh processes, and old/new ratios are reported pair by pair. Each side
runs as its commit's `cmil` command does: the new code with the glibc malloc settings of
`cmil.allocator` (`--malloc default` leaves them out, to measure their effect), the baseline without.

    python benchmarks/update_speed.py --presets default --threads 1                # CPU, one thread
    python benchmarks/update_speed.py --presets default dv2 paper --precision fp32 bf16 --updates 2
    python benchmarks/update_speed.py --device cuda --presets kitchen --precision bf16 --project
    python benchmarks/update_speed.py --device cuda --methods cmil --presets kitchen --precision bf16 \
        --cuda-graph --tf32 --kernel-time --project --no-flops
    python benchmarks/update_speed.py --presets default dv2 --baseline-src /path/to/old/src --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from cmil.config import Config, replace
from cmil.config_sections import AgentConfig, WorldModelConfig
from cmil.data.replay import SequenceReplay
from world_model_speed import matmul_peak as _matmul_peak  # a sibling script: benchmarks/ is on sys.path
from world_model_speed import sync

try:
    from cmil.presets import PRESETS, apply_method, dry_run_config
except ImportError:  # checkouts before cmil.presets, whose presets lived in cmil.config (a baseline child)
    from cmil.config import PRESETS, apply_method, dry_run_config
try:
    from cmil.methods.base import make_method as build_method
except ImportError:  # checkouts before the method registry (e.g. 4f4d2e5, the baseline of issue 12's targets)
    from cmil.train import build_method
try:  # absent in checkouts older than the precision field (then only fp32 can run)
    from cmil.precision import resolve_precision, use_precision
except ImportError:
    resolve_precision = use_precision = None

RESULTS = Path(__file__).parent / "results"
METHODS = ("cmil", "vmail", "dac", "bc")
OPT_PHASE = {"world_model": "world_model", "actor": "actor", "critic": "critics", "discriminator": "discriminator"}


def presets() -> dict[str, Config]:
    """The measured sizes: the shipped presets, plus `dv2`, a DreamerV2-like size (deter 200, cnn 32,
    2 x 8 x 50 frames, H 15, 4 x 400 actor and critics), and `tiny` (the dry-run sizes, for tests)."""
    dv2 = replace(PRESETS["default"], batch_size=8, seq_len=50, wm=WorldModelConfig(cnn_depth=32),
                  agent=AgentConfig())
    return {"default": PRESETS["default"], "dv2": dv2, "paper": PRESETS["paper"], "kitchen": PRESETS["kitchen"],
            "tiny": dry_run_config(PRESETS["default"])}


def action_dim(cfg: Config) -> int:
    return 9 if cfg.task == "kitchen" else 4  # kitchen's, the Meta-World tasks'


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best GFLOP/s of a 1024 x 1024 matmul in `dtype` on the current threads (or GPU)."""
    return _matmul_peak(device, n=1024, reps=5, dtype=dtype)


def synthetic_replay(cfg: Config, episodes: int, length: int, seed: int, method=None) -> SequenceReplay:
    """Random episodes; with `method`, filled as the trainer fills its online replay (each episode with the
    method's per-frame labels, e.g. CMIL's teacher actions; a baseline checkout may predate them)."""
    rng = np.random.default_rng(seed)
    keys = getattr(method, "replay_keys", ())
    replay = SequenceReplay(cfg.seq_len, seed=seed, **({"extra_keys": keys} if keys else {}))
    A, n = action_dim(cfg), length + 1
    for _ in range(episodes):
        flags = np.zeros(n, bool)
        ep = {"image": rng.integers(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
              "action": rng.uniform(-1, 1, (n, A)).astype(np.float32), "reward": np.zeros(n, np.float32),
              "success": flags.copy(), "is_first": flags.copy(), "is_last": flags.copy(),
              "is_terminal": flags.copy()}
        ep["is_first"][0], ep["is_last"][-1] = True, True
        ep["action"][0] = 0
        replay.add_episode(method.label_episode(ep) if keys else ep)
    return replay


class PhaseTimer:
    """Cuts each update into phases at the end of every optimiser step and around `method.imagine`."""

    def __init__(self, method, device: torch.device):
        self.device, self.marks = device, []
        for name, opt in method.optimizers().items():
            opt.step = self._after(opt.step, OPT_PHASE.get(name, name))
        if hasattr(method, "imagine"):
            imagine = method.imagine

            def timed_imagine(*args, **kwargs):
                self.mark("actor")  # since the world-model step: the BC term's actor forward
                out = imagine(*args, **kwargs)
                self.mark("imagination")
                return out

            method.imagine = timed_imagine

    def _after(self, fn, label: str):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.mark(label)
            return out
        return wrapped

    def mark(self, label: str) -> None:
        sync(self.device)
        self.marks.append((label, time.perf_counter()))

    def split(self, start: float, end: float) -> dict[str, float]:
        """Seconds per phase between start and end from the marks taken in between (then cleared)."""
        out: dict[str, float] = defaultdict(float)
        prev = start
        for label, t in self.marks:
            out[label] += t - prev
            prev = t
        out["other"] += end - prev
        self.marks.clear()
        return dict(out)


def one_update(method, cfg: Config, expert: SequenceReplay, replay: SequenceReplay) -> None:
    if cfg.method == "bc":  # BC trains offline in `pretrain`: run it for exactly one more step
        method.cfg = replace(cfg, **{"bc.steps": method.updates + 1})
        method.pretrain(expert, lambda _n: None)
    else:
        method.update(expert, replay)


def count_flops(fn) -> float | None:
    """FLOPs of one call of fn; None where the counter cannot follow it (its module tracker rejects
    `torch.autograd.grad` inside backward hooks, which DAC's gradient penalty uses)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except RuntimeError as err:
        if "autograd.grad" not in str(err):
            raise
        return None
    return counter.get_total_flops()


def count_ops(fn) -> tuple[int, int]:
    """(all, non-view) ATen operators that one call of fn dispatches. Views make no kernel, so the
    second count is the number of kernel launches the call needs on a GPU (fused optimisers included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = self.kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.total += 1
            self.kernels += not func.is_view
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        fn()
    return counter.total, counter.kernels


def child(args: argparse.Namespace) -> dict:
    """Measure one case in this fresh process; returns its record."""
    device = torch.device(args.device)
    cfg = apply_method(replace(presets()[args.preset], method=args.method))
    if use_precision is None and args.precision != "fp32":
        raise SystemExit("this cmil checkout has no precision field: only fp32 can run")
    precision = resolve_precision(args.precision, device) if resolve_precision else "fp32"
    scope = (lambda: use_precision(precision)) if use_precision else contextlib.nullcontext
    if args.compile:
        cfg = replace(cfg, compile=True)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # what `tf32` does in a run (cmil.launch.build)
    graphed = args.cuda_graph and cfg.method in ("cmil", "vmail")
    if graphed:  # 3 eager updates, then the capture: time only replays, and count nothing (no op dispatches)
        cfg = replace(cfg, cuda_graph=True)
        args.warmup, args.flops = max(args.warmup, 5), False
    torch.manual_seed(0)
    length = max(100, 2 * cfg.seq_len)
    method = build_method(cfg, action_dim(cfg), device)
    expert = synthetic_replay(cfg, 10, length, seed=0)
    with scope():
        replay = synthetic_replay(cfg, 10, length, seed=1, method=method)
    update = lambda: one_update(method, cfg, expert, replay)  # noqa: E731
    load = [os.getloadavg()[0]]
    with scope():
        for _ in range(args.warmup):
            update()
        flops = count_flops(update) if args.flops else None
        gflop = None if flops is None else flops / 1e9
        ops = count_ops(update) if args.flops else None
        timer = None if graphed else PhaseTimer(method, device)  # a replay runs no Python to cut at
        times, cpu_times, phases, peaks = [], [], [], {"fp32": [], "bf16": []}
        faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(args.updates):
            if args.peaks:
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    peaks[name].append(matmul_peak(device, dtype))
            if timer:
                timer.marks.clear()
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            update()
            sync(device)
            end = time.perf_counter()
            times.append(end - start)
            cpu_times.append(time.process_time() - cpu_start)
            phases.append(timer.split(start, end) if timer else {"graph_replay": end - start})
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start) / args.updates
    load.append(os.getloadavg()[0])
    rec = {"method": cfg.method, "preset": args.preset, "device": str(device), "threads": torch.get_num_threads(),
           "precision": precision, "compile": bool(args.compile), "cuda_graph": graphed, "tf32": args.tf32,
           "updates": args.updates,
           "batch": [cfg.batch_size, cfg.seq_len], "torch": torch.__version__,
           "params_m": sum(p.numel() for m in method.modules().values() for p in m.parameters()) / 1e6,
           "s_per_update": statistics.median(times), "s_per_update_best": min(times), "times": times,
           "cpu_s_per_update": statistics.median(cpu_times),
           "phases": {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]},
           "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "page_faults_per_update": faults,
           "load_avg_1min": [round(x, 2) for x in load], "src": str(Path(sys.modules["cmil"].__file__).parent)}
    if args.peaks:
        for name in ("fp32", "bf16"):
            rec[f"peak_{name}"] = max(peaks[name])
    if ops is not None:
        rec["ops_per_update"], rec["kernel_ops_per_update"] = ops
    if gflop is not None:
        rec["gflop"] = gflop
        rec["gflops"] = gflop / min(times)
        for name in ("fp32", "bf16") if args.peaks else ():
            rec[f"frac_{name}"] = rec["gflops"] / rec[f"peak_{name}"]
    if device.type == "cuda":
        rec["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        rec["gpu"] = torch.cuda.get_device_name(device)
    if args.kernel_time and device.type == "cuda":
        with scope():
            rec["kernel_time"] = kernel_time(update, device)
    if args.project:
        rec["projection"] = project_run(cfg, method, rec["s_per_update"], device)
    return rec


def kernel_time(fn, device: torch.device, top: int = 12) -> dict:
    """GPU time of one call of fn from the profiler's kernel records (CUPTI follows a CUDA graph's replay
    into its kernels): their summed duration against the call's wall time says whether the GPU computes
    or waits between kernels, and the kernels that take the most."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - start
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        if us:
            rows.append((us / 1e6, event.count, event.key))
    rows.sort(reverse=True)
    return {"kernel_s": sum(r[0] for r in rows), "kernels": sum(r[1] for r in rows), "wall_s_profiled": wall,
            "top": [{"s": s, "count": n, "name": name[:120]} for s, n, name in rows[:top]]}


def project_run(cfg: Config, method, s_per_update: float, device: torch.device, steps: int = 100) -> dict:
    """Projected wall time of the preset's whole run: its updates plus its env steps with rendering and
    acting, the env step and the act timed here over `steps` steps of the preset's task."""
    from cmil.envs import make_env

    env = make_env(cfg.task, seed=0, image_size=cfg.image_size)
    policy = method.policy()
    obs, _ = env.reset(seed=0)
    policy.reset()
    env_s = act_s = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        action = policy.act(obs, deterministic=False)
        sync(device)
        t1 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        env_s += time.perf_counter() - t1
        act_s += t1 - t0
        if terminated or truncated:
            obs, _ = env.reset()
            policy.reset()
    env.close()
    env_steps = cfg.env_steps + cfg.seed_steps
    updates = cfg.pretrain_updates + cfg.pretrain_bc_updates + cfg.env_steps // cfg.train_every * cfg.train_updates
    hours = (updates * s_per_update + env_steps * (env_s + act_s) / steps) / 3600
    return {"env_steps": env_steps, "updates": updates, "s_per_env_step": env_s / steps,
            "s_per_act": act_s / steps, "hours": hours}


def run_child(args: argparse.Namespace, method: str, preset: str, threads: int, precision: str,
              src: str, baseline: bool = False) -> dict:
    """One case in a fresh process running the cmil under `src`; a baseline gets no new-code options."""
    cmd = [sys.executable, __file__, "--child", "--methods", method, "--presets", preset,
           "--threads", str(threads), "--precision", precision, "--device", args.device,
           "--updates", str(args.updates), "--warmup", str(args.warmup)]
    if args.project:
        cmd.append("--project")
    if args.kernel_time:
        cmd.append("--kernel-time")
    if args.compile and not baseline:
        cmd.append("--compile")
    if args.cuda_graph and not baseline:
        cmd.append("--cuda-graph")
    if args.tf32 and not baseline:
        cmd.append("--tf32")
    if not args.flops:
        cmd.append("--no-flops")
    # The new code runs as the `cmil` command runs it (with its malloc settings unless `--malloc default`);
    # a baseline as its own commit ran, without them.
    from cmil import allocator  # the driver's (new) cmil; a baseline child may predate the module

    tuned = not baseline and args.malloc == "tuned"
    env = allocator.tuned_environ(os.environ) if tuned else allocator.plain_environ(os.environ)
    # `src` replaces any cmil on the path; other entries (packages installed with --target) stay.
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "cmil").is_dir()]
    env["PYTHONPATH"] = os.pathsep.join([src, *kept])
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "malloc_tuned": allocator.is_tuned(env)}


def line(rec: dict) -> str:
    text = (f"{rec['method']:6s} {rec['preset']:8s} {rec['device']:5s} t{rec['threads']} {rec['precision']:4s}"
            f"{' compiled' if rec.get('compile') else ''}{' graphed' if rec.get('cuda_graph') else ''}{' tf32' if rec.get('tf32') else ''}  {rec['s_per_update']:8.3f} s/update"
            f" (cpu {rec['cpu_s_per_update']:.3f})")
    if "gflop" in rec:
        text += f"  {rec['gflop']:8.1f} GFLOP  {rec['gflops']:6.1f} GFLOP/s"
    if "kernel_time" in rec:
        kt = rec["kernel_time"]
        text += f"  kernels {kt['kernel_s']:.3f} s of {kt['wall_s_profiled']:.3f} s ({kt['kernels']} launches)"
    if "kernel_ops_per_update" in rec:
        text += f"  {rec['kernel_ops_per_update']:6d} kernels"
    if "frac_fp32" in rec:
        text += f" = {100 * rec['frac_fp32']:3.0f}% fp32 / {100 * rec['frac_bf16']:3.0f}% bf16 peak"
    text += f"  rss {rec['maxrss_mb']:6.0f} MB"
    if "page_faults_per_update" in rec:
        text += f"  faults {rec['page_faults_per_update']:7.0f}/update"
    if "cuda_peak_mb" in rec:
        text += f"  cuda {rec['cuda_peak_mb']:.0f} MB"
    total = sum(rec["phases"].values()) or 1.0
    text += "  [" + " ".join(f"{k} {100 * v / total:.0f}%" for k, v in rec["phases"].items()) + "]"
    if "projection" in rec:
        text += f"  run {rec['projection']['hours']:.1f} h"
    return text + f"  load {rec['load_avg_1min']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--presets", nargs="+", default=["default"], choices=list(presets()))
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="torch threads (0: all cores)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP and operator counts and the peaks")
    parser.add_argument("--compile", action="store_true", help="torch.compile CMIL's imagination (new code)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay CMIL's / VMAIL's update as a CUDA graph (new code; --device cuda)")
    parser.add_argument("--tf32", action="store_true", help="CUDA: float32 matmuls on TF32 tensor cores (new code)")
    parser.add_argument("--kernel-time", action="store_true",
                        help="CUDA: profile one more update for its summed kernel time and top kernels")
    parser.add_argument("--project", action="store_true", help="project the preset's whole run (env steps too)")
    parser.add_argument("--baseline-src", default=None, help="src/ of an older cmil checkout to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="A B rounds per case with --baseline-src")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="the new code's glibc malloc settings: as `cmil` runs (cmil.allocator) or glibc's own")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/update_speed_*.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads[0] or os.cpu_count() or 1)
        args.method, args.preset, args.precision = args.methods[0], args.presets[0], args.precision[0]
        args.peaks = args.flops
        print(json.dumps(child(args)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine: the CUDA cases are skipped.")
        return
    print(f"cpu: {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()}", flush=True)
    new_src = str(Path(sys.modules["cmil"].__file__).parent.parent)
    records, ratios = [], []
    # CPU time at one thread (robust to other jobs on a shared CPU); wall time otherwise.
    key = "cpu_s_per_update" if args.device == "cpu" and args.threads == [1] else "s_per_update"
    for preset in args.presets:
        for method in args.methods:
            for threads in args.threads:
                for precision in args.precision:
                    for _ in range(args.rounds if args.baseline_src else 1):
                        rec = run_child(args, method, preset, threads, precision, new_src)
                        records.append(rec)
                        print(line(rec), flush=True)
                        if args.baseline_src:
                            old = run_child(args, method, preset, threads, "fp32", args.baseline_src, baseline=True)
                            old["baseline"] = True
                            records.append(old)
                            ratio = old[key] / rec[key]
                            ratios.append({"method": method, "preset": preset, "threads": threads,
                                           "precision": rec["precision"], "old_over_new": ratio})
                            print(line(old) + f"  (old)  -> new is {ratio:.2f}x faster", flush=True)
    summary = summarise(ratios)
    for row in summary:
        print(f"{row['method']} {row['preset']} t{row['threads']} {row['precision']}: new is "
              f"{row['median_old_over_new']:.2f}x faster (pairs {[round(r, 2) for r in row['pairs']]})")
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (f"update_speed_{args.device}"
                                                     + ("_vs_baseline" if args.baseline_src else "") + ".json")
    from cmil.runs import source_commit  # here, not at the top: the baseline's children import this script

    commits = {"commit": source_commit()}
    if args.baseline_src:
        commits["baseline_commit"] = source_commit(Path(args.baseline_src).resolve())
    out.write_text(json.dumps({"argv": sys.argv[1:], **commits, "ratio_of": key, "records": records,
                               "ratios": summary}, indent=1) + "\n")
    print(f"wrote {out}")


def summarise(ratios: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in ratios:
        groups[(r["method"], r["preset"], r["threads"], r["precision"])].append(r["old_over_new"])
    return [{"method": m, "preset": p, "threads": t, "precision": q, "pairs": v,
             "median_old_over_new": statistics.median(v)} for (m, p, t, q), v in groups.items()]


if __name__ == "__main__":
    main()
