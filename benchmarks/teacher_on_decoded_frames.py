"""Could the pixel BC teacher label the world model's *imagined* frames? (issue 9, round 37)

    python benchmarks/teacher_on_decoded_frames.py RUN [RUN ...] [--episodes 10] [--out JSON]

Round 24's teacher labels only real frames: the replay's, online. Before the first env step the only real frames are
the demos', whose labels the BC term already has, so the pretrained latent policy (0.35 against its teacher's 0.63)
learns nothing from it. The world model could supply more frames without env steps: decode its imagined states into
images and let the teacher label them (a DAgger "in the dream"). That can only teach the student where the teacher's
label on a *decoded* frame is closer to its label on the real frame than the student's own action already is. For
each CMIL run trained with a teacher (`agent.anchor_target bc`; its latest checkpoint) this measures, per action
dimension (mean squared difference):

  - on the demos and on the run's first `--episodes` stored episodes (the seed episodes: the pretrained policy's own
    states) and its last `--episodes`: the decoder's mean absolute pixel error (of 255) on the posterior states,
    `label_noise` = teacher(decoded posterior frame) vs teacher(real frame), and `student_gap` = the acting actor's
    mode at the posterior state vs teacher(real frame), i.e. the anchor's error there;
  - open loop on the same episodes: from the posterior at frame t, k = 1, 3, 5, 10 prior steps with the actions
    actually taken (head means, no sampling); `imagined_label_noise[k]` = teacher(decoded imagined frame t+k) vs
    teacher(real frame t+k), `imagined_student_gap[k]` = the actor at the imagined state vs teacher(real frame t+k).

Writes a JSON (default benchmarks/results/diagnose/teacher_on_decoded_frames.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import load_episodes
from cmil.launch import load_demos, open_policy
from cmil.models.world_model import image_to_uint8
from cmil.runs import source_commit

DEPTHS = (1, 3, 5, 10)


def _mse(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u - v).pow(2).mean())


@torch.no_grad()
def measure_episodes(agent, episodes: list[dict]) -> dict:
    """The decoder's pixel error, the label noise of decoded frames and the student's gap to the teacher, at the
    episodes' posterior states and open loop from them (see the module docstring)."""
    wm, teacher, actor = agent.wm, agent.teacher, agent.policy().actor
    rows: dict[str, list[float]] = {"pixel_error": [], "label_noise": [], "student_gap": []}
    imagined = {k: [] for k in DEPTHS}
    imagined_student = {k: [] for k in DEPTHS}
    for ep in episodes:
        feat, _, post = agent.episode_features(ep)
        image = torch.as_tensor(ep["image"][:-1])
        label = teacher(image)
        recon = image_to_uint8(wm.decode(wm.feat(post)))
        rows["pixel_error"].append(float((recon.float() - image.float()).abs().mean()))
        rows["label_noise"].append(_mse(teacher(recon), label))
        rows["student_gap"].append(_mse(actor(feat).mode(), label))
        starts = torch.arange(0, feat.shape[0] - max(DEPTHS), 3)
        if not len(starts):  # shorter than the deepest open-loop step
            continue
        state = {k: v[starts] for k, v in post.items()}
        taken = torch.as_tensor(ep["action"])
        for k in range(1, max(DEPTHS) + 1):
            state, _ = wm.imagine_step(state, taken[starts + k], sample=False)  # action[t + 1] is taken at frame t
            if k in DEPTHS:
                imagined[k].append(_mse(teacher(image_to_uint8(wm.decode(wm.feat(state)))), label[starts + k]))
                imagined_student[k].append(_mse(actor(wm.agent_feat(state)).mode(), label[starts + k]))
    out = {k: float(np.mean(v)) for k, v in rows.items()}
    out["imagined_label_noise"] = {k: float(np.mean(v)) if v else None for k, v in imagined.items()}
    out["imagined_student_gap"] = {k: float(np.mean(v)) if v else None for k, v in imagined_student.items()}
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def measure(run: Path, episodes: int) -> dict:
    parts = open_policy(run)
    parts.env.close()
    agent, cfg = parts.method, parts.cfg
    if agent.teacher is None:
        raise SystemExit(f"{run}: no teacher (agent.anchor_target is not 'bc')")
    torch.manual_seed(0)
    online = load_episodes(run / "episodes")
    groups = {"demos": load_demos(cfg, agent.action_dim), "first_online": online[:episodes]}
    if len(online) > episodes:
        groups["last_online"] = online[-episodes:]
    return {"run": str(run), "checkpoint": str(parts.checkpoint), "online_episodes": len(online),
            **{name: measure_episodes(agent, eps) for name, eps in groups.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--episodes", type=int, default=10, help="stored online episodes at each end of the run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/teacher_on_decoded_frames.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        row = measure(run, args.episodes)
        rows.append(row)
        print(f"{run} ({row['online_episodes']} online episodes; per action dimension, squared)")
        for name in ("demos", "first_online", "last_online"):
            if name in row:
                r = row[name]
                print(f"  {name:13s} pixel error {r['pixel_error']:5.2f}/255  label noise of a decoded frame "
                      f"{r['label_noise']:.4f}  student's gap to the teacher {r['student_gap']:.4f}  open loop "
                      "(label noise vs student's gap) k=" + ", ".join(
                          f"{k}: {_fmt(r['imagined_label_noise'][k])} vs {_fmt(r['imagined_student_gap'][k])}" for k in DEPTHS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "episodes": args.episodes, "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
