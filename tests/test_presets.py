"""The shipped presets load, and say what their comments say."""

from pathlib import Path

import pytest

from dqn_stable.config import Config, load_config
from dqn_stable.sweep import load_sweep

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if "sweeps" not in p.parts)
SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads(path):
    assert isinstance(load_config(path), Config)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_file_loads(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # sweep files name presets from the repository root
    assert load_sweep(path).runs


def test_paper_preset_is_the_paper_setting():
    cfg = load_config(CONFIGS / "paper" / "cartpole.yaml")
    assert cfg == Config(name="paper-cartpole")  # the defaults are the paper's values
    assert (cfg.agent.target, cfg.network.activation) == ("none", "tgelu")
    assert cfg.optimizer.name == "sgd"
    assert (cfg.optimizer.lr, cfg.agent.output_clip, cfg.replay.batch_size) == (3e-4, 1.0, 256)
    assert (cfg.replay.learning_starts, cfg.exploration.decay_steps) == (5000, 100_000)


def test_default_preset_is_the_method():
    cfg = load_config(CONFIGS / "cartpole.yaml")
    assert (cfg.network.activation, cfg.agent.target) == ("tgelu", "none")
    assert cfg.agent.global_clip is None
    assert cfg.agent.output_clip == 1.0


def test_baseline_preset_is_rl_zoos_dqn():
    cfg = load_config(CONFIGS / "cartpole_baseline.yaml")
    assert (cfg.network.activation, cfg.network.hidden) == ("relu", (256, 256))
    assert (cfg.agent.target, cfg.agent.loss, cfg.agent.global_clip) == ("hard", "huber", 10.0)
    assert cfg.agent.output_clip is None
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 2.3e-3)
    assert (cfg.replay.capacity, cfg.replay.batch_size, cfg.replay.learning_starts) == (
        100_000, 64, 1000
    )
    assert (cfg.train.train_every, cfg.train.gradient_steps, cfg.train.total_steps) == (
        256, 128, 50_000
    )
    assert (cfg.exploration.end, cfg.exploration.decay_steps) == (0.04, 8000)
