#!/usr/bin/env bash
# Regenerates results/cartpole_ablation/: the CartPole ablation sweep (configs/sweeps/
# cartpole_ablation.yaml: 25 variants x 5 seeds x 50k env steps, about 80 minutes with 2 workers
# on a 2-core machine) and its report. Re-running skips finished runs and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m dqn_stable.sweep --config configs/sweeps/cartpole_ablation.yaml --workers 2 \
    --out sweeps/cartpole-ablation
"$PY" -m dqn_stable.report sweeps/cartpole-ablation --out results/cartpole_ablation
