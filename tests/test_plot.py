"""Bootstrap statistics and `cmil plot` on synthetic run directories with known numbers."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmil.cli import main
from cmil.plot import common_curves, find_run_dirs, group_runs, load_run, report
from cmil.stats import (
    bootstrap_band,
    bootstrap_ci,
    bootstrap_means,
    final_over_best_if_constant,
    first_crossing,
)


def test_bootstrap_ci_hand_computed_cases():
    # Two seeds {0, 1}: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % percentiles are exactly 0 and 1.
    ci = bootstrap_ci([0.0, 1.0])
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.5, 0.0, 1.0, 2)
    # The resampled means of {0, 1} hit 0.5 about half the time.
    means = bootstrap_means(np.array([0.0, 1.0]), n_resamples=20_000)
    assert abs(np.mean(means == 0.5) - 0.5) < 0.02
    # One seed: no spread to resample.
    ci = bootstrap_ci([0.7])
    assert (ci.low, ci.high) == (0.7, 0.7)


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(3).normal(0.5, 0.2, size=8)
    ours = bootstrap_ci(values, n_resamples=50_000)
    ref = stats.bootstrap((values,), np.mean, n_resamples=50_000, method="percentile",
                          confidence_level=0.95, random_state=1).confidence_interval
    sem = values.std(ddof=1) / math.sqrt(len(values))
    # Two Monte Carlo estimates of the same percentiles: agree to a few hundredths of a standard error.
    assert abs(ours.low - ref.low) < 0.05 * sem and abs(ours.high - ref.high) < 0.05 * sem
    assert ours.low < values.mean() < ours.high


def test_bootstrap_band_resamples_whole_seeds_and_matches_pointwise_ci():
    curves = np.array([[0.0, 0.1, 0.5], [0.2, 0.3, 0.9], [0.1, 0.6, 1.0], [0.0, 0.2, 0.4]])
    mean, low, high = bootstrap_band(curves)
    np.testing.assert_allclose(mean, curves.mean(0))
    for j in range(curves.shape[1]):  # the same resampled seeds at every point
        ci = bootstrap_ci(curves[:, j])
        assert (low[j], high[j]) == (ci.low, ci.high)
    _, low, high = bootstrap_band(np.ones((3, 5)))
    assert np.all(low == 1) and np.all(high == 1)


def test_first_crossing():
    x = np.array([0.0, 10.0, 20.0])
    assert first_crossing(x, np.array([0.1, 0.9, 0.95]), 0.9) == 10.0
    assert first_crossing(x, np.array([0.1, 0.2, 0.3]), 0.9) is None


def write_run(root: Path, name: str, method: str, seed: int, evals: list[tuple[int, float]],
              final: float | None, expert: float = 0.8, **config) -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = {"task": "point", "method": method, "seed": seed, "agent": {"alpha": config.pop("alpha", 10.0)}, **config}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"env_step": 0, "wall_time": 0.1, "train/loss": 1.0}]  # rows without eval keys are ignored
    rows += [{"env_step": s, "wall_time": 1.0, "eval/success_rate": v, "eval/return": 10 * v,
              "eval/expert_success_rate": expert} for s, v in evals]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if final is not None:
        steps = evals[-1][0]
        (run / "final.json").write_text(json.dumps({"success_rate": final, "return": 10 * final,
                                                    "expert_success_rate": expert, "env_steps": steps}))
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    # Three CMIL seeds evaluated at different steps; their common range is [1500, 3000].
    write_run(root, "a", "cmil", 0, [(1000, 0.2), (2000, 0.6), (3000, 1.0)], final=0.9)
    write_run(root, "b", "cmil", 1, [(1000, 0.4), (2000, 0.8), (3000, 1.0)], final=0.8)
    write_run(root, "c", "cmil", 2, [(1500, 0.3), (2500, 0.7), (3000, 1.0)], final=None)  # unfinished
    # DAC: never reaches the expert.
    write_run(root, "d", "dac", 0, [(1000, 0.0), (3000, 0.2)], final=0.2)
    write_run(root, "e", "dac", 1, [(1000, 0.1), (3000, 0.3)], final=0.4)
    # BC trains offline: a single evaluation at step 0.
    write_run(root, "f", "bc", 0, [(0, 0.7)], final=0.7)
    write_run(root, "g", "bc", 1, [(0, 0.9)], final=0.9)
    # Another CMIL variant (different alpha) must form its own group.
    write_run(root, "h", "cmil", 0, [(1000, 0.1), (3000, 0.5)], final=0.5, alpha=5.0)
    (root / "not_a_run").mkdir()
    return root


def test_common_grid_interpolates_onto_the_shared_range(runs):
    groups = {g.label: g for g in group_runs([load_run(p) for p in find_run_dirs([runs])])}
    assert set(groups) == {"cmil [agent.alpha=10.0]", "cmil [agent.alpha=5.0]", "dac", "bc"}
    grid, values = common_curves(groups["cmil [agent.alpha=10.0]"].runs, "eval/success_rate")
    np.testing.assert_array_equal(grid, [1500, 2000, 2500, 3000])
    np.testing.assert_allclose(values.mean(0), [(0.4 + 0.6 + 0.3) / 3, (0.6 + 0.8 + 0.5) / 3, 0.8, 1.0])
    grid, values = common_curves(groups["bc"].runs, "eval/success_rate")
    assert grid.tolist() == [0] and values[:, 0].tolist() == [0.7, 0.9]


def test_named_runs_keep_their_names(runs):
    # A benchmark variant's runs carry its name; the other runs are labelled among themselves as before.
    found = [load_run(p) for p in find_run_dirs([runs])]
    groups = {g.label: g for g in group_runs(found, {runs / "h": "cmil-alpha5"})}
    assert set(groups) == {"cmil", "cmil-alpha5", "dac", "bc"}
    assert [r.path.name for r in groups["cmil-alpha5"].runs] == ["h"]
    assert len(groups["cmil"].runs) == 3


def test_a_field_a_saved_config_lacks_reads_as_its_default(tmp_path):
    # Run "old" was saved before the field existed; it groups with "zero", which sets the default explicitly.
    write_run(tmp_path, "old", "cmil", 0, [(1000, 0.2)], final=0.2)
    write_run(tmp_path, "zero", "cmil", 1, [(1000, 0.4)], final=0.4, agent={"alpha": 10.0, "anchor_model_weight": 0.0})
    write_run(tmp_path, "new", "cmil", 0, [(1000, 0.6)], final=0.6, agent={"alpha": 10.0, "anchor_model_weight": 30.0})
    groups = {g.label: sorted(r.path.name for r in g.runs)
              for g in group_runs([load_run(p) for p in find_run_dirs([tmp_path])])}
    assert groups == {"cmil [agent.anchor_model_weight=0.0]": ["old", "zero"],
                      "cmil [agent.anchor_model_weight=30.0]": ["new"]}


def test_plot_writes_figures_and_a_correct_table(runs, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", str(runs), "--out", str(out)]) == 0
    for name in ("success_rate", "return"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.svg").stat().st_size > 1000
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    cmil = rows["cmil [agent.alpha=10.0]"]
    # Finished runs use final.json; the unfinished one its last evaluation (1.0).
    ci = bootstrap_ci([0.9, 0.8, 1.0])
    assert int(cmil["seeds"]) == 3 and int(cmil["finished"]) == 2
    assert float(cmil["success_rate_mean"]) == pytest.approx(0.9)
    assert float(cmil["success_rate_low"]) == pytest.approx(ci.low)
    assert float(cmil["success_rate_high"]) == pytest.approx(ci.high)
    assert float(cmil["return_mean"]) == pytest.approx(9.0)
    # Expert 0.8 -> threshold 0.72; the mean curve is 0.433, 0.633, 0.8, 1.0 at 1500..3000.
    assert float(cmil["steps_to_90pct_expert"]) == 2500
    assert math.isnan(float(rows["dac"]["steps_to_90pct_expert"]))
    assert float(rows["bc"]["success_rate_mean"]) == pytest.approx(0.8)
    assert float(rows["bc"]["steps_to_90pct_expert"]) == 0
    md = (out / "results.md").read_text()
    assert f"0.90 [{ci.low:.2f}, {ci.high:.2f}]" in md and "not reached" in md and "2500" in md
    assert "10000 resamples" in md
    assert "| cmil [agent.alpha=10.0] |" in capsys.readouterr().out


def test_plot_custom_metric_and_missing_dir(runs, tmp_path):
    result = report([runs / "a", runs / "b"], tmp_path / "o", metrics=("eval/expert_success_rate",))
    names = sorted(p.name for p in result["files"])
    assert names == ["expert_success_rate.png", "expert_success_rate.svg", "results.csv", "results.md"]
    assert result["rows"][0]["expert_success_rate_mean"] == pytest.approx(0.8)
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2


def test_final_over_best_of_a_policy_that_never_changes():
    # One evaluation, or a policy that always or never succeeds: no selection effect.
    assert final_over_best_if_constant(0.4, [20]) == 1.0
    assert final_over_best_if_constant(1.0, [10] * 5 + [20]) == 1.0
    # Five 10-episode evaluations and a 20-episode final one at success 0.3: the best of six noisy draws is
    # ~0.48 on average (binomial order statistics), so the ratio is ~0.62 although nothing changed.
    ratio = final_over_best_if_constant(0.3, [10] * 5 + [20])
    assert 0.60 < ratio < 0.65
    # More episodes per evaluation shrink the selection effect.
    assert final_over_best_if_constant(0.3, [40] * 5 + [40]) > ratio + 0.05
