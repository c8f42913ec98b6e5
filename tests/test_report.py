"""Reports: the statistics against hand-computed values, and report.md / report.json / figures of a
synthetic sweep directory (summaries and TD-loss event files written by hand, no training)."""

from __future__ import annotations

import json
import math

import pytest

from dqn_stable import report
from dqn_stable.recorder import Tags, TensorBoardRecorder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("eval_return.png", "update_norm_var.png", "td_loss.png")
RESAMPLES = 200  # bootstrap resamples in these tests (the CLI default is 10,000)

# --- iqm, iqm_interval ----------------------------------------------------------------------------


def test_iqm_trims_a_quarter_from_each_end():
    # 5 values: int(0.25 * 5) = 1 trimmed from each end -> mean of [2, 3, 4]
    assert report.iqm([1, 2, 3, 4, 100]) == 3.0
    # 8 values, unsorted: 2 trimmed from each end -> mean of [3, 4, 5, 6]
    assert report.iqm([100, 3, 1, 6, 4, 7, 2, 5]) == 4.5
    # 3 values: int(0.75) = 0 trimmed -> the plain mean
    assert report.iqm([1, 2, 6]) == 3.0


@pytest.mark.parametrize("values", [[7.5] * 6, [7.5]])
def test_iqm_interval_of_constant_data_is_that_constant(values):
    assert report.iqm_interval(values, resamples=100, seed=0) == (7.5, 7.5)


def test_iqm_interval_is_seeded_and_brackets_the_iqm():
    data = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    low, high = report.iqm_interval(data, RESAMPLES, seed=0)
    assert report.iqm_interval(data, RESAMPLES, seed=0) == (low, high)
    assert report.iqm_interval(data, RESAMPLES, seed=1) != (low, high)
    assert min(data) <= low <= report.iqm(data) <= high <= max(data)
    assert low < high


# --- steps_to_threshold, auc, roughness -----------------------------------------------------------

CURVE = [
    {"env_step": 100, "return_mean": 10.0, "wall_seconds": 1.0},
    {"env_step": 200, "return_mean": 30.0, "wall_seconds": 2.0},
    {"env_step": 500, "return_mean": 20.0, "wall_seconds": 5.0},
]


def test_steps_to_threshold_is_the_first_point_at_or_above_it():
    assert report.steps_to_threshold(CURVE, 15.0) is CURVE[1]
    assert report.steps_to_threshold(CURVE, 30.0) is CURVE[1]  # equal counts as reached
    assert report.steps_to_threshold(CURVE, 10.0) is CURVE[0]
    assert report.steps_to_threshold(CURVE, 30.5) is None
    assert report.steps_to_threshold(CURVE, None) is None
    assert report.steps_to_threshold([], 0.0) is None


def test_auc_is_the_trapezoid_area_over_the_step_span():
    # (10 + 30) / 2 * 100 + (30 + 20) / 2 * 300 = 2000 + 7500 over a span of 400 steps
    assert report.auc(CURVE) == 9500 / 400 == 23.75
    assert report.auc(CURVE[:1]) == 10.0
    assert math.isnan(report.auc([]))


def test_roughness_is_the_mean_absolute_log_step():
    assert report.roughness([(0, 1.0), (1, math.e), (2, 1.0)]) == pytest.approx(1.0, abs=1e-15)
    assert report.roughness([(0, 2.0), (1, 2.0), (2, 2.0)]) == 0.0
    # |ln 4 - ln 1| and |ln 1 - ln 4| ... non-positive losses are dropped before the differences
    assert report.roughness([(0, 1.0), (1, 0.0), (2, 4.0)]) == pytest.approx(math.log(4))
    assert math.isnan(report.roughness([(0, 3.0)]))
    assert math.isnan(report.roughness([]))


# --- A synthetic sweep directory ------------------------------------------------------------------

PARAMETERS = 386


def point(step, ret, wall):
    return {"env_step": step, "gradient_updates": step // 4, "return_mean": ret,
            "return_std": 0.0, "returns": [ret, ret], "wall_seconds": wall}


def summary(name, env_id, seed, curve, *, diverged=False, q_abs_max, update_norm_var,
            wall_seconds, steps_per_second, peak_rss_mb):
    final = curve[-1]["return_mean"] if curve else None
    return {
        "name": name, "env_id": env_id, "seed": seed,
        "status": "diverged" if diverged else "finished", "diverged": diverged,
        "env_steps": curve[-1]["env_step"] if curve else 0, "gradient_updates": 0, "episodes": 0,
        "final_eval_return_mean": final, "final_eval_return_std": 0.0 if curve else None,
        "wall_seconds": wall_seconds, "steps_per_second": steps_per_second,
        "peak_rss_mb": peak_rss_mb, "network_parameters": PARAMETERS, "q_abs_max": q_abs_max,
        "update_norm_var": update_norm_var, "eval_curve": curve,
    }


# run dir -> (summary, TD losses at env steps 100, 200, ...). The manifest names the variant of
# the CartPole runs; 'solo' is not in it, so its variant is its summary's name, 'loner'.
# Losses are powers of two, exact in TensorBoard's float32.
RUNS = {
    "stable__CartPole-v1__seed0": (summary(
        "tiny", "CartPole-v1", 0, [point(200, 100.0, 1.0), point(400, 480.0, 2.0),
                                   point(600, 500.0, 3.0)],
        q_abs_max=12.5, update_norm_var=0.5, wall_seconds=10.0, steps_per_second=60.0,
        peak_rss_mb=300.0), [1.0, 4.0, 1.0]),
    "stable__CartPole-v1__seed1": (summary(
        "tiny", "CartPole-v1", 1, [point(200, 475.0, 1.5), point(400, 300.0, 2.5),
                                   point(600, 490.0, 3.5)],
        q_abs_max=30.25, update_norm_var=1.5, wall_seconds=20.0, steps_per_second=30.0,
        peak_rss_mb=311.25), [2.0, 2.0, 2.0]),
    "stable__CartPole-v1__seed2": (summary(
        "tiny", "CartPole-v1", 2, [point(200, 50.0, 0.5), point(400, 20.0, 1.0),
                                   point(600, 10.0, 1.5)],
        diverged=True, q_abs_max=1.0e6, update_norm_var=2.5, wall_seconds=30.0,
        steps_per_second=20.0, peak_rss_mb=290.0), [1.0, 8.0, 64.0]),
    "stable__CartPole-v1__seed3": (summary(
        "tiny", "CartPole-v1", 3, [point(200, 200.0, 1.0), point(400, 474.9, 2.0),
                                   point(600, 300.0, 3.0)],
        q_abs_max=7.0, update_norm_var=3.5, wall_seconds=40.0, steps_per_second=15.0,
        peak_rss_mb=305.0), [3.0]),
    "baseline__CartPole-v1__seed0": (summary(
        "tiny_baseline", "CartPole-v1", 0, [point(200, 480.0, 2.0), point(400, 500.0, 4.0)],
        q_abs_max=3.0, update_norm_var=0.001, wall_seconds=100.0, steps_per_second=10.0,
        peak_rss_mb=200.0), []),
    "baseline__CartPole-v1__seed1": (summary(
        "tiny_baseline", "CartPole-v1", 1, [point(200, 300.0, 2.0), point(400, 500.0, 4.0)],
        q_abs_max=4.0, update_norm_var=0.003, wall_seconds=200.0, steps_per_second=20.0,
        peak_rss_mb=250.0), []),
    "solo": (summary(
        "loner", "Acrobot-v1", 5, [point(100, -500.0, 1.0), point(200, -90.0, 2.0)],
        q_abs_max=0.5, update_norm_var=0.25, wall_seconds=8.0, steps_per_second=25.0,
        peak_rss_mb=100.0), [0.5, 0.25]),
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    manifest = {"name": "fake", "runs": [
        {"run_dir": name, "variant": name.split("__")[0], "status": "finished", "exit_code": 0}
        for name in RUNS if "__" in name
    ]}
    (root / "sweep.json").write_text(json.dumps(manifest))
    for name, (run_summary, losses) in RUNS.items():
        (root / name).mkdir()
        (root / name / "summary.json").write_text(json.dumps(run_summary))
        if losses:
            recorder = TensorBoardRecorder(root / name)
            for i, loss in enumerate(losses):
                recorder.scalar(Tags.TD_LOSS, loss, 100 * (i + 1))
                recorder.scalar(Tags.Q_VALUES, 99.0, 100 * (i + 1))
            recorder.close()
    (root / "stray.log").write_text("not a run\n")
    (root / "no_summary").mkdir()  # a run that never ended is left out
    return root


def test_collect_runs_reads_variants_losses_and_summaries(sweep_dir):
    records = report.collect_runs(sweep_dir)
    assert [r.run_dir.name for r in records] == sorted(RUNS)
    by_name = {r.run_dir.name: r for r in records}
    assert [(r.env_id, r.variant, r.seed) for r in (by_name["solo"],
                                                    by_name["baseline__CartPole-v1__seed1"])] \
        == [("Acrobot-v1", "loner", 5), ("CartPole-v1", "baseline", 1)]
    assert by_name["stable__CartPole-v1__seed2"].td_loss == [(100, 1.0), (200, 8.0), (300, 64.0)]
    assert by_name["baseline__CartPole-v1__seed0"].td_loss == []
    assert by_name["solo"].summary == RUNS["solo"][0]


def test_group_stats_of_a_cartpole_group(sweep_dir):
    runs = [r for r in report.collect_runs(sweep_dir) if r.variant == "stable"]
    stats = report.group_stats(runs, RESAMPLES, seed=0)
    finals = [500.0, 490.0, 10.0, 300.0]  # seeds 0..3
    assert stats == {
        "runs": 4,
        "diverged": 1,
        "final_mean": 325.0,
        "final_std": math.sqrt((175**2 + 165**2 + 315**2 + 25**2) / 4),
        "final_median": 395.0,
        "final_iqm": 395.0,  # mean of [300, 490]
        "final_iqm_ci": report.iqm_interval(finals, RESAMPLES, 0),
        # per run (r0 + 2 r1 + r2) / 4 on an even grid: 390, 391.25, 25, 362.45
        "auc": pytest.approx((390 + 391.25 + 25 + 362.45) / 4),
        "threshold": 475.0,  # CartPole-v1's reward_threshold in Gymnasium
        "reached": 2,  # seed 0 at step 400, seed 1 at 200 (exactly 475); seed 3 peaks at 474.9
        "steps_to_threshold": 300.0,
        "wall_to_threshold": 1.75,
        "q_abs_max": 1.0e6,
        "update_norm_var": 2.0,
        # seeds 0, 1, 2: ln 4, 0, ln 8; seed 3 has one logged loss (nan, ignored)
        "loss_roughness": pytest.approx(5 * math.log(2) / 3),
        "wall_seconds": 25.0,
        "steps_per_second": 31.25,
        "peak_rss_mb": 311.25,
        "parameters": PARAMETERS,
    }


def test_group_stats_without_losses_or_reached_threshold():
    run = report.RunRecord(
        run_dir=None, env_id="CartPole-v1", variant="v", seed=0,
        summary=summary("v", "CartPole-v1", 0, [point(100, 9.0, 1.0)], q_abs_max=1.0,
                        update_norm_var=0.1, wall_seconds=1.0, steps_per_second=100.0,
                        peak_rss_mb=50.0),
    )
    stats = report.group_stats([run], RESAMPLES, seed=0)
    assert (stats["reached"], stats["steps_to_threshold"], stats["wall_to_threshold"]) \
        == (0, None, None)
    assert stats["final_iqm_ci"] == (9.0, 9.0)
    assert math.isnan(stats["loss_roughness"])


@pytest.fixture(scope="module")
def written(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    path = report.write_report(sweep_dir, out, resamples=RESAMPLES, seed=0)
    return out, path


def test_report_tables_hold_the_groups_numbers(written):
    out, path = written
    assert path == out / "report.md"
    text = path.read_text()
    low, high = report.iqm_interval([500.0, 490.0, 10.0, 300.0], RESAMPLES, 0)
    std = math.sqrt(39425)
    rows = [
        # Returns
        f"| CartPole-v1 | stable | 4 | 1 | 325.0 | {std:.1f} | 395.0 | 395.0 "
        f"[{low:,.1f}, {high:,.1f}] | 292.2 |",
        "| CartPole-v1 | baseline | 2 | 0 | 500.0 | 0.0 | 500.0 | 500.0 [500.0, 500.0] | 445.0 |",
        "| Acrobot-v1 | loner | 1 | 0 | -90.0 | 0.0 | -90.0 | -90.0 [-90.0, -90.0] | -295.0 |",
        # Time to threshold
        "| CartPole-v1 | stable | 475.0 | 2/4 | 300 | 2 |",
        "| CartPole-v1 | baseline | 475.0 | 2/2 | 300 | 3 |",
        "| Acrobot-v1 | loner | -100.0 | 1/1 | 200 | 2 |",
        # Stability and cost
        "| CartPole-v1 | stable | 1,000,000.0 | 2 | 1.155 | 25 | 31 | 311 | 386 |",
        "| CartPole-v1 | baseline | 4.0 | 0.002 | n/a | 150 | 15 | 250 | 386 |",
        "| Acrobot-v1 | loner | 0.5 | 0.25 | 0.693 | 8 | 25 | 100 | 386 |",
    ]
    lines = text.splitlines()
    for row in rows:
        assert row in lines, row
    # groups sorted by (env, variant) within each table
    returns = [line for line in lines if line.startswith("| ") and line.endswith(" |")][1:4]
    assert [line.split(" | ")[1] for line in returns] == ["loner", "baseline", "stable"]
    assert lines[0] == "# Sweep report"
    assert f"Bootstrap: {RESAMPLES} resamples, seed 0." in lines
    assert report.METHODS.strip() in text


def test_report_lists_every_run_dir(written):
    lines = written[1].read_text().splitlines()
    runs = lines[lines.index("## Runs") + 2:]
    assert runs == [
        "- Acrobot-v1 / loner: `solo`",
        "- CartPole-v1 / baseline: `baseline__CartPole-v1__seed0`, `baseline__CartPole-v1__seed1`",
        "- CartPole-v1 / stable: " + ", ".join(f"`stable__CartPole-v1__seed{s}`" for s in range(4)),
    ]


def test_report_writes_png_figures_and_json(written):
    out, _ = written
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 1000, name
    stats = json.loads((out / "report.json").read_text())
    assert list(stats) == ["Acrobot-v1/loner", "CartPole-v1/baseline", "CartPole-v1/stable"]
    assert {key: value["runs"] for key, value in stats.items()} == {
        "Acrobot-v1/loner": 1, "CartPole-v1/baseline": 2, "CartPole-v1/stable": 4}
    stable = stats["CartPole-v1/stable"]
    assert (stable["reached"], stable["steps_to_threshold"], stable["threshold"]) \
        == (2, 300.0, 475.0)
    assert stats["CartPole-v1/baseline"]["final_iqm_ci"] == [500.0, 500.0]


# --- The command line -----------------------------------------------------------------------------


def test_main_writes_into_the_sweep_dir(tmp_path, capsys):
    run = tmp_path / "a__CartPole-v1__seed0"
    run.mkdir()
    run_summary = summary("a", "CartPole-v1", 0, [point(200, 20.0, 1.0), point(400, 40.0, 2.0)],
                          q_abs_max=1.0, update_norm_var=0.5, wall_seconds=3.0,
                          steps_per_second=133.0, peak_rss_mb=100.0)
    (run / "summary.json").write_text(json.dumps(run_summary))
    assert report.main([str(tmp_path), "--resamples", "50", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{tmp_path / 'report.md'}\n", "")
    assert "Bootstrap: 50 resamples, seed 3." in (tmp_path / "report.md").read_text()
    assert "| CartPole-v1 | a | 1 | 0 | 40.0 | 0.0 | 40.0 | 40.0 [40.0, 40.0] | 30.0 |" \
        in (tmp_path / "report.md").read_text().splitlines()
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_main_on_a_missing_dir_exits_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "gone")]) == 2
    assert capsys.readouterr() == ("", f"error: sweep directory not found: {tmp_path / 'gone'}\n")


def test_main_on_a_dir_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "started").mkdir()  # a run dir without summary.json does not count
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr() == (
        "", f"error: no run directory with a summary.json under {tmp_path}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]

