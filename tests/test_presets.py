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


BUDGETS = {  # env steps per run (issue 4)
    "CartPole-v1": 50_000, "Acrobot-v1": 100_000, "MountainCar-v0": 120_000,
    "LunarLander-v3": 200_000,
}
METHOD_PRESETS = {
    "CartPole-v1": "cartpole.yaml", "Acrobot-v1": "acrobot.yaml",
    "MountainCar-v0": "mountaincar.yaml", "LunarLander-v3": "lunarlander.yaml",
}


@pytest.mark.parametrize("env_id", sorted(METHOD_PRESETS))
def test_method_presets_are_the_method(env_id):
    cfg = load_config(CONFIGS / METHOD_PRESETS[env_id])
    assert (cfg.env.id, cfg.train.total_steps) == (env_id, BUDGETS[env_id])
    assert (cfg.network.activation, cfg.network.tgelu_range) == ("tgelu", (-1.0, 1.0))
    assert (cfg.agent.target, cfg.agent.loss, cfg.agent.global_clip) == ("none", "mse", None)
    assert cfg.agent.output_clip == 1.0


# RL Baselines3 Zoo's hyperparams/dqn.yml, in SB3's terms: learning_rate, batch_size, buffer_size,
# learning_starts, gamma, target_update_interval (env steps), train_freq, gradient_steps (-1: one
# per env step collected), exploration_fraction, exploration_final_eps, n_timesteps.
ZOO = {
    "Acrobot-v1": (6.3e-4, 128, 50_000, 0, 0.99, 250, 4, -1, 0.12, 0.1, 100_000),
    "MountainCar-v0": (4e-3, 128, 10_000, 1000, 0.98, 600, 16, 8, 0.2, 0.07, 120_000),
    "LunarLander-v3": (6.3e-4, 128, 50_000, 0, 0.99, 250, 4, -1, 0.12, 0.1, 100_000),
}


@pytest.mark.parametrize("env_id", sorted(ZOO))
def test_baseline_presets_translate_rl_zoo(env_id):
    (lr, batch, buffer, starts, gamma, target_every, freq, grad_steps, fraction, final_eps,
     zoo_steps) = ZOO[env_id]
    cfg = load_config(CONFIGS / METHOD_PRESETS[env_id].replace(".yaml", "_baseline.yaml"))
    assert (cfg.env.id, cfg.train.total_steps) == (env_id, BUDGETS[env_id])
    assert (cfg.network.activation, cfg.network.hidden) == ("relu", (256, 256))
    assert (cfg.agent.target, cfg.agent.loss, cfg.agent.global_clip) == ("hard", "huber", 10.0)
    assert (cfg.agent.output_clip, cfg.agent.double) == (None, False)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.agent.gamma) == ("adam", lr, gamma)
    assert (cfg.replay.batch_size, cfg.replay.capacity) == (batch, buffer)
    assert cfg.replay.learning_starts == starts
    updates_per_round = freq if grad_steps == -1 else grad_steps
    assert (cfg.train.train_every, cfg.train.gradient_steps) == (freq, updates_per_round)
    # the Zoo's copy interval in env steps, as gradient updates at its update rate
    assert cfg.agent.target_update_every == target_every * updates_per_round // freq
    assert cfg.exploration.end == final_eps
    # the fraction applies to the run's budget (Zoo's n_timesteps where ours is larger)
    assert cfg.exploration.decay_steps == round(fraction * max(zoo_steps, BUDGETS[env_id]))


def test_benchmark_sweep_pairs_each_method_preset_with_its_baseline(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    sweep = load_sweep(CONFIGS / "sweeps" / "benchmark.yaml")
    cells = {(r.variant, r.env_id) for r in sweep.runs}
    assert cells == {(v, e) for v in ("method", "baseline") for e in BUDGETS}
    assert len(sweep.runs) == 2 * 4 * 5
    for run in sweep.runs:
        assert f"train.total_steps={BUDGETS[run.env_id]}" in run.overrides


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


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_trains_on_its_environment(path, tmp_path):
    """Each preset, cut to 1,200 env steps, makes its real environment, updates and evaluates."""
    from dqn_stable.trainer import Trainer

    preset = load_config(path)
    starts = min(preset.replay.learning_starts, 400)
    cfg = load_config(path, [
        "train.total_steps=1200", f"replay.learning_starts={starts}",
        f"replay.capacity={min(preset.replay.capacity, 5000)}",
        "train.train_every=100", "train.gradient_steps=2",
        "eval.every=1200", "eval.episodes=1", "checkpoint.every=600",
    ])
    result = Trainer(cfg).run(tmp_path / "run")
    assert result.status == "finished"
    assert result.summary["env_id"] == preset.env.id
    assert result.summary["env_steps"] == 1200
    assert result.summary["gradient_updates"] == 2 * ((1200 - max(starts, 100)) // 100 + 1)
