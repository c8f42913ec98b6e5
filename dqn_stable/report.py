"""Reports: statistics, tables and figures of a sweep, computed from its run directories alone.

    python -m dqn_stable.report SWEEP_DIR [--out DIR] [--resamples 10000] [--seed 0]

writes ``report.md`` and PNG figures (default: into SWEEP_DIR). Runs are grouped by environment and
variant: the variant comes from the sweep's ``sweep.json`` when there is one, else from each run's
config name. How each statistic is computed is in ``METHODS``, which every report repeats.

Needs the ``report`` extra (matplotlib, scipy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dqn_stable.recorder import Tags, read_scalars
from dqn_stable.trainer import SUMMARY_FILE

METHODS = """Every statistic is over seeds, one value per run.

* final return: mean, std, median and IQM (mean of the middle 50%, `scipy.stats.trim_mean` at
  0.25) with a 95% percentile bootstrap interval (`scipy.stats.bootstrap`, the stated number of
  resamples, seeded);
* AUC: the evaluation curve's area divided by its env-step span, i.e. the mean return over training;
* time to threshold: env steps and wall seconds to the first evaluation at or above the env's
  Gymnasium `reward_threshold`; runs that never reach it are counted as "not reached";
* stability: max |Q| over training batches, the variance of the per-update parameter-change norm,
  and TD-loss roughness: the mean of |ln L(t+1) - ln L(t)| over consecutive logged TD losses
  (0 for a perfectly smooth curve);
* cost: wall seconds, env steps per second, peak RSS, parameters (target networks included).
"""

__all__ = ["RunRecord", "collect_runs", "group_stats", "iqm", "main", "steps_to_threshold"]


@dataclass
class RunRecord:
    """What the report needs of one run directory."""

    run_dir: Path
    env_id: str
    variant: str
    seed: int
    summary: dict[str, Any]
    td_loss: list[tuple[int, float]] = field(default_factory=list)


def _require_extra():
    try:
        import matplotlib
        import scipy.stats
    except ImportError as exc:
        raise SystemExit(
            f"error: the report needs the 'report' extra ({exc.name} is missing): "
            "pip install 'dqn_stable[report]'"
        ) from None
    return matplotlib, scipy.stats


def collect_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every run directory under ``sweep_dir`` that has a ``summary.json``."""
    sweep_dir = Path(sweep_dir)
    variants = {}
    manifest = sweep_dir / "sweep.json"
    if manifest.is_file():
        variants = {r["run_dir"]: r["variant"] for r in json.loads(manifest.read_text())["runs"]}
    records = []
    for summary_path in sorted(sweep_dir.glob(f"*/{SUMMARY_FILE}")):
        run_dir = summary_path.parent
        summary = json.loads(summary_path.read_text())
        loss = read_scalars(run_dir).get(Tags.TD_LOSS, [])
        records.append(RunRecord(
            run_dir=run_dir, env_id=summary["env_id"],
            variant=variants.get(run_dir.name, summary["name"]), seed=summary["seed"],
            summary=summary, td_loss=loss,
        ))
    return records


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return float(_trim(np.asarray(values, dtype=float), axis=0))


def iqm_interval(values: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM over runs (seeded)."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    result = bootstrap((data,), lambda x, axis: _trim(x, axis), n_resamples=resamples,
                       confidence_level=0.95, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _trim(x: np.ndarray, axis: int) -> np.ndarray:
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def steps_to_threshold(curve: Sequence[dict], threshold: float | None) -> dict | None:
    """The first evaluation point whose mean return is >= ``threshold`` (None if never)."""
    if threshold is None:
        return None
    return next((point for point in curve if point["return_mean"] >= threshold), None)


def auc(curve: Sequence[dict]) -> float:
    """Area under the evaluation curve over its env-step span: the mean return during training."""
    steps = np.array([p["env_step"] for p in curve], dtype=float)
    returns = np.array([p["return_mean"] for p in curve], dtype=float)
    if len(steps) < 2:
        return float(returns[0]) if len(returns) else math.nan
    return float(np.trapezoid(returns, steps) / (steps[-1] - steps[0]))


def roughness(losses: Sequence[tuple[int, float]]) -> float:
    """Mean |ln L(t+1) - ln L(t)| over consecutive logged TD losses (nan with fewer than two)."""
    values = np.array([v for _, v in losses], dtype=float)
    values = values[values > 0]
    if len(values) < 2:
        return math.nan
    return float(np.mean(np.abs(np.diff(np.log(values)))))


def _threshold(env_id: str) -> float | None:
    import gymnasium as gym

    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def group_stats(runs: Sequence[RunRecord], resamples: int, seed: int) -> dict[str, Any]:
    """The statistics of one (environment, variant) group."""
    finals = [r.summary["final_eval_return_mean"] for r in runs
              if r.summary["final_eval_return_mean"] is not None]
    threshold = _threshold(runs[0].env_id)
    reached = [steps_to_threshold(r.summary["eval_curve"], threshold) for r in runs]
    hits = [p for p in reached if p is not None]
    s = [r.summary for r in runs]
    return {
        "runs": len(runs),
        "diverged": sum(x["diverged"] for x in s),
        "final_mean": float(np.mean(finals)) if finals else math.nan,
        "final_std": float(np.std(finals)) if finals else math.nan,
        "final_median": float(np.median(finals)) if finals else math.nan,
        "final_iqm": iqm(finals) if finals else math.nan,
        "final_iqm_ci": iqm_interval(finals, resamples, seed) if finals else (math.nan,) * 2,
        "auc": float(np.mean([auc(x["eval_curve"]) for x in s if x["eval_curve"]])),
        "threshold": threshold,
        "reached": len(hits),
        "steps_to_threshold": float(np.mean([p["env_step"] for p in hits])) if hits else None,
        "wall_to_threshold": float(np.mean([p["wall_seconds"] for p in hits])) if hits else None,
        "q_abs_max": max(x["q_abs_max"] for x in s),
        "update_norm_var": float(np.mean([x["update_norm_var"] for x in s])),
        "loss_roughness": float(np.nanmean([roughness(r.td_loss) for r in runs]))
        if any(len(r.td_loss) > 1 for r in runs) else math.nan,
        "wall_seconds": float(np.mean([x["wall_seconds"] for x in s])),
        "steps_per_second": float(np.mean([x["steps_per_second"] for x in s])),
        "peak_rss_mb": float(np.max([x["peak_rss_mb"] for x in s])),
        "parameters": s[0]["network_parameters"],
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _markdown(groups: dict, stats: dict, resamples: int, seed: int) -> str:
    lines = ["# Sweep report", "", METHODS.strip(), "",
             f"Bootstrap: {resamples} resamples, seed {seed}.", "",
             "## Returns", "",
             "| env | variant | runs | diverged | final mean | std | median | IQM [95% CI] | AUC |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for (env, variant), st in stats.items():
        low, high = st["final_iqm_ci"]
        lines.append(
            f"| {env} | {variant} | {st['runs']} | {st['diverged']} | {_fmt(st['final_mean'])} | "
            f"{_fmt(st['final_std'])} | {_fmt(st['final_median'])} | {_fmt(st['final_iqm'])} "
            f"[{_fmt(low)}, {_fmt(high)}] | {_fmt(st['auc'])} |")
    lines += ["", "## Time to threshold", "",
              "| env | variant | threshold | reached | env steps (mean of reached) | wall s |",
              "|---|---|---:|---:|---:|---:|"]
    for (env, variant), st in stats.items():
        lines.append(
            f"| {env} | {variant} | {_fmt(st['threshold'])} | {st['reached']}/{st['runs']} | "
            f"{_fmt(st['steps_to_threshold'], 0)} | {_fmt(st['wall_to_threshold'], 0)} |")
    lines += ["", "## Stability and cost", "",
              "| env | variant | max abs Q | update-norm var | TD-loss roughness | wall s | "
              "env steps/s | peak RSS MB | parameters |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (env, variant), st in stats.items():
        lines.append(
            f"| {env} | {variant} | {_fmt(st['q_abs_max'])} | {st['update_norm_var']:.3g} | "
            f"{_fmt(st['loss_roughness'], 3)} | {_fmt(st['wall_seconds'], 0)} | "
            f"{_fmt(st['steps_per_second'], 0)} | {_fmt(st['peak_rss_mb'], 0)} | "
            f"{st['parameters']:,} |")
    lines += ["", "## Figures", "", "![evaluation return](eval_return.png)", "",
              "![update-norm variance](update_norm_var.png)", "", "![TD loss](td_loss.png)", "",
              "## Runs", ""]
    for (env, variant), runs in groups.items():
        dirs = ", ".join(f"`{r.run_dir.name}`" for r in sorted(runs, key=lambda r: r.seed))
        lines.append(f"- {env} / {variant}: {dirs}")
    return "\n".join(lines) + "\n"


def _figures(groups: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import t as student_t

    envs = sorted({env for env, _ in groups})
    variants = sorted({variant for _, variant in groups})
    # Past ten variants colours repeat, so line styles tell them apart; legends sit outside.
    colors, dashes = plt.get_cmap("tab10"), ("-", "--", ":")
    styles = {v: {"color": colors(i % 10), "linestyle": dashes[i // 10 % 3]}
              for i, v in enumerate(variants)}
    panel = (8.0, max(3.6, 0.2 * len(variants) + 1.0))
    fig, axes = _panels(plt, len(envs), panel)
    for ax, env in zip(axes, envs, strict=True):
        for (group_env, variant), runs in groups.items():
            if group_env != env:
                continue
            # Every step any run evaluated; a run that stopped early (diverged) drops out of the
            # mean and band from there on, so n is per step.
            curves = [[(p["env_step"], p["return_mean"]) for p in r.summary["eval_curve"]]
                      for r in runs]
            steps, table = _aligned(curves)
            mean = np.nanmean(table, axis=0)
            counts = np.sum(~np.isnan(table), axis=0)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a step with one run: no band
                spread = np.nanstd(table, axis=0, ddof=1) / np.sqrt(counts)
                half = np.nan_to_num(student_t.ppf(0.975, counts - 1) * spread)
            ax.plot(steps, mean, label=f"{variant} (n={len(runs)})", **styles[variant])
            ax.fill_between(steps, mean - half, mean + half, alpha=0.12,
                            color=styles[variant]["color"])
        ax.set(title=env, xlabel="env steps", ylabel="evaluation return")
        _legend(ax)
    _save(fig, out / "eval_return.png", "Evaluation return: mean over seeds, 95% t-interval band")

    fig, axes = _panels(plt, len(envs), (max(5.0, 0.35 * len(variants) + 1.5), 4.2))
    for ax, env in zip(axes, envs, strict=True):
        names = [v for e, v in groups if e == env]
        for i, variant in enumerate(names):
            values = [r.summary["update_norm_var"] for r in groups[(env, variant)]]
            ax.bar(i, np.mean(values), alpha=0.5)
            ax.scatter([i] * len(values), values, s=12, color="black")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set(title=env, ylabel="variance of update norm", yscale="log")
    _save(fig, out / "update_norm_var.png",
          "Variance of the per-update parameter-change norm (bar: mean, dots: seeds)")

    fig, axes = _panels(plt, len(envs), panel)
    for ax, env in zip(axes, envs, strict=True):
        for (group_env, variant), runs in groups.items():
            if group_env != env or not any(r.td_loss for r in runs):
                continue
            steps, table = _aligned([r.td_loss for r in runs])
            ax.plot(steps, np.nanmean(table, axis=0), label=variant, **styles[variant])
        ax.set(title=env, xlabel="env steps", ylabel="TD loss (mean over seeds)", yscale="log")
        _legend(ax)
    _save(fig, out / "td_loss.png", "TD loss per log window")


def _panels(plt, count: int, panel: tuple[float, float]) -> tuple[Any, list]:
    """One panel per environment: a row of up to three, else a grid two panels wide."""
    cols = count if count <= 3 else 2
    rows = -(-count // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _save(fig, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _aligned(series: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[int], np.ndarray]:
    """The union of the series' steps, and one row per series with NaN where it has no value."""
    steps = sorted({step for points in series for step, _ in points})
    column = {step: i for i, step in enumerate(steps)}
    table = np.full((len(series), len(steps)), np.nan)
    for row, points in enumerate(series):
        for step, value in points:
            table[row, column[step]] = value
    return steps, table


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def write_report(sweep_dir: str | Path, out: str | Path | None = None, *, resamples: int = 10_000,
                 seed: int = 0) -> Path:
    """Write ``report.md``, ``report.json`` and the figures; returns the report's path."""
    out = Path(out) if out is not None else Path(sweep_dir)
    runs = collect_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no run directory with a {SUMMARY_FILE} under {sweep_dir}")
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.env_id, run.variant)].append(run)
    groups = dict(sorted(groups.items()))
    stats = {key: group_stats(members, resamples, seed) for key, members in groups.items()}
    out.mkdir(parents=True, exist_ok=True)
    _figures(groups, out)
    (out / "report.json").write_text(json.dumps(
        {f"{env}/{variant}": st for (env, variant), st in stats.items()}, indent=2) + "\n")
    path = out / "report.md"
    path.write_text(_markdown(groups, stats, resamples, seed))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dqn_stable.report",
                                     description="Write report.md and figures for a sweep.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    _require_extra()
    if not args.sweep_dir.is_dir():
        print(f"error: sweep directory not found: {args.sweep_dir}", file=sys.stderr)
        return 2
    try:
        path = write_report(args.sweep_dir, args.out, resamples=args.resamples, seed=args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
