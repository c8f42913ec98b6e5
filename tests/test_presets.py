"""The shipped presets load, and say what their comments say."""

import importlib.util
from pathlib import Path

import pytest

from dqn_stable.config import Config, config_to_dict, load_config
from dqn_stable.sweep import load_sweep

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if "sweeps" not in p.parts)
SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
# Presets whose environments need an extra: folder -> (modules, extra).
EXTRAS = {"minatar": (("minatar",), "minatar"), "atari": (("ale_py", "cv2"), "atari")}


def preset_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


@pytest.mark.parametrize("path", PRESETS, ids=preset_id)
def test_every_preset_loads(path):
    assert isinstance(load_config(path), Config)


@pytest.mark.parametrize("path", SWEEPS, ids=preset_id)
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


@pytest.mark.parametrize("path", PRESETS, ids=preset_id)
def test_every_preset_trains_on_its_environment(path, tmp_path):
    """Each preset, cut to 1,200 env steps, makes its real environment, updates and evaluates."""
    from dqn_stable.trainer import Trainer

    image_extra = EXTRAS.get(path.parent.name)
    if image_extra is not None:
        modules, extra = image_extra
        if any(importlib.util.find_spec(m) is None for m in modules):
            pytest.skip(f"the {extra} extra is not installed: pip install 'dqn_stable[{extra}]'")
    preset = load_config(path)
    starts = min(preset.replay.learning_starts, 400)
    # image games: an evaluation episode cut at 500 env steps (ALE counts 2000 emulator frames)
    time_limit = {"minatar": 500, "atari": 2000}.get(path.parent.name)
    cfg = load_config(path, [
        "train.total_steps=1200", f"replay.learning_starts={starts}",
        f"replay.capacity={min(preset.replay.capacity, 5000)}",
        "train.train_every=100", "train.gradient_steps=2",
        "eval.every=1200", "eval.episodes=1", "checkpoint.every=600",
        *([f"env.kwargs.max_episode_steps={time_limit}"] if time_limit else []),
    ])
    result = Trainer(cfg).run(tmp_path / "run")
    assert result.status == "finished"
    assert result.summary["env_id"] == preset.env.id
    assert result.summary["env_steps"] == 1200
    assert result.summary["gradient_updates"] == 2 * ((1200 - max(starts, 100)) // 100 + 1)


# --- MinAtar and Atari (issue 6) ------------------------------------------------------------------

MINATAR_GAMES = {
    "MinAtar/Breakout-v1": "breakout", "MinAtar/Asterix-v1": "asterix",
    "MinAtar/Freeway-v1": "freeway", "MinAtar/SpaceInvaders-v1": "space_invaders",
    "MinAtar/Seaquest-v1": "seaquest",
}
ATARI_GAMES = {"ALE/Pong-v5": "pong", "ALE/Breakout-v5": "breakout"}
# What the method changes in a baseline, and nothing else: its four settings, plus the target
# network's schedule that 'target: none' makes moot (and the run name).
METHOD_KEYS = {
    "name", "network.activation", "agent.target", "agent.target_update_every", "agent.loss",
    "agent.output_clip", "agent.global_clip",
}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "kwargs":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def assert_is_the_method(cfg):
    assert (cfg.network.activation, cfg.network.tgelu_range) == ("tgelu", (-1.0, 1.0))
    assert (cfg.agent.target, cfg.agent.loss, cfg.agent.global_clip) == ("none", "mse", None)
    assert cfg.agent.output_clip == 1.0


@pytest.mark.parametrize("env_id", sorted(MINATAR_GAMES))
def test_minatar_baselines_are_the_minatar_papers_dqn(env_id):
    """Young & Tian (2019), examples/dqn.py: BATCH_SIZE 32, REPLAY_BUFFER_SIZE 100000,
    TARGET_NETWORK_UPDATE_FREQ 1000, TRAINING_FREQ 1, NUM_FRAMES 5000000, FIRST_N_FRAMES 100000,
    REPLAY_START_SIZE 5000, END_EPSILON 0.1, STEP_SIZE 0.00025, GRAD_MOMENTUM (alpha) 0.95,
    MIN_SQUARED_GRAD 0.01, GAMMA 0.99; centered RMSprop, smooth L1 loss."""
    cfg = load_config(CONFIGS / "minatar" / f"{MINATAR_GAMES[env_id]}_baseline.yaml")
    assert (cfg.env.id, cfg.env.frame_stack, cfg.env.kwargs) == (
        env_id, 1, {"max_episode_steps": 10_000}
    )
    assert (cfg.network.torso, cfg.network.hidden, cfg.network.activation) == (
        "minatar", (128,), "relu"
    )
    assert (cfg.agent.target, cfg.agent.target_update_every, cfg.agent.double) == (
        "hard", 1000, False
    )
    assert (cfg.agent.loss, cfg.agent.gamma, cfg.agent.output_clip, cfg.agent.global_clip) == (
        "huber", 0.99, None, None
    )
    opt = cfg.optimizer
    assert (opt.name, opt.lr, opt.alpha, opt.eps, opt.centered) == (
        "rmsprop", 2.5e-4, 0.95, 0.01, True
    )
    assert (cfg.replay.batch_size, cfg.replay.capacity, cfg.replay.learning_starts) == (
        32, 100_000, 5000
    )
    assert (cfg.train.train_every, cfg.train.gradient_steps, cfg.train.total_steps) == (
        1, 1, 5_000_000
    )
    assert (cfg.exploration.start, cfg.exploration.end, cfg.exploration.decay_steps) == (
        1.0, 0.1, 100_000
    )
    assert (cfg.eval.every, cfg.eval.episodes, cfg.eval.epsilon) == (50_000, 10, 0.0)


@pytest.mark.parametrize(("folder", "env_id", "stem"), [
    *(("minatar", env_id, stem) for env_id, stem in sorted(MINATAR_GAMES.items())),
    *(("atari", env_id, stem) for env_id, stem in sorted(ATARI_GAMES.items())),
])
def test_image_method_presets_are_their_baselines_with_the_method(folder, env_id, stem):
    method = load_config(CONFIGS / folder / f"{stem}.yaml")
    baseline = load_config(CONFIGS / folder / f"{stem}_baseline.yaml")
    assert method.env.id == env_id
    assert_is_the_method(method)
    ours, theirs = flat(config_to_dict(method)), flat(config_to_dict(baseline))
    assert {key for key in ours if ours[key] != theirs[key]} <= METHOD_KEYS


@pytest.mark.parametrize("env_id", sorted(ATARI_GAMES))
def test_atari_baselines_translate_rl_zoo(env_id):
    """RL Baselines3 Zoo's dqn.yml 'atari' entry (AtariWrapper, frame_stack 4, CnnPolicy): lr 1e-4,
    buffer 100k, batch 32, learning_starts 100k, target_update_interval 1000 env steps,
    train_freq 4, gradient_steps 1, exploration_fraction 0.1, final eps 0.01, n_timesteps 1e7."""
    cfg = load_config(CONFIGS / "atari" / f"{ATARI_GAMES[env_id]}_baseline.yaml")
    assert (cfg.env.id, cfg.env.frame_stack, cfg.env.kwargs) == (env_id, 4, {})
    atari = cfg.env.atari
    assert (atari.frame_skip, atari.screen_size, atari.noop_max) == (4, 84, 30)
    assert (atari.terminal_on_life_loss, atari.clip_rewards) == (True, True)
    assert (cfg.network.torso, cfg.network.hidden, cfg.network.activation) == (
        "nature", (512,), "relu"
    )
    assert (cfg.agent.target, cfg.agent.loss, cfg.agent.global_clip) == ("hard", "huber", 10.0)
    assert (cfg.agent.output_clip, cfg.agent.double, cfg.agent.gamma) == (None, False, 0.99)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.eps) == ("adam", 1e-4, 1e-8)
    assert (cfg.replay.batch_size, cfg.replay.capacity, cfg.replay.learning_starts) == (
        32, 100_000, 100_000
    )
    assert (cfg.train.train_every, cfg.train.gradient_steps, cfg.train.total_steps) == (
        4, 1, 10_000_000
    )
    # the Zoo's copy interval of 1000 env steps, in gradient updates at one per 4 env steps
    assert cfg.agent.target_update_every == 1000 // 4
    assert (cfg.exploration.end, cfg.exploration.decay_steps) == (0.01, 1_000_000)
    assert (cfg.eval.every, cfg.eval.episodes, cfg.eval.epsilon) == (250_000, 10, 0.05)


def test_minatar_sweep_pairs_each_method_preset_with_its_baseline(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    sweep = load_sweep(CONFIGS / "sweeps" / "minatar.yaml")
    assert len(sweep.runs) == 2 * 5 * 3
    assert {(r.variant, r.env_id, r.seed) for r in sweep.runs} == {
        (v, e, s) for v in ("method", "baseline") for e in MINATAR_GAMES for s in (0, 1, 2)
    }
    for run in sweep.runs:
        assert "train.total_steps=1000000" in run.overrides
        suffix = "" if run.variant == "method" else "_baseline"
        assert run.config == f"configs/minatar/{MINATAR_GAMES[run.env_id]}{suffix}.yaml"
