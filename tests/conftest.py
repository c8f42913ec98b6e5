"""Shared fixtures for the runner's tests: a tiny CartPole config and one finished CLI run."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import sys
from pathlib import Path

import pytest
import yaml

# Under `pytest` this directory is on sys.path already; a subprocess needs it on PYTHONPATH.
TESTS_DIR = Path(__file__).resolve().parent

TINY = {
    "seed": 3,
    "env": {"id": "CartPole-v1"},
    "network": {"hidden": [16, 16]},
    "optimizer": {"lr": 1e-3},
    "replay": {"capacity": 2000, "batch_size": 32, "learning_starts": 100},
    "train": {"total_steps": 1250, "train_every": 2, "gradient_steps": 2, "log_every": 100},
    "exploration": {"decay_steps": 1000},
    "eval": {"every": 500, "episodes": 2},
    "checkpoint": {"every": 250},
}
"""A CartPole run of about two seconds. 1250 env steps is not a multiple of eval.every or
log_every, so the final evaluation and checkpoint fall between the periodic ones."""


def tiny_data(**dotted) -> dict:
    """TINY with ``section.key=value`` changes, e.g. ``tiny_data(**{"train.total_steps": 300})``."""
    data = copy.deepcopy(TINY)
    for key, value in dotted.items():
        *sections, leaf = key.split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return data


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def expected_updates(total_steps, learning_starts, train_every, gradient_steps) -> int:
    """Gradient updates of a run: one round of ``gradient_steps`` after every env step s with
    s >= learning_starts (and s >= 1) and s a multiple of train_every, up to total_steps."""
    first = math.ceil(max(learning_starts, 1) / train_every) * train_every
    rounds = (total_steps - first) // train_every + 1 if first <= total_steps else 0
    return rounds * gradient_steps


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """TINY written as ``tmp_path/tiny.yaml`` (so the run is named 'tiny')."""
    return write_yaml(tmp_path / "tiny.yaml", TINY)


@pytest.fixture
def make_config(tmp_path):
    """``make_config(name, **dotted)``: TINY with changes, written to ``tmp_path/<name>.yaml``."""

    def make(name: str = "tiny", **dotted) -> Path:
        return write_yaml(tmp_path / f"{name}.yaml", tiny_data(**dotted))

    return make


@contextlib.contextmanager
def process_state_kept():
    """train.main installs SIGINT/SIGTERM handlers and routes warnings to logging; undo both."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        logging.captureWarnings(False)


@pytest.fixture(autouse=True)
def _keep_process_state():
    with process_state_kept():
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished run of TINY through the CLI's ``main`` as ``python -m dqn_stable.train
    --config tiny.yaml --run-dir run`` would make it: ``(run_dir, config_path, command)``."""
    from dqn_stable import train

    root = tmp_path_factory.mktemp("finished")
    config_path = write_yaml(root / "tiny.yaml", TINY)
    run_dir = root / "run"
    argv = ["--config", str(config_path), "--run-dir", str(run_dir)]
    saved_argv = sys.argv
    sys.argv = ["dqn_stable/train.py", *argv]  # command.txt records sys.argv, as in a real CLI
    try:
        with process_state_kept():
            code = train.main()
    finally:
        sys.argv = saved_argv
    assert code == 0
    command = [sys.executable, "-m", "dqn_stable.train", *argv]
    return run_dir, config_path, command
