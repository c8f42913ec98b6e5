#!/usr/bin/env bash
# Regenerates results/benchmark/: the method against the target-network baseline (RL Zoo's tuned
# DQN) on CartPole-v1, Acrobot-v1, MountainCar-v0 and LunarLander-v3, 5 seeds per cell
# (configs/sweeps/benchmark.yaml), and its report. Needs the box2d and report extras:
#     pip install -e '.[box2d,report]'
# About 90 minutes with 2 workers on a 2-core machine (87 min on 2026-12-04). Re-running skips
# finished runs and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m dqn_stable.sweep --config configs/sweeps/benchmark.yaml --workers 2 --out sweeps/benchmark
"$PY" -m dqn_stable.report sweeps/benchmark --out results/benchmark
