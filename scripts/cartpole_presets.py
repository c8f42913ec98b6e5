"""Train the CartPole presets over several seeds and tabulate how fast and how well they solve it.

Usage: python scripts/cartpole_presets.py [--seeds 0 1 2 3 4] [--workers 2] [--out runs/presets]
           [--presets configs/cartpole.yaml configs/cartpole_baseline.yaml]
           [--markdown results/cartpole_presets.md]

Each (preset, seed) is one ordinary ``python -m dqn_stable.train`` run in its own directory under
``--out``; finished runs are reused. The table reports, per run, the first evaluation whose mean
greedy return is >= 475 (CartPole-v1's solved threshold) in env steps and in wall seconds, and the
final evaluation's mean return. Wall seconds are measured with ``--workers`` runs sharing the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dqn_stable.report import steps_to_threshold

SOLVED = 475.0


def run_one(preset: Path, seed: int, out: Path) -> Path:
    run_dir = out / f"{preset.stem}__seed{seed}"
    if (run_dir / "summary.json").is_file():
        return run_dir
    command = [sys.executable, "-m", "dqn_stable.train", "--config", str(preset),
               "--run-dir", str(run_dir), f"seed={seed}"]
    with open(out / f"{run_dir.name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    return run_dir


def table(preset: Path, run_dirs: list[Path]) -> list[str]:
    lines = [f"### `{preset}`", "",
             "| seed | env steps to >= 475 | wall s to >= 475 | final eval mean | status |",
             "|---:|---:|---:|---:|---|"]
    steps, walls, finals = [], [], []
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        solved = steps_to_threshold(summary["eval_curve"], SOLVED)
        final = summary["final_eval_return_mean"]
        finals.append(final)
        if solved is not None:
            steps.append(solved["env_step"])
            walls.append(solved["wall_seconds"])
        solved_steps = solved["env_step"] if solved else "not reached"
        solved_wall = f"{solved['wall_seconds']:.0f}" if solved else "not reached"
        lines.append(
            f"| {summary['seed']} | {solved_steps} | {solved_wall} | {final:.1f} | "
            f"{summary['status']} |"
        )
    reached = f"{len(steps)}/{len(run_dirs)} reached"
    mean_steps = f"{statistics.mean(steps):.0f}" if steps else "-"
    mean_wall = f"{statistics.mean(walls):.0f}" if walls else "-"
    lines.append(f"| mean ({reached}) | {mean_steps} | {mean_wall} | "
                 f"{statistics.mean(finals):.1f} +- {statistics.pstdev(finals):.1f} | |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_presets = [Path("configs/cartpole.yaml"), Path("configs/cartpole_baseline.yaml")]
    parser.add_argument("--presets", nargs="+", type=Path, default=default_presets)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/presets"))
    parser.add_argument("--markdown", type=Path, default=Path("results/cartpole_presets.md"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    jobs = [(preset, seed) for preset in args.presets for seed in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        run_dirs = list(pool.map(lambda job: run_one(*job, args.out), jobs))
    lines = ["# CartPole-v1 presets over seeds", "",
             "Produced by `python scripts/cartpole_presets.py "
             + " ".join(["--presets", *map(str, args.presets), "--seeds", *map(str, args.seeds),
                         "--workers", str(args.workers)]) + "`",
             f"({args.workers} runs at a time on a {_cores()}-core machine, torch single-threaded; "
             f"{time.time() - started:.0f} s for this invocation).",
             "", f"Solved = first evaluation (greedy, mean over the preset's `eval.episodes`) "
             f">= {SOLVED:.0f}.", ""]
    for preset in args.presets:
        lines += table(preset, [d for (p, _), d in zip(jobs, run_dirs, strict=True) if p == preset])
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n".join(lines))
    print("\n".join(lines))


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
