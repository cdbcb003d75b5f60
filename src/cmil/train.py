"""The training loop shared by every method.

    pretrain on demos -> seed episodes -> (env step, every `train_every` steps `train_updates`
    updates, periodic evaluation and checkpoints) until `env_steps` -> final evaluation.

Checkpoints are written at episode ends, so a resumed run starts a fresh episode with exactly the
models, optimisers, replay (rebuilt from `episodes/`), RNG states and counters it saved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmil.config import Config, replace, save_config
from cmil.data.episodes import EpisodeRecorder, episode_paths, load_episode, load_episodes, save_episode
from cmil.data.replay import SequenceReplay
from cmil.envs import make_env
from cmil.evaluate import demo_success_rate, evaluate, run_episode
from cmil.methods.base import Method
from cmil.precision import resolve_precision, use_precision
from cmil.runs import (
    Checkpointer,
    MetricLogger,
    export_safetensors,
    restore,
    rng_state,
    set_rng_state,
    write_json,
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_method(cfg: Config, action_dim: int, device: torch.device) -> Method:
    if cfg.method == "bc":
        from cmil.methods.bc import BC

        return BC(cfg, action_dim, device)
    if cfg.method in ("cmil", "vmail"):
        from cmil.methods.cmil import CMIL

        return CMIL(cfg, action_dim, device)
    if cfg.method == "dac":
        from cmil.methods.dac import DAC

        return DAC(cfg, action_dim, device)
    raise ValueError(f"unknown method {cfg.method!r}")


def demo_dir(cfg: Config) -> Path:
    return Path(cfg.demos) if cfg.demos else Path("demos") / cfg.task


def expert_success(directory: Path, demos) -> float:
    """The expert's success rate when the demos were collected (stats file), else the demos' own."""
    stats = directory / "expert_stats.json"
    if stats.exists():
        return float(json.loads(stats.read_text())["success_rate"])
    return demo_success_rate(demos)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, quiet: bool = False):
        self.device = resolve_device(cfg.device)
        cfg = replace(cfg, precision=resolve_precision(cfg.precision, self.device))  # saved resolved
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.env = make_env(cfg.task, seed=cfg.seed, image_size=cfg.image_size)
        action_dim = self.env.action_space.shape[0]

        self.demo_dir = demo_dir(cfg)
        demos = load_episodes(self.demo_dir, cfg.image_size, action_dim, limit=cfg.num_demos)
        self.expert_success = expert_success(self.demo_dir, demos)
        self.expert = SequenceReplay(cfg.seq_len, seed=cfg.seed)
        for ep in demos:
            self.expert.add_episode(ep)
        self.replay = SequenceReplay(cfg.seq_len, seed=cfg.seed + 1)
        self.method = build_method(cfg, action_dim, self.device)
        self.policy = self.method.policy()
        self.logger = MetricLogger(run_dir)
        self.ckpt = Checkpointer(run_dir, cfg.keep_checkpoints)
        self.counters = {"env_step": 0, "episodes": 0, "pretrained": 0, "next_eval": cfg.eval_every,
                         "next_log": cfg.log_every, "next_ckpt": cfg.checkpoint_every}
        self.last_eval: dict[str, float] = {}
        self._resume_or_init()

    # --- state ----------------------------------------------------------------------------
    def _resume_or_init(self) -> None:
        latest = self.ckpt.latest()
        if latest is not None:
            payload = Checkpointer.load(latest)
            restore(payload, self.method.modules(), self.method.optimizers())
            self.counters.update(payload["counters"])
            self.method.updates = self.counters.get("updates", 0)
            set_rng_state(payload["rng"], self.np_rng)
            self.expert.set_rng_state(json.loads(payload["rng"]["expert_replay"]))
            self.replay.set_rng_state(json.loads(payload["rng"]["replay"]))
            for path in self._episode_files()[: self.counters["episodes"]]:
                self.replay.add_episode(load_episode(path))
            self._say(f"resumed {self.run_dir} at env step {self.counters['env_step']} ({latest.name})")
        elif self.cfg.init_from:
            source = Checkpointer(Path(self.cfg.init_from)).latest()
            if source is None:
                raise FileNotFoundError(f"{self.cfg.init_from}: no checkpoint to initialise from")
            restore(Checkpointer.load(source), self.method.modules())
            self._say(f"initialised networks from {source}")

    def _episode_files(self) -> list[Path]:
        directory = self.run_dir / "episodes"
        return episode_paths(directory) if directory.exists() and any(directory.glob("*.npz")) else []

    def checkpoint(self) -> None:
        self.counters["updates"] = self.method.updates
        rng = {**rng_state(self.np_rng), "expert_replay": json.dumps(self.expert.rng_state()),
               "replay": json.dumps(self.replay.rng_state())}
        self.ckpt.save(self.counters["env_step"], self.method.modules(), self.method.optimizers(),
                       self.counters, rng)

    def _say(self, msg: str) -> None:
        if not self.quiet:
            tqdm.write(msg)

    # --- phases ---------------------------------------------------------------------------
    def pretrain(self) -> None:
        if self.counters["pretrained"]:
            return
        total = self.method.pretrain_steps()
        with tqdm(total=total, desc="pretrain", disable=self.quiet or total == 0, dynamic_ncols=True) as bar:
            with use_precision(self.cfg.precision):
                metrics = self.method.pretrain(self.expert, bar.update)
        if metrics:
            self.logger.log(0, metrics)
        if total and self.method.online:  # where the online phase starts from (logged at env step 0)
            pre = self.evaluate(self.cfg.eval_episodes, "pretrained")
            self._say(f"pretrained policy: success {pre['eval/success_rate']:.2f} over {self.cfg.eval_episodes} episodes")
        self.counters["pretrained"] = 1
        self.checkpoint()

    def evaluate(self, episodes: int, tag: str) -> dict[str, float]:
        metrics = evaluate(self.env, self.policy, episodes, self.cfg.eval_deterministic, seed=self.cfg.eval_seed,
                           video_dir=self.run_dir / "videos", video_episodes=self.cfg.video_episodes,
                           video_name=f"{tag}_{self.counters['env_step']:08d}")
        metrics.update(self.method.diagnostics(self.expert, self.replay))
        metrics["eval/expert_success_rate"] = self.expert_success
        metrics["bound/oracle_success_gap"] = self.expert_success - metrics["eval/success_rate"]
        self.logger.log(self.counters["env_step"], metrics)
        self.last_eval = metrics
        return metrics

    def online(self) -> None:
        cfg, c = self.cfg, self.counters
        total = (cfg.seed_steps if self.method.uses_seed_episodes else 0) + cfg.env_steps
        bar = tqdm(total=total, initial=min(c["env_step"], total), desc=f"{cfg.method} {cfg.task}",
                   unit="step", disable=self.quiet, dynamic_ncols=True)
        train_metrics: dict[str, float] = {}
        while c["env_step"] < total:
            seeding = c["env_step"] < (cfg.seed_steps if self.method.uses_seed_episodes else 0)
            before = c["env_step"]
            episode_metrics = self._online_episode(seeding, train_metrics)
            bar.update(c["env_step"] - before)
            if c["env_step"] >= c["next_log"]:
                self.logger.log(c["env_step"], {**train_metrics, **episode_metrics})
                c["next_log"] += cfg.log_every
            if c["env_step"] >= c["next_eval"] and not seeding:
                self.evaluate(cfg.eval_episodes, "eval")
                c["next_eval"] = c["env_step"] + cfg.eval_every
            if c["env_step"] >= c["next_ckpt"]:
                self.checkpoint()
                c["next_ckpt"] = c["env_step"] + cfg.checkpoint_every
            bar.set_postfix(success=f"{self.last_eval.get('eval/success_rate', float('nan')):.2f}",
                            updates=self.method.updates)
        bar.close()

    def _online_episode(self, seeding: bool, train_metrics: dict[str, float]) -> dict:
        """One training episode; updates run every `train_every` env steps once seeding is over."""
        cfg, c = self.cfg, self.counters

        def act(obs):
            action = self.policy.act(obs, deterministic=False)
            c["env_step"] += 1
            if not seeding and c["env_step"] % cfg.train_every == 0 and len(self.replay) > 0:
                with use_precision(cfg.precision):
                    for _ in range(cfg.train_updates):
                        train_metrics.update(self.method.update(self.expert, self.replay))
            return action

        recorder = EpisodeRecorder()
        success, ret, length, _, _ = run_episode(self.env, act, self.policy.reset, recorder=recorder,
                                                 seed=int(self.np_rng.integers(2**31)))
        ep = recorder.finish()
        self.replay.add_episode(ep)
        save_episode(self.run_dir / "episodes", ep, name=f"ep{c['episodes']:06d}-{length}.npz")
        c["episodes"] += 1
        return {"train/episode_success": float(success), "train/episode_return": ret,
                "train/episode_length": float(length), "train/updates": float(self.method.updates)}

    def finish(self) -> dict:
        """Final evaluation and exported weights; `run` writes the result as final.json last."""
        final = self.evaluate(self.cfg.final_eval_episodes, "final")
        export_safetensors(self.run_dir / "model.safetensors", self.method.modules())
        result = {"task": self.cfg.task, "method": self.cfg.method, "seed": self.cfg.seed,
                  "env_steps": self.counters["env_step"], "target_env_steps": self.cfg.env_steps,
                  "episodes": self.cfg.final_eval_episodes,
                  "success_rate": final["eval/success_rate"], "return": final["eval/return"],
                  "expert_success_rate": self.expert_success}
        return result

    def run(self) -> dict:
        start = time.time()
        try:
            self.pretrain()
            if self.method.online:
                self.online()
            result = self.finish()
            self.checkpoint()
        finally:
            self.logger.close()
            self.env.close()
        result["wall_time_s"] = round(time.time() - start, 1)
        write_json(self.run_dir / "final.json", result)
        return result


def train(cfg: Config, run_dir: Path, quiet: bool = False) -> dict:
    """Train (or resume) the run in `run_dir`; returns the final evaluation."""
    return Trainer(cfg, run_dir, quiet).run()

