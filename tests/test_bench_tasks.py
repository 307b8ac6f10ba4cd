"""The statistics of benchmarks/bench_tasks.py's summary: the 95% intervals it puts on the difference of two arms'
means over seeds and on the ratio of their spreads, against the values scipy.stats gives for the same inputs (scipy
1.x, `t.ppf`, `f.ppf`, `ttest_ind(..., equal_var=False).confidence_interval(0.95)`)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tasks.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("probability", "dof", "scipy_value"),
    [(0.975, 6, 2.4469118511449786), (0.975, 2, 4.302652729749462), (0.995, 30.5, 2.746967063704737)],
)
def test_student_t_quantile_matches_scipy(bench, probability, dof, scipy_value):
    assert bench.student_t_quantile(probability, dof) == pytest.approx(scipy_value, rel=1e-9)


@pytest.mark.parametrize(
    ("dof_num", "dof_den", "scipy_value"),
    [(6, 6, 5.819756578960778), (2, 6, 7.259855680060178), (6, 2, 39.331457962410255)],
)
def test_f_quantile_matches_scipy(bench, dof_num, dof_den, scipy_value):
    assert bench.f_quantile(0.975, dof_num, dof_den) == pytest.approx(scipy_value, rel=1e-9)


def test_compare_arms_gives_welch_and_f_intervals(bench):
    arm = [0.5343, 0.5740, 0.5560, 0.5451, 0.5632, 0.5487, 0.5740]
    stock = [0.5451, 0.5848, 0.5632, 0.5560, 0.5776, 0.5487, 0.5704, 0.5523]
    result = bench.compare_arms(arm, stock)
    assert result["difference"] == pytest.approx(sum(arm) / 7 - sum(stock) / 8)
    assert (result["difference_low"], result["difference_high"]) == pytest.approx(
        (-0.022221837472335363, 0.010639694615192156), rel=1e-9
    )
    assert (result["spread_ratio_low"], result["spread_ratio_high"]) == pytest.approx(
        (0.46281606699572114, 2.4988988792027977), rel=1e-9
    )
    with pytest.raises(ValueError, match="2 seeds per arm"):
        bench.compare_arms([0.5], stock)


def summary_of(bench, tmp_path, runs: list[dict]) -> list[str]:
    """The summary's lines for these runs (each given the fields every record has, unless it sets them)."""
    record = tmp_path / "runs.jsonl"
    common = {"task": "rte", "num_train": 100, "epochs": 3}
    record.write_text("".join(json.dumps({**common, **run}) + "\n" for run in runs), encoding="utf-8")
    return bench.summary_table(str(record)).splitlines()


def test_summary_compares_each_arm_with_stock_and_says_what_the_seeds_settle(bench, tmp_path):
    runs = []
    for seed, (stock, ulmfit) in enumerate([(0.50, 0.60), (0.52, 0.61), (0.51, 0.62)]):
        runs.append({"trainer": "stock", "seed": seed, "metrics": {"accuracy": stock}})
        runs.append({"trainer": "ulmfit", "seed": seed, "gradual_unfreezing": False, "metrics": {"accuracy": ulmfit}})
    # An ablation of the ulmfit arm is an arm of its own, named by what it changed from the recipe's defaults
    # (for a Transformer: no gradual unfreezing); a run recorded before the field existed unfroze gradually.
    ablation = {"trainer": "ulmfit", "learning_rate": 2e-4, "ulmfit_decay": 1.0, "gradual_unfreezing": True}
    runs += [
        {**ablation, "seed": seed, "metrics": {"accuracy": score}} for seed, score in enumerate([0.40, 0.41, 0.42])
    ]
    runs += [
        {"trainer": "ulmfit", "seed": seed, "metrics": {"accuracy": score}} for seed, score in enumerate([0.55, 0.56])
    ]
    table = summary_of(bench, tmp_path, runs)
    row = next(line for line in table if line.startswith("| rte (accuracy) | 100 x 3 | ulmfit | stock | 3 / 3"))
    assert "+10.0 points" in row and "| higher |" in row
    assert row.endswith("| not settled |")  # equal spreads over 3 seeds settle nothing
    ablation = next(line for line in table if "(decay 1; gradual unfreezing) | stock | 3 / 3" in line)
    assert "-10.0 points" in ablation and "| lower |" in ablation
    against_defaults = next(line for line in table if "(decay 1; gradual unfreezing) | ulmfit | 3 / 3" in line)
    assert "-20.0 points" in against_defaults
    older = next(line for line in table if "| ulmfit (gradual unfreezing) | ulmfit | 2 / 3" in line)
    assert "-5.5 points" in older


def test_summary_names_the_recipe_arms_unfreezing_once_it_is_recorded(bench, tmp_path):
    runs = [
        {"task": "copa", "trainer": "recipe", "seed": seed, "num_train": 500, **extra, "metrics": {"accuracy": 0.6}}
        for seed in range(2)
        for extra in ({}, {"gradual_unfreezing": True}, {"gradual_unfreezing": False})
    ]
    arms = {line.split(" | ")[1] for line in summary_of(bench, tmp_path, runs) if "| 500 x 3 | 2 |" in line}
    # Runs recorded before the field (at the defaults of their time) stay apart from both new kinds of run.
    assert arms == {"recipe", "recipe (gradual unfreezing)", "recipe (no gradual unfreezing)"}


def test_summary_settles_no_spread_from_seeds_that_scored_the_same(bench, tmp_path):
    runs = [
        {"trainer": trainer, "seed": seed, "gradual_unfreezing": False, "metrics": {"accuracy": score}}
        for seed in range(2)
        for trainer, score in (("stock", 0.55 + 0.01 * seed), ("ulmfit", 0.5451))
    ]
    row = next(line for line in summary_of(bench, tmp_path, runs) if "| ulmfit | stock | 2 / 2" in line)
    assert row.endswith("| 0x (every seed scored the same) | not settled |")


def test_learning_check_names_the_runs_that_ended_at_the_chance_level(bench, tmp_path):
    chance = 0.6931
    common = {"task": "rte", "trainer": "ulmfit", "num_train": 100, "epochs": 3, "gradual_unfreezing": False}
    runs = [
        # seed 0 learnt a little (4% below the chance level at the end); seed 1 stayed there; the stock run learnt
        {"seed": 0, "train_losses": [[10, 0.69], [95, 0.6654]], "metrics": {"accuracy": 0.56}},
        {"seed": 1, "train_losses": [[10, 0.70], [95, 0.6930]], "metrics": {"accuracy": 0.49}},
        {"seed": 0, "trainer": "stock", "train_losses": [[50, 0.6], [100, 0.4]], "metrics": {"accuracy": 0.57}},
        {"seed": 2, "metrics": {"accuracy": 0.55}},  # recorded without its losses: not judged
        # the recipe arm records the stage's own verdict, not its losses
        {"seed": 3, "trainer": "recipe", "learnt": False, "metrics": {"accuracy": 0.5}},
    ]
    record = tmp_path / "runs.jsonl"
    record.write_text(
        "".join(
            json.dumps({**common, "max_steps": 100, "train_chance_level_loss": chance, **run}) + "\n" for run in runs
        )
    )
    lines = bench.learning_table([str(record)]).splitlines()[2:]
    assert lines == [
        "| rte (accuracy) | recipe (no gradual unfreezing) | all-MiniLM-L6-v2 | 100 x 3 | 1 | 3 (0.5000) | - |",
        "| rte (accuracy) | stock | all-MiniLM-L6-v2 | 100 x 3 | 1 | none | 0.577 of the chance level |",
        "| rte (accuracy) | ulmfit | all-MiniLM-L6-v2 | 100 x 3 | 2 | 1 (0.4900) | 0.960 of the chance level |",
    ]


def test_learning_fields_judge_a_trainers_log_history(bench):
    history = [{"loss": 0.70, "step": 20}, {"loss": 0.6931, "step": 40}, {"train_loss": 0.69, "step": 40}]
    fields = bench.learning_fields(history, 40, 0.6931)
    assert fields == {
        "train_losses": [[20, 0.7], [40, 0.6931]],
        "max_steps": 40,
        "train_chance_level_loss": 0.6931,
        "learnt": False,
    }
    assert bench.learning_fields(history, 40, None)["learnt"] is None
    assert bench.learning_fields([{"loss": 0.3, "step": 40}], 40, 0.6931)["learnt"] is True
