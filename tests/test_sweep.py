"""`cmil sweep`: grid construction, skip/resume/conflict logic, and real sweeps on a local Ray instance."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from cmil.cli import main
from cmil.config_io import save_config
from cmil.sweep import build_trials, existing_state, load_grid, overruled_notes, parse_set, slug


def _trials(tmp_path, **kw):
    args = {"tasks": ["point"], "methods": ["bc", "vmail"], "seeds": [0, 1], "overrides": {"agent.alpha": 5},
            "variants": [{}], "preset": "default", "dry_run": False, "root": tmp_path,
            "demos": str(tmp_path / "demos/{task}"), "num_cpus": 1, "num_gpus": 0}
    return build_trials(**{**args, **kw})


def test_grid_points_have_deterministic_names_and_resolved_configs(tmp_path):
    trials = _trials(tmp_path)
    assert [t["name"] for t in trials] == [
        "point__bc__agent.alpha=5.0__seed0", "point__bc__agent.alpha=5.0__seed1",
        "point__vmail__agent.alpha=5.0__seed0", "point__vmail__agent.alpha=5.0__seed1"]
    assert [t["name"] for t in _trials(tmp_path)] == [t["name"] for t in trials]
    bc, vmail = trials[0]["config"], trials[2]["config"]
    assert bc["agent"]["alpha"] == 5.0 and isinstance(bc["agent"]["alpha"], float)
    assert vmail["agent"]["alpha"] == 0.0  # the method's own settings apply, as in `cmil train`
    assert trials[0]["overruled"] == {} and trials[2]["overruled"] == {"agent.alpha": 0.0}  # and say so
    assert overruled_notes(trials) == ["sweep: vmail keeps agent.alpha=0.0, a setting of the method "
                                       "(presets.METHOD_OVERRIDES), over the grid's value"]
    assert bc["demos"] == str((tmp_path / "demos/point").resolve()) and bc["threads"] == 1
    assert Path(trials[1]["run_dir"]) == (tmp_path / trials[1]["name"]).resolve()
    dry = _trials(tmp_path, dry_run=True, overrides={}, variants=[{}, {"agent.beta": 0}])
    assert dry[0]["name"] == "point__bc__dry__seed0" and dry[2]["name"] == "point__bc__dry+agent.beta=0.0__seed0"
    assert dry[0]["config"]["batch_size"] == 2  # shrunk by the dry-run preset
    assert dry[0]["config"]["demos"] == str(Path(dry[0]["run_dir"]) / "demos")  # no demos yet: collected there
    assert len(slug({f"agent.field{i}": i for i in range(20)}, False, "default")) < 90


def test_bad_grids_are_rejected_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown config fields"):
        _trials(tmp_path, overrides={"agent.alhpa": 1})
    with pytest.raises(ValueError, match="duplicate"):
        _trials(tmp_path, seeds=[0, 0])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["alpha"])
    assert parse_set(["agent.alpha=5", "dry_run=true", "demos=d/x"]) == {"agent.alpha": 5, "dry_run": True,
                                                                          "demos": "d/x"}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"tasks": ["point"], "sedes": [1]}))
    with pytest.raises(ValueError, match="sedes"):
        load_grid(str(grid))
    assert main(["sweep", "--tasks", "point", "--methods", "bc", "--set", "agent.nope=1",
                 "--root", str(tmp_path / "r")]) == 2


def test_existing_run_states(tmp_path):
    from cmil.config import replace
    from cmil.config_io import from_dict

    spec = _trials(tmp_path)[0]
    run_dir, cfg = Path(spec["run_dir"]), spec["config"]
    assert existing_state(cfg, run_dir)[0] == "new"
    run_dir.mkdir(parents=True)
    save_config(from_dict(cfg), run_dir / "config.yaml")
    assert existing_state(cfg, run_dir)[0] == "resume"
    (run_dir / "final.json").write_text(json.dumps({"target_env_steps": cfg["env_steps"], "success_rate": 1.0}))
    assert existing_state(cfg, run_dir)[0] == "finished"
    # A longer budget resumes the finished run; a changed learning setting is a conflict.
    assert existing_state({**cfg, "env_steps": cfg["env_steps"] + 1}, run_dir)[0] == "resume"
    save_config(replace(from_dict(cfg), **{"agent.beta": 1.0}), run_dir / "config.yaml")
    state, detail = existing_state(cfg, run_dir)
    assert state == "conflict" and "agent.beta" in detail


def test_without_ray_the_command_explains_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["sweep", "--tasks", "point", "--methods", "bc", "--root", str(tmp_path)]) != 0
    assert "pip install 'cmil[sweep]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _statuses(root: Path) -> dict[str, str]:
    return {r["name"]: r["status"] for r in json.loads((root / "sweep.json").read_text())}


def test_sweep_runs_trials_then_skips_them_on_rerun(ray_local, tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", "--tasks", "point", "--methods", "bc", "--seeds", "0", "1", "--dry-run", "--root", str(root)]
    assert main(argv) == 0
    names = ["point__bc__dry__seed0", "point__bc__dry__seed1"]
    assert _statuses(root) == {n: "done" for n in names}
    finals = {n: (root / n / "final.json").read_text() for n in names}
    assert all(json.loads(f)["seed"] == i for i, f in enumerate(finals.values()))
    assert (root / "summary" / "results.md").exists() and (root / "summary" / "success_rate.png").exists()
    out = capsys.readouterr().out
    assert "2 done, 0 skipped" in out and "| point | bc | 2 (2) |" in out
    assert main(argv) == 0
    assert _statuses(root) == {n: "skipped" for n in names}
    assert {n: (root / n / "final.json").read_text() for n in names} == finals  # not retrained
    assert "0 done, 2 skipped" in capsys.readouterr().out


def test_a_failing_trial_is_reported_and_does_not_stop_the_others(ray_local, tmp_path, capsys):
    root = tmp_path / "sweep"
    stray = root / "point__bc__dry__seed1" / "notes.txt"  # not a run: that trial must refuse to touch it
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    rc = main(["sweep", "--tasks", "point", "--methods", "bc", "--seeds", "0", "1", "--dry-run", "--root", str(root),
               "--no-plot"])
    assert rc == 1
    assert _statuses(root) == {"point__bc__dry__seed0": "done", "point__bc__dry__seed1": "failed"}
    failed = json.loads((root / "sweep.json").read_text())[1]
    assert "is not a run (no config.yaml)" in failed["error"]
    assert sorted(p.name for p in stray.parent.iterdir()) == ["notes.txt"]  # no error.txt written into it
    out = capsys.readouterr().out
    assert "FAILED   point__bc__dry__seed1" in out and "1 done, 0 skipped (already finished), 1 failed" in out


def test_unknown_task_or_method_fails_the_sweep_before_anything_runs(tmp_path, capsys):
    pytest.importorskip("ray")
    for argv in (["--tasks", "no-such-task", "point", "--methods", "bc"], ["--tasks", "point", "--methods", "bcc"]):
        assert main(["sweep", *argv, "--dry-run", "--root", str(tmp_path / "r")]) == 2
        assert capsys.readouterr().err.startswith("error: unknown ")
    assert not (tmp_path / "r").exists()
