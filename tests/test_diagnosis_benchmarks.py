"""benchmarks/diagnose_cmil.py and benchmarks/pretrain_curve.py run end to end and write every measurement
(on the point task at tiny sizes: seconds, not the 5-10 minutes of a real diagnosis)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmil.data.collect import collect_demos

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
TINY = ["--set", "task=point", "--set", "batch_size=2", "--set", "seq_len=8", "--heldout", "2"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diag") / "point"
    collect_demos("point", 3, path, seed=0, quiet=True)
    return path


def _run(script: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, cwd=BENCHMARKS,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_diagnose_writes_every_measurement(demos, tmp_path):
    # bc.steps: the anchor's pixel BC teacher (trained inside the `default` preset's pretraining) and the BC reference.
    _run("diagnose_cmil.py", *TINY, "--set", "pretrain_updates=2", "--set", "pretrain_bc_updates=2", "--set", "bc.steps=4",
         "--episodes", "2", "--updates", "2", "--demos", str(demos), "--out", str(tmp_path), "--name", "tiny")
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert 0.0 <= result["pretrained_success"] <= 1.0
    for key in ("action_mse_heldout", "action_mse_heldout_mean_baseline", "action_mse_heldout_acting",
                "action_mse_heldout_actions_zeroed"):
        assert result[key] > 0, key
    assert all(0.0 <= acc <= 1.0 for acc in result["fresh_disc_heldout_acc"].values())
    probe = result["disc_probe"]
    assert {f"D/{side}_{kind}" for side in ("expert", "policy") for kind in ("posterior", "prior", "imagined")} <= set(probe)
    assert all(0.0 <= v <= 1.0 for v in probe.values()) and "fresh/artifact: expert posterior vs expert prior" in probe
    assert {"real/expert", "real/policy", "real/random", "imagined/policy"} <= set(result["disagreement_expert_states"])
    assert result["online"]["train/actor_grad_bc"] > 0 and "rl_to_bc_ratio" in result["online"]
    assert (demos.parent / "point-heldout2").is_dir()  # held-out expert episodes, collected once


def test_pretrain_curve_measures_at_every_interval(demos, tmp_path):
    _run("pretrain_curve.py", *TINY, "--updates", "4", "--every", "2", "--episodes", "1",
         "--demos", str(demos), "--out", str(tmp_path), "--name", "tiny")
    curve = json.loads((tmp_path / "curve_tiny.json").read_text())
    assert [row["updates"] for row in curve["rows"]] == [2, 4]
    for row in curve["rows"]:
        assert 0.0 <= row["success"] <= 1.0 and row["action_mse_heldout"] > 0 and row["action_mse_heldout_acting"] > 0
    assert curve["overrides"] == {"task": "point", "batch_size": 2, "seq_len": 8}


def test_checkpoint_errors_of_a_trained_run(demos, tmp_path):
    from cmil.cli import main

    run = tmp_path / "run"
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "40",
                 "--checkpoint-every", "20", "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(run)]) == 0
    _run("diagnose_cmil.py", *TINY, "--checkpoints", str(run), "--demos", str(demos), "--out", str(tmp_path),
         "--name", "ckpt")
    rows = json.loads((tmp_path / "ckpt.json").read_text())["checkpoints"]
    assert [r["checkpoint"] for r in rows] == sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert rows and all(r["action_mse_train"] > 0 and r["action_mse_heldout"] > 0 for r in rows)
    # What the run's discriminator separates, at its last checkpoint.
    _run("diagnose_cmil.py", *TINY, "--disc-probe", str(run), "--demos", str(demos), "--out", str(tmp_path),
         "--name", "probe")
    (row,) = json.loads((tmp_path / "probe.json").read_text())["disc_probe"]
    assert row["checkpoint"] == rows[-1]["checkpoint"] and 0.0 <= row["D/expert_prior"] <= 1.0
    assert 0.0 <= row["fresh/behaviour: expert vs policy, posterior"] <= 1.0
    # ... and what it makes of the action at the expert's states (one slope per action dimension).
    assert 0.0 <= row["D_action/zero"] <= 1.0 and len(row["D_action/D_slope_per_dim"]) == len(row["D_action/expert_minus_actor_per_dim"])
    assert len(row["D_action/Q_slope_per_dim"]) == 2 and 0.0 <= min(row["D_action/Q_slope_towards_expert_per_dim"]) <= 1.0
    # What D and the critics make of one action dimension, split by the expert's value of it.
    checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    _run("action_dim_probe.py", str(checkpoint), "--run", str(run), "--heldout", str(demos), "--dim", "1",
         "--split", "0", "--values", "-0.5", "0.5", "--out", str(tmp_path / "dim.json"))
    (dim_row,) = json.loads((tmp_path / "dim.json").read_text())["rows"]
    parts = [dim_row[side] for side in ("below", "above") if side in dim_row]
    assert sum(p["states"] for p in parts) > 0
    assert all(len(p["Q_slope_per_dim"]) == 2 and "D_logit@-0.5" in p and "Q@0.5" in p for p in parts)
    # Which way the RL part of the actor gradient points against the BC part, by parameter group.
    _run("actor_grad_split.py", str(run), "--demos", str(demos), "--updates", "2", "--out", str(tmp_path / "split.json"))
    (split,) = json.loads((tmp_path / "split.json").read_text())["runs"]
    assert all(-1.0 <= split[k] <= 1.0 for k in ("cos_mean_rows", "cos_std_rows", "cos_hidden", "cos_all"))
    assert split["bc_norm_mean_rows"] > 0 and split["updates"] == 2
    assert len(split["push_rl_per_dim"]) == len(split["push_bc_per_dim"]) == 2   # the point task's actions
    assert -1.0 <= split["push_bc_cos_to_expert"] <= 1.0
    # A fresh actor fitted by BC on the checkpoint's frozen world model, beside the run's own policy.
    _run("refit_probe.py", str(checkpoint), "--run", str(run), "--demos", str(demos), "--heldout", str(demos),
         "--updates", "3", "--episodes", "1", "--refit-seeds", "0", "1", "--out", str(tmp_path / "refit.json"))
    (refit,) = json.loads((tmp_path / "refit.json").read_text())["rows"]
    assert refit["checkpoint"] == checkpoint.name and 0.0 <= refit["own_success"] <= 1.0
    assert [r["seed"] for r in refit["refits"]] == [0, 1] and all(r["action_mse_heldout"] > 0 for r in refit["refits"])
    # What pulls the representation, loss term by loss term (the dry run's BC shaping weight is the preset's).
    _run("representation_grads.py", str(checkpoint), "--run", str(run), "--demos", str(demos), "--batches", "1",
         "--out", str(tmp_path / "grads.json"))
    (grads,) = json.loads((tmp_path / "grads.json").read_text())["rows"]
    assert grads["replay_episodes"] > 0
    assert all(grads[f"norm {k}"] > 0 for k in ("expert/recon", "replay/recon", "expert/bc"))
    assert all(-1.0 <= grads[f"cos {k}, bc"] <= 1.0 for k in ("expert/recon", "expert/kl", "replay/recon", "replay/kl"))


def test_refit_changes_only_the_actor(demos, tmp_path):
    """refit_probe.refit_actor re-initialises and trains the actor; the world model stays as it was, and the
    acting (EMA) policy is the refitted actor on that world model."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from diagnose_cmil import _restore_agent
        from refit_probe import refit_actor
    finally:
        sys.path.remove(str(BENCHMARKS))
    import torch

    from cmil.cli import main
    from cmil.data.episodes import load_episodes
    from cmil.data.replay import SequenceReplay

    run = tmp_path / "run"
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "20",
                 "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(run)]) == 0
    agent = _restore_agent(run, sorted((run / "checkpoints").glob("step_*.pt"))[-1], 2)
    expert = SequenceReplay(agent.cfg.seq_len, seed=0)
    for ep in load_episodes(demos):
        expert.add_episode(ep)
    wm_before = {k: v.clone() for k, v in agent.wm.state_dict().items()}
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    refit_actor(agent, expert, updates=2, seed=0)
    assert all(torch.equal(v, agent.wm.state_dict()[k]) for k, v in wm_before.items())
    assert not any(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters(), strict=True))
    acting = agent.policy_ema.module
    assert all(torch.equal(a, b) for a, b in zip(acting["wm"].parameters(), agent.wm.parameters(), strict=True))
    # two updates of the average after a copy: between the first refitted weights and the live ones, not the old actor
    assert not any(torch.equal(a, b) for a, b in zip(acting["actor"].parameters(), actor_before, strict=True))


def test_compare_methods_spells_overrides_as_train_accepts_them(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from compare_methods import flags, for_seed, parse_variant, run_record
    finally:
        sys.path.remove(str(BENCHMARKS))
    name, (method, sets) = parse_variant("cmil-ablation=cmil:agent.alpha=0,agent.real_critic_loss=false")
    assert (name, method) == ("cmil-ablation", "cmil")
    args = flags(sets)
    assert args == ["--agent.alpha", "0", "--agent.no-real-critic-loss"]
    assert for_seed(flags(["encoder_from=runs/x__bc__seed{seed}"]), 7) == ["--encoder-from", "runs/x__bc__seed7"]
    from cmil.cli import main

    run = tmp_path / "run"
    # compare_methods names its preset right after `train` (here the one of the long curves).
    assert main(["train", "--preset", "long", "--method", method, "--task", "point", "--dry-run", "--threads", "1", "--video-episodes", "0",
                 "--env-steps", "20", "--run-dir", str(run), *args]) == 0
    saved = (run / "config.yaml").read_text()
    assert "real_critic_loss: false" in saved and "alpha: 0.0" in saved
    # The summary knows how many episodes each evaluation had (for the constant-policy final / best reference).
    record = run_record(run)
    assert len(record["evaluation_episodes"]) == len(record["evaluations"]) >= 2
    assert record["evaluation_episodes"][-1] == record["episodes"]
    # ... and the run's own training episodes, binned by env step: every episode counted once.
    from cmil.data.episodes import load_episodes
    curve = record["training_episode_success"]
    assert sum(n for _, n, _ in curve) == len(load_episodes(run / "episodes")) and all(0 <= s <= 1 for *_, s in curve)


def test_closed_loop_error_relabels_with_the_expert(demos, tmp_path):
    from cmil.cli import main

    runs = []
    for method in ("bc", "cmil"):
        run = tmp_path / method
        assert main(["train", "--method", method, "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "20",
                     "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(run)]) == 0
        runs.append(str(run))
    out = tmp_path / "cle.json"
    _run("closed_loop_error.py", *runs, "--heldout", str(demos), "--episodes", "2", "--bin", "5", "--out", str(out))
    result = json.loads(out.read_text())
    assert [r["method"] for r in result["runs"]] == ["bc", "cmil"]
    for row in result["runs"]:
        assert 0.0 <= row["success"] <= 1.0 and row["closed_loop_error"] > 0 and row["teacher_forced_error"] > 0
        assert len(row["closed_loop_error_bins"]) >= 1 and len(row["closed_loop_error_per_dim"]) == 2
        # The overall error is a step-weighted mean of the bins' means, so it lies between them.
        assert min(row["teacher_forced_error_bins"]) <= row["teacher_forced_error"] <= max(row["teacher_forced_error_bins"])


def test_run_curves_bins_the_runs_own_episodes_and_reads_its_evaluations(tmp_path):
    import numpy as np

    from cmil.data.episodes import save_episode

    run = tmp_path / "run"
    (run / "episodes").mkdir(parents=True)
    # 6 episodes of 10 steps ending at 10, 20, ..., 60; an episode counts in the bin where it ends:
    # [0, 20): the first; [20, 40): the 2nd and 3rd; [40, 60): the 4th and 5th; [60, 80): the last.
    for i, ok in enumerate([1, 0, 0, 1, 1, 0]):
        rows = 11
        ep = {"image": np.zeros((rows, 8, 8, 3), np.uint8), "action": np.zeros((rows, 2), np.float32),
              "reward": np.zeros(rows, np.float32), "success": np.arange(rows) == (5 if ok else -1),
              "is_first": np.arange(rows) == 0, "is_last": np.arange(rows) == rows - 1,
              "is_terminal": np.zeros(rows, bool)}
        save_episode(run / "episodes", ep, name=f"ep{i:03d}.npz")
    rows = [{"env_step": 0, "eval/success_rate": 0.5}, {"env_step": 30, "disc/expert_prob": 0.6, "disc/policy_prob": 0.4},
            {"env_step": 60, "eval/success_rate": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "eval").mkdir()   # what `cmil eval RUN --episodes 100 --seed 30000` saves
    (run / "eval" / "eval_100ep_seed30000.json").write_text(json.dumps({"eval/success_rate": 0.41}))
    out = tmp_path / "curves.json"
    _run("run_curves.py", str(run), "--bin", "20", "--min-episodes", "2", "--out", str(out))
    summary = json.loads(out.read_text())["runs"][str(run)]
    bins = summary["training_episode_success"]  # the bins with fewer than 2 episodes are left out
    assert [(b["env_steps"], b["success"]) for b in bins] == [([20, 40], 0.0), ([40, 60], 1.0)]
    assert summary["evaluations"] == [[0, 0.5], [60, 0.25]] and summary["best_evaluation"] == 0.5
    assert summary["final"] is None  # still running: no final.json
    assert summary["disc_expert_policy_prob"] == [[30, 0.6, 0.4]]
    assert summary["saved_evaluations"] == {"eval_100ep_seed30000": 0.41}


def test_anchor_probe_scores_the_anchors_target_and_final_policy_on_the_same_placements(demos, tmp_path):
    from cmil.cli import main

    common = ["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "40",
              "--video-episodes", "0", "--demos", str(demos)]
    anchored, taught, plain = tmp_path / "anchored", tmp_path / "taught", tmp_path / "plain"
    assert main([*common, "--agent.anchor-weight", "10", "--agent.anchor-target", "pretrained",
                 "--wm.freeze-representation", "--run-dir", str(anchored)]) == 0
    assert main([*common, "--agent.anchor-weight", "10", "--agent.anchor-target", "bc", "--run-dir", str(taught)]) == 0
    assert main([*common, "--agent.anchor-weight", "0", "--run-dir", str(plain)]) == 0
    _run("anchor_probe.py", str(anchored), str(taught), "--episodes", "3", "--seed", "5", "--out", str(tmp_path / "p.json"))
    summary = json.loads((tmp_path / "p.json").read_text())
    for row, kind in zip(summary["runs"], ("pretrained", "teacher"), strict=True):
        assert row["reference"] == kind
        assert row["both"] + row[f"only_{kind}"] + row["only_final"] + row["neither"] == 3
        assert row[kind] == (row["both"] + row[f"only_{kind}"]) / 3 == summary[f"mean_{kind}"]
    # A run without the anchor (or without the frozen representation) has no reference policy to compare.
    with pytest.raises(AssertionError, match="needs agent.anchor_weight"):
        _run("anchor_probe.py", str(plain), "--episodes", "1")


def test_teacher_on_decoded_frames_compares_the_teachers_labels_on_real_and_decoded_frames(demos, tmp_path):
    from cmil.cli import main

    common = ["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "40",
              "--video-episodes", "0", "--demos", str(demos), "--agent.anchor-weight", "10"]
    taught, plain = tmp_path / "taught", tmp_path / "plain"
    assert main([*common, "--agent.anchor-target", "bc", "--run-dir", str(taught)]) == 0
    assert main([*common, "--agent.anchor-target", "pretrained", "--run-dir", str(plain)]) == 0
    _run("teacher_on_decoded_frames.py", str(taught), "--episodes", "2", "--out", str(tmp_path / "t.json"))
    (row,) = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert row["online_episodes"] >= 2
    for group in ("demos", "first_online"):
        cells = row[group]
        assert 0 < cells["pixel_error"] < 255  # an untrained decoder does not reproduce the frames
        assert cells["label_noise"] > 0 and cells["student_gap"] > 0
        assert set(cells["imagined_label_noise"]) == set(cells["imagined_student_gap"]) == {"1", "3", "5", "10"}
    with pytest.raises(AssertionError, match="no teacher"):
        _run("teacher_on_decoded_frames.py", str(plain), "--out", str(tmp_path / "u.json"))


def test_compare_methods_scores_final_policies_on_fresh_placements(demos, tmp_path):
    from cmil.cli import main

    root = tmp_path / "root"
    run = root / "point__bc__seed0"
    assert main(["train", "--method", "bc", "--task", "point", "--dry-run", "--threads", "1", "--video-episodes", "0",
                 "--demos", str(demos), "--run-dir", str(run)]) == 0
    summary = tmp_path / "summary.json"
    args = ["--task", "point", "--methods", "bc", "--seeds", "0", "--root", str(root), "--demos", str(demos),
            "--report-only", "--fresh", "3", "--fresh-seed", "7", "--json", str(summary)]
    _run("compare_methods.py", *args)
    scored = run / "eval" / "eval_3ep_seed7.json"
    entry = json.loads(summary.read_text())["methods"]["bc"]
    (record,) = entry["runs"]
    assert record["fresh_success"] == json.loads(scored.read_text())["eval/success_rate"]
    assert entry["fresh_placements"] == {"episodes": 3, "first_seed": 7}
    assert entry["mean_fresh_success"] == record["fresh_success"] and len(entry["fresh_ci95"]) == 2
    # A second report reads the saved evaluation instead of playing the episodes again.
    stamp = scored.stat().st_mtime_ns
    _run("compare_methods.py", *args)
    assert scored.stat().st_mtime_ns == stamp


def test_reward_direction_scores_each_signal_against_the_experts_relabel(demos, tmp_path):
    from cmil.cli import main

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import torch

        from reward_direction import direction, preference
    finally:
        sys.path.remove(str(BENCHMARKS))
    gap = torch.tensor([[0.5, -0.2], [0.01, 0.3]])
    assert direction(gap, gap) == {"cos": 1.0, "cos>0": 1.0, "towards_per_dim": [1.0, 1.0]}
    away = direction(-gap, gap, [1, 1])   # dimension 0 of state 2 (|gap| <= 0.05) has no direction to agree with
    assert away["cos"] == -1.0 and away["cos>0"] == 0.0 and away["towards_per_dim"] == [0.0, 0.0]
    assert away["cos_episodes_ci95"] == [-1.0, -1.0]   # over episodes of one state each
    # How often a score rates another action above the actor's: here where the other is higher in dimension 0.
    mean, other = torch.zeros(4, 2), torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.1, 0.9], [0.2, -0.9]])
    pref = preference(lambda act: act[:, 0], other, mean, [2, 2])
    assert pref["rate"] == 0.75 and pref["ci95"] == [0.5, 1.0]

    run = tmp_path / "run"
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "40",
                 "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(run)]) == 0
    out = tmp_path / "rd.json"
    _run("reward_direction.py", str(run), "--episodes", "4", "--fresh-steps", "3", "--out", str(out))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["states"] > 0 and 0.0 <= row["success"] <= 1.0 and len(row["mean_abs_gap_per_dim"]) == 2
    signals = [k for k in row if k.startswith(("run/", "fresh/"))]
    assert {"run/D", "run/Q", "run/penalty", "run/eq12_objective", "run/imagined rewards only"} <= set(signals)
    assert sum(k.startswith("fresh/") for k in signals) == 4
    for key in signals:
        assert -1.0 <= row[key]["cos"] <= 1.0 and len(row[key]["towards_per_dim"]) == 2, key
        low, high = row[key]["cos_episodes_ci95"]
        assert low <= row[key]["cos"] <= high, key


def test_continue_online_resumes_a_pretrained_copy_with_other_agent_settings(demos, tmp_path):
    from cmil.cli import main
    from cmil.config_io import load_config

    source = tmp_path / "pretrained"
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "0",
                 "--pretrain-updates", "0", "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(source)]) == 0
    before = sorted(p.name for p in (source / "checkpoints").iterdir())
    dest = tmp_path / "alpha0"
    _run("continue_online.py", str(source), str(dest), "--env-steps", "40", "--set", "agent.alpha=0", "--fresh", "1")
    cfg, src_cfg = load_config(dest / "config.yaml"), load_config(source / "config.yaml")
    assert (cfg.agent.alpha, cfg.env_steps, src_cfg.agent.alpha, src_cfg.env_steps) == (0.0, 40, src_cfg.agent.alpha, 0)
    assert json.loads((dest / "final.json").read_text())["env_steps"] > 0     # it went on online
    assert (dest / "eval" / "eval_1ep_seed30000.json").is_file()
    assert sorted(p.name for p in (source / "checkpoints").iterdir()) == before  # the source is untouched

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from continue_online import continue_online
    finally:
        sys.path.remove(str(BENCHMARKS))
    from cmil.errors import UsageError
    for field in ("wm.deter", "agent.bc_loss", "agent.actor_units"):   # the pretraining read these / the checkpoint
        with pytest.raises(UsageError, match="acts only online"):
            continue_online(source, tmp_path / "other", 40, {field: 8})
    with pytest.raises(UsageError, match="not a pretrain-only"):
        continue_online(dest, tmp_path / "again", 80, {})
    with pytest.raises(UsageError, match="exists"):
        continue_online(source, dest, 40, {})
    full = tmp_path / "full_pretraining"   # full updates in the pretraining: every agent field shaped it
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "0",
                 "--video-episodes", "0", "--demos", str(demos), "--run-dir", str(full)]) == 0
    with pytest.raises(UsageError, match="full updates"):
        continue_online(full, tmp_path / "other", 40, {"agent.alpha": 0.0})


def test_point_rl_sanity_scores_a_task_reward_run_against_reference_policies(tmp_path):
    from cmil.cli import main

    run = tmp_path / "run"
    assert main(["train", "--method", "vmail", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "90",
                 "--video-episodes", "0", "--agent.reward", "env", "--run-dir", str(run)]) == 0
    _run("point_rl_sanity.py", str(run), "--references", "3", "--mlp-steps", "5", "--random-episodes", "4",
         "--out", str(tmp_path / "s.json"))
    result = json.loads((tmp_path / "s.json").read_text())
    refs = result["references"]
    assert refs["expert"]["success"] == 1.0 and refs["expert"]["return"] > refs["zero"]["return"]
    (row,) = result["rows"]
    assert set(row["r2"]) == {"point", "goal", "reward"} and "run_head" in row["r2"]["reward"]
    assert all(v <= 1 for cell in row["r2"].values() for v in cell.values())
    assert row["evaluations"] and row["model_kl_last"] is not None
    assert set(row["best_action"]) == {"truth", "q_min", "reward_head"} and row["best_action"]["truth"]["true_best"] == 1.0
    assert all(1 / 9 <= v["most_common_share"] <= 1 for v in row["best_action"].values())
    for key in ("imagined_response", "imagined_response_held", "imagined_response_random"):
        assert set(row[key]) == {"probe_r2", "displacement_r2", "action_part_r2", "action_part_slope",
                                 "action_part_cos"} and -1 <= row[key]["action_part_cos"] <= 1
    assert set(row["cos_to_goal"]) == {"actor_mean", "q_min", "reward_head"}
    paths = row["one_step_paths"]
    assert set(paths) == {"value_path", "reward_head", "value_corr_with_minus_distance"}
    assert all(p["norm"] >= 0 and -1 <= p["cos_to_goal"] <= 1 for k, p in paths.items() if k != "value_corr_with_minus_distance")
    assert -1 <= paths["value_corr_with_minus_distance"] <= 1
    assert all(-1 <= v <= 1 for v in row["cos_to_goal"].values())


def test_latent_probe_trains_the_world_model_alone_and_probes_each_reading(tmp_path):
    _run("latent_probe.py", "--updates", "4", "--every", "2", "--episodes", "2", "--heldout", "2", "--mlp-steps", "3", "--set", "batch_size=2",
         "--set", "wm.recon_focus_weight=10", "--set", "wm.recon_focus=foreground", "--out", str(tmp_path), "--name", "tiny")
    result = json.loads((tmp_path / "latent_probe_tiny.json").read_text())
    assert result["overrides"] == {"batch_size": "2", "wm.recon_focus_weight": "10",
                                      "wm.recon_focus": "foreground"}
    assert [row["updates"] for row in result["rows"]] == [2, 4]
    for row in result["rows"]:
        assert set(row["r2"]) == {"stoch", "deter", "agent"} | ({"agent_mlp"} if row["updates"] == 4 else set()) and all(set(r) == {"point", "goal"} for r in row["r2"].values())
        assert min(row["recon_mse"], row["recon_mse_change"], row["recon_mse_foreground"]) > 0 and row["kl_raw"] >= 0
        assert all(-1 <= row[key]["action_part_cos"] <= 1 for key in ("imagined_response", "imagined_response_held"))


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs Meta-World")
def test_state_and_reward_probes_read_a_meta_world_run(tmp_path):
    from cmil.cli import main

    run = tmp_path / "run"
    assert main(["train", "--method", "cmil", "--task", "mw-push", "--dry-run", "--threads", "1", "--env-steps", "300",
                 "--video-episodes", "0", "--agent.reward", "env", "--run-dir", str(run)]) == 0
    _run("state_probe.py", str(run), "--steps", "20", "--out", str(tmp_path / "state.json"))
    (row,) = json.loads((tmp_path / "state.json").read_text())["rows"]
    for split in ("demos_to_online", "with_online", "demos_cross"):
        assert set(row[split]) == {"hand", "puck", "goal", "puck_from_hand", "puck_from_goal"}
        assert all(cell["ridge"] <= 1 and cell["mlp"] <= 1 for cell in row[split].values())
    # the `default`'s feature, then with h_t; one imagined step, then the action held for five
    assert [(hand["feat_form"], hand["steps"]) for hand in row["hand_response"]] == [
        ("stoch", 1), ("stoch", 5), ("mean", 1), ("mean", 5)]
    for hand in row["hand_response"]:
        assert -1 <= hand["action_part_cos"] <= 1 and len(hand["env_gain_diag"]) == 3 and hand["env_linear_r2"] <= 1
    _run("self_imitation_probe.py", str(run), "--steps", "20", "--out", str(tmp_path / "si.json"))
    (row,) = json.loads((tmp_path / "si.json").read_text())["rows"]
    assert row["fresh_reward_r2"] <= 1 and row["reward_head_r2_online"] <= 1 and row["reward_head_r2_demos"] <= 1
    assert "run_reward_head" in row["scores"]


def _fake_run(run_dir: Path, seed: int, evals: list[float], fresh: float, episodes: list[bool] | None = None) -> None:
    """A finished `cmil train` run directory as compare_methods reads it, with a fresh-placement score (and, given
    `episodes`, each fresh episode's success, as `cmil eval` saves them)."""
    from cmil.launch import eval_result_path

    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "final.json").write_text(json.dumps({"seed": seed, "success_rate": evals[-1], "return": 1.0,
                                                    "episodes": 20, "wall_time_s": 10.0}))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"env_step": 1000 * i, "eval/success_rate": s, "train/x": float(i)}) + "\n" for i, s in enumerate(evals)))
    (run_dir / "config.yaml").write_text("eval_episodes: 20\neval_every: 1000\n")
    saved = {"eval/success_rate": fresh}
    if episodes is not None:
        saved["episodes"] = [{"seed": 30_000 + i, "success": ok, "return": 0.0, "length": 100}
                             for i, ok in enumerate(episodes)]
    eval_result_path(run_dir, 100, 30_000).write_text(json.dumps(saved))
    (run_dir.parent / f"{run_dir.name}.commit").write_text("abc1234\n")


def test_paired_runs_pairs_each_seed_with_the_baseline(tmp_path):
    """A run-directory source against a compare_methods summary: per-seed differences on the fresh placements."""
    _fake_run(tmp_path / "new_s0", 0, [0.3, 0.5, 0.6], 0.62)
    _fake_run(tmp_path / "new_s1", 1, [0.3, 0.4, 0.4], 0.50)
    summary = tmp_path / "summary.json"
    runs = [{"seed": s, "final_success": f, "evaluations": [[0, 0.3], [1000, f]], "best_evaluation": f,
             "evaluation_episodes": [20, 20], "pretrained_success": 0.3, "fresh_success": fr, "commit": "0000000"}
            for s, f, fr in ((0, 0.5, 0.55), (1, 0.5, 0.56), (2, 0.9, 0.9))]
    summary.write_text(json.dumps({"methods": {"cmil": {
        "runs": runs, "fresh_placements": {"episodes": 100, "first_seed": 30_000}}}}))
    out = tmp_path / "paired.json"
    _run("paired_runs.py", "--source", f"old={summary}:cmil", "--source", f"new={tmp_path}/new_s{{seed}}",
         "--seeds", "0", "1", "--metric", "train/x", "--json", str(out))
    new = json.loads(out.read_text())["sources_summary"]["new"]
    assert new["last_third"] == [{"train/x": 2.0}, {"train/x": 2.0}]  # rows after 2/3 of 2,000 env steps: step 2,000
    assert new["per_seed_fresh"] == [0.62, 0.50] and new["commits"] == ["abc1234"]
    paired = new["paired_fresh_vs_old"]
    assert paired["per_seed"] == pytest.approx([0.07, -0.06]) and paired["mean"] == pytest.approx(0.005)
    assert paired["ci95"][0] <= paired["mean"] <= paired["ci95"][1]
    assert new["paired_final_vs_old"]["per_seed"] == pytest.approx([0.1, -0.1])
    assert new["pretrained"] == pytest.approx(0.3)
    assert "placements_vs_old" not in new   # the summary has no per-episode record
    # Two run directories with each fresh episode saved: placement by placement, seed by seed.
    _fake_run(tmp_path / "a_s0", 0, [0.5], 0.5, [True, True, False, False])
    _fake_run(tmp_path / "b_s0", 0, [0.5], 0.5, [True, False, True, False])
    _run("paired_runs.py", "--source", f"a={tmp_path}/a_s{{seed}}", "--source", f"b={tmp_path}/b_s{{seed}}",
         "--seeds", "0", "--fresh", "100", "--json", str(out))
    overlap = json.loads(out.read_text())["sources_summary"]["b"]["placements_vs_a"]
    assert overlap == {"both": 0.25, "neither": 0.25, "only_this": 0.25, "only_against": 0.25, "same_outcome": 0.5}
    # A summary scored on other placements is not paired on them.
    _run("paired_runs.py", "--source", f"old={summary}:cmil", "--source", f"new={tmp_path}/new_s{{seed}}",
         "--seeds", "0", "1", "--fresh", "50", "--json", str(out))
    assert "paired_fresh_vs_old" not in json.loads(out.read_text())["sources_summary"]["new"]


def test_placement_coverage_relates_who_solves_a_placement_to_its_distance_from_the_demos():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from placement_coverage import coverage
    finally:
        sys.path.remove(str(BENCHMARKS))
    # Four placements whose object lies 0, 0.1, 0.2 and 0.3 from the one demo's; the nearer, the more runs solve it.
    state = np.zeros((4, 39))
    state[:, 4] = [0.0, 0.1, 0.2, 0.3]
    state[:, 36] = [0.1, 0.0, 0.1, 0.0]   # the goal's distance has nothing to do with it
    demo = np.zeros((1, 39))
    outcomes = {"a": np.array([True, True, False, False]), "b": np.array([True, False, False, False])}
    out = coverage(outcomes, state, demo)
    assert out["runs"] == {"a": 0.5, "b": 0.25}
    assert out["runs_near_far"] == {"a": {"near": 1.0, "far": 0.0}, "b": {"near": 0.5, "far": 0.0}}
    assert out["pairs"] == [{"runs": ["a", "b"], "same_outcome": 0.75, "if_independent": 0.5}]
    assert out["solved_by_all"] == 0.25 and out["solved_by_none"] == 0.5
    near = out["object_to_nearest_demo"]
    assert near["corr_with_solved_fraction"] < -0.9
    assert near["mean_where_none_solve"] == pytest.approx(0.25) and near["mean_where_all_solve"] == 0.0
    assert out["goal_to_nearest_demo"]["corr_with_solved_fraction"] == pytest.approx(0.3015, abs=1e-4)
    assert out["goal_y_corr_with_solved_fraction"] is None   # no spread in y
    assert [p["solved_fraction"] for p in out["placements"]] == [1.0, 0.5, 0.0, 0.0]


def test_policy_ensemble_acts_with_the_members_mean_action():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from policy_ensemble import MeanPolicy
    finally:
        sys.path.remove(str(BENCHMARKS))

    class Fixed:
        def __init__(self, action):
            self.action, self.resets = np.array(action), 0

        def reset(self):
            self.resets += 1

        def act(self, obs, deterministic=True):
            assert obs.shape == (2, 2) and deterministic
            return self.action

    members = [Fixed([0.2, 1.0]), Fixed([0.6, 1.0]), Fixed([-0.2, 1.9])]
    policy = MeanPolicy(members)
    np.testing.assert_allclose(policy.act(np.zeros((2, 2))), [0.2, 1.0])   # the mean, clipped to the action box
    policy.reset()
    assert [m.resets for m in members] == [1, 1, 1]


def test_policy_ensemble_takes_a_bc_members_run_apart():
    import torch

    from cmil.config import Config, replace
    from cmil.methods.bc import BC

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from policy_ensemble import member_policies
    finally:
        sys.path.remove(str(BENCHMARKS))
    cfg = replace(Config(), method="bc", **{"bc.members": 2, "bc.cnn_depth": 4, "bc.units": 8})
    bc = BC(cfg, 2, torch.device("cpu"))
    obs = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    members = member_policies(bc)
    with torch.no_grad():
        acts = [torch.as_tensor(p.act(obs)) for p in members]
        for act, net in zip(acts, bc.net.members, strict=True):   # each member alone
            torch.testing.assert_close(act, net(torch.as_tensor(obs)[None])[0])
        torch.testing.assert_close(torch.stack(acts).mean(0), bc.net(torch.as_tensor(obs)[None])[0])
    with pytest.raises(SystemExit, match="bc.members"):
        member_policies(BC(replace(cfg, **{"bc.members": 1}), 2, torch.device("cpu")))
