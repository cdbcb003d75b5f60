"""End-to-end CLI runs on the tiny point task: dry runs of every method, resume, eval, config."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmil.cli import main
from cmil.runs import read_metrics


def _train(tmp_path: Path, method: str, *extra: str) -> Path:
    run = tmp_path / f"run_{method}"
    assert main(["train", "--method", method, "--task", "point", "--dry-run", "--run-dir", str(run), *extra]) == 0
    return run


@pytest.mark.parametrize("method", ["bc", "cmil", "vmail"])
def test_dry_run_writes_a_complete_run_dir(tmp_path, method, capsys):
    run = _train(tmp_path, method)
    out = capsys.readouterr().out
    assert "success rate" in out
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == method and cfg["dry_run"] is True
    final = json.loads((run / "final.json").read_text())
    assert 0.0 <= final["success_rate"] <= 1.0
    assert isinstance(final["commit"], str) and final["commit"]  # short hash, '-dirty' or 'unknown'
    assert list((run / "checkpoints").glob("step_*.pt"))
    assert (run / "model.safetensors").stat().st_size > 0
    assert list((run / "videos").glob("*.mp4"))
    assert list(run.glob("events.out.tfevents.*"))
    rows = read_metrics(run)
    assert any("eval/success_rate" in r for r in rows)
    if method == "vmail":
        assert cfg["agent"]["alpha"] == 0.0 and cfg["agent"]["beta"] == 0.0 and cfg["pretrain_updates"] == 0
        # No behaviour cloning of any kind: neither in the actor nor shaping the world model.
        assert cfg["agent"]["bc_model_weight"] == 0.0 and cfg["agent"]["bc_action_noise"] == 0.0


@pytest.mark.parametrize("seed_actions", ["policy", "random"])
def test_seed_actions_decide_who_acts_in_the_seed_episodes(tmp_path, monkeypatch, seed_actions):
    from cmil.models.latent_policy import LatentPolicy

    sampled = []  # the policy's stochastic (training) actions; evaluation acts deterministically
    original = LatentPolicy.act

    def counting_act(self, obs, deterministic):
        action = original(self, obs, deterministic)
        if not deterministic:
            sampled.append(action)
        return action

    monkeypatch.setattr(LatentPolicy, "act", counting_act)
    run = _train(tmp_path, "cmil", "--seed-steps", "60", "--seed-actions", seed_actions)
    final = json.loads((run / "final.json").read_text())
    episodes = sorted((run / "episodes").glob("ep*.npz"))
    seeded = sum(len(np.load(e)["action"]) - 1 for e in episodes[:2])  # point's 30-step episodes: two seed ones
    assert seeded == 60
    assert len(sampled) == final["env_steps"] - (seeded if seed_actions == "random" else 0)
    seed_actions_taken = np.concatenate([np.load(e)["action"][1:] for e in episodes[:2]])
    assert np.all(np.abs(seed_actions_taken) <= 1.0) and seed_actions_taken.std() > 0.3


def test_cmil_logs_discriminator_and_bound_diagnostics(tmp_path):
    run = _train(tmp_path, "cmil")
    evals = [r for r in read_metrics(run) if "eval/success_rate" in r]
    for key in ("disc/expert_acc", "disc/policy_acc", "disc/expert_prob", "disc/policy_prob",
                "bound/distribution_match", "bound/model_mismatch", "bound/oracle_success_gap"):
        assert any(key in r for r in evals), key


def test_rerun_resumes_and_finished_run_is_not_retrained(tmp_path, capsys):
    run = _train(tmp_path, "cmil")
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    episodes = len(list((run / "episodes").glob("*.npz")))
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--run-dir", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert sorted((run / "checkpoints").glob("step_*.pt")) == ckpts
    # Extending the budget resumes from the last checkpoint with the same counters.
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--run-dir", str(run),
                 "--env-steps", "70"]) == 0
    final = json.loads((run / "final.json").read_text())
    assert final["env_steps"] >= 70 + 20
    assert len(list((run / "episodes").glob("*.npz"))) > episodes


def test_conflicting_override_on_resume_is_an_error(tmp_path, capsys):
    run = _train(tmp_path, "bc")
    capsys.readouterr()
    argv = ["train", "--method", "bc", "--task", "point", "--dry-run", "--run-dir", str(run)]
    assert main([*argv, "--agent.alpha", "3", "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "agent.alpha: run has 10.0, command asks 3.0" in err and "seed: run has 0" in err
    assert len(err.splitlines()) == 1
    # The method is a learning setting too, and an override equal to the preset's value still counts.
    assert main([*argv[:2], "cmil", *argv[3:]]) == 2
    assert "method: run has 'bc'" in capsys.readouterr().err
    # Steering fields may change: a longer budget or more final-evaluation episodes resume the run.
    assert main([*argv, "--final-eval-episodes", "2", "--env-steps", "41"]) == 0


def test_eval_command_is_read_only_and_works_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no demos/point here: the dry run collects its demos into the run (removed below)
    run = _train(tmp_path, "bc")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(run), "--episodes", "2", "--video-episodes", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval/episodes"] == 2.0 and metrics["eval/expert_success_rate"] == 1.0
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert {p: t for p, t in after.items() if p in before} == before  # nothing rewritten
    new = sorted(p.relative_to(run).as_posix() for p in set(after) - set(before))
    assert new == ["eval", "eval/eval_2ep_seed20000.json", "eval/videos", "eval/videos/eval_2ep_seed20000_ep0.mp4"]
    # The saved result keeps each episode, placement by placement, consistent with the rate.
    saved = json.loads((run / "eval" / "eval_2ep_seed20000.json").read_text())
    assert [ep["seed"] for ep in saved["episodes"]] == [20000, 20001]
    assert np.mean([ep["success"] for ep in saved["episodes"]]) == saved["eval/success_rate"]
    assert np.mean([ep["return"] for ep in saved["episodes"]]) == pytest.approx(saved["eval/return"])
    assert list(elsewhere.iterdir()) == []
    # Neither the demos nor the replay are needed.
    import shutil

    shutil.rmtree(run / "demos")
    assert main(["eval", str(run), "--episodes", "1", "--video-episodes", "0"]) == 0


def test_missing_demos_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--method", "bc", "--task", "point", "--demos", str(tmp_path / "none"),
                 "--run-dir", str(tmp_path / "r")]) == 2
    assert "no demos at" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_demos_collect_and_show(tmp_path, capsys):
    out = tmp_path / "demos"
    assert main(["demos", "collect", "--task", "point", "--episodes", "3", "--out", str(out)]) == 0
    stats = json.loads((out / "expert_stats.json").read_text())
    assert stats["episodes"] == 3 and stats["success_rate"] > 0.5
    assert main(["demos", "show", str(out)]) == 0
    assert (out / "contact_sheet.png").exists()
    # Collecting into a directory that already holds episodes is refused.
    assert main(["demos", "collect", "--task", "point", "--episodes", "1", "--out", str(out)]) != 0


def test_train_help_lists_field_docs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--agent.alpha" in out and "disagreement penalty" in out


def test_main_job_dry_run(tmp_path, monkeypatch, capsys):
    """The README's main command end to end (demo collection, CMIL, final line), shrunk by --dry-run."""
    monkeypatch.chdir(tmp_path)
    assert main(["main", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cmil on mw-push: success rate" in out and "(expert 1.00)" in out
    assert len(list((tmp_path / "demos" / "mw-push").glob("*.npz"))) == 10
    assert (tmp_path / "runs" / "main__mw-push__cmil__seed0" / "final.json").exists()


def test_encoder_from_a_bc_run_starts_the_world_models_encoder_there(tmp_path, capsys):
    import torch

    from cmil.config import replace
    from cmil.errors import UsageError
    from cmil.launch import load_bc_encoder
    from cmil.methods.base import make_method
    from cmil.presets import PRESETS, dry_run_config
    from cmil.runs import Checkpointer

    bc = _train(tmp_path, "bc", "--video-episodes", "0")
    encoder = {k: v for k, v in Checkpointer(bc).load_latest(print)[1]["modules"]["policy"].items()
               if k.startswith("encoder.")}
    cfg = replace(dry_run_config(PRESETS["default"]), task="point", method="cmil")
    method = make_method(cfg, 2, torch.device("cpu"))
    assert not torch.equal(method.wm.encoder.state_dict()["net.0.weight"], encoder["encoder.net.0.weight"])
    load_bc_encoder(method, bc, quiet=True)
    for key, value in method.wm.encoder.state_dict().items():
        assert torch.equal(value, encoder[f"encoder.{key}"]), key
    # Through the CLI: the run says so and saves the BC run's absolute path in its config.
    cmil = _train(tmp_path, "cmil", "--video-episodes", "0", "--encoder-from", str(bc))
    assert "encoder initialised from" in capsys.readouterr().out
    assert yaml.safe_load((cmil / "config.yaml").read_text())["encoder_from"] == str(bc.resolve())
    # A wider encoder than the BC run's, or a run that is not BC, is a clear error.
    with pytest.raises(UsageError, match="does not fit"):
        load_bc_encoder(make_method(replace(cfg, **{"wm.encoder_depth": 8}), 2, torch.device("cpu")), bc, quiet=True)
    with pytest.raises(UsageError, match="needs a `bc` run"):
        load_bc_encoder(method, cmil, quiet=True)


def test_anchor_from_a_bc_run_makes_its_policy_the_frozen_anchor_teacher(tmp_path, capsys):
    import torch

    from cmil.runs import Checkpointer

    bc = _train(tmp_path, "bc", "--video-episodes", "0")
    policy = Checkpointer(bc).load_latest(print)[1]["modules"]["policy"]
    cmil = _train(tmp_path, "cmil", "--video-episodes", "0", "--anchor-from", str(bc), "--agent.anchor-weight", "10",
                  "--agent.anchor-target", "bc")
    assert "anchor's teacher policy loaded from" in capsys.readouterr().out
    assert yaml.safe_load((cmil / "config.yaml").read_text())["anchor_from"] == str(bc.resolve())
    saved = Checkpointer(cmil).load_latest(print)[1]["modules"]
    assert "anchor_teacher" in saved and "anchor_actor" not in saved
    for key, value in policy.items():  # loaded, checkpointed, and never trained by the run's updates
        assert torch.equal(saved["anchor_teacher"][key], value), key
    # Without a teacher to load into (no anchor, or the pretrained actor as its target), or from a run that is not
    # BC, it is a clear error.
    common = ["train", "--method", "cmil", "--task", "point", "--dry-run"]
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--anchor-from", str(bc), "--agent.anchor-weight", "0"]) != 0
    assert "agent.anchor_weight > 0" in capsys.readouterr().err
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--anchor-from", str(bc),
                 "--agent.anchor-target", "pretrained"]) != 0
    assert "needs method cmil and agent.anchor_target 'bc'" in capsys.readouterr().err
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--anchor-from", str(cmil), "--agent.anchor-weight", "1",
                 "--agent.anchor-target", "bc"]) != 0
    assert "needs a `bc` run" in capsys.readouterr().err
    # A teacher of another encoder than the BC run's (bc.encoder) does not fit, and the error names the field.
    assert main([*common, "--run-dir", str(tmp_path / "c"), "--anchor-from", str(bc), "--agent.anchor-weight", "1",
                 "--agent.anchor-target", "bc", "--bc.encoder", "keypoints"]) != 0
    assert "bc.encoder" in capsys.readouterr().err


def test_anchor_from_a_bc_ensemble_run_needs_the_same_bc_members(tmp_path, capsys):
    bc = _train(tmp_path, "bc", "--video-episodes", "0", "--bc.members", "2")
    common = ["train", "--method", "cmil", "--task", "point", "--dry-run", "--video-episodes", "0", "--anchor-from",
              str(bc), "--agent.anchor-weight", "1", "--agent.anchor-target", "bc"]
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--bc.members", "2"]) == 0
    assert "anchor's teacher policy loaded from" in capsys.readouterr().out
    assert main([*common, "--run-dir", str(tmp_path / "b")]) != 0
    assert "bc.members" in capsys.readouterr().err
    # An ensemble has no single encoder to start the world model's from.
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--run-dir", str(tmp_path / "c"),
                 "--encoder-from", str(bc)]) != 0
    assert "bc.members" in capsys.readouterr().err
