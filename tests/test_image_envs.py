"""Image observations on real MinAtar and Atari games: env wrappers, snapshots, frame-stack replay,
training runs through the CLI, and the error for a missing extra."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn_stable import train
from dqn_stable.config import AtariConfig, EnvConfig, config_from_dict, dump_config, load_config
from dqn_stable.envs import (
    ChannelsFirst,
    EnvSpec,
    LifeLossTerminal,
    make_env,
    make_vector_env,
    restore_env,
    snapshot_env,
)
from dqn_stable.recorder import Recorder, Tags
from dqn_stable.replay import FrameStackReplay, ReplayBuffer
from dqn_stable.trainer import CONFIG_FILE, SUMMARY_FILE, Trainer, load_run

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

needs_minatar = pytest.mark.skipif(
    importlib.util.find_spec("minatar") is None,
    reason="the minatar extra is not installed: pip install 'dqn_stable[minatar]'",
)
needs_atari = pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
    reason="the atari extra is not installed: pip install 'dqn_stable[atari]'",
)

SHORT = [  # a preset cut to a few seconds: 600 env steps, 10 updates, one evaluation episode
    "train.total_steps=600", "replay.learning_starts=200", "replay.capacity=2000",
    "replay.batch_size=32", "train.train_every=40", "train.gradient_steps=1",
    "train.log_every=200", "eval.every=600", "eval.episodes=1", "checkpoint.every=300",
]
SHORT_UPDATES = (600 - 200) // 40 + 1


def chain(env: gym.Env) -> list[str]:
    """The env's wrapper classes, outermost first, down to the base env."""
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    return [*names, type(env).__name__]


def find(env: gym.Env, cls: type) -> gym.Wrapper | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, cls):
            return env
        env = env.env
    return None


class MemoryRecorder(Recorder):
    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag].append((step, value))


# --- MinAtar --------------------------------------------------------------------------------------


@needs_minatar
def test_minatar_planes_become_channels_first_uint8():
    env, spec = make_env(EnvConfig(id="MinAtar/Breakout-v1"))
    assert spec == EnvSpec(obs_shape=(4, 10, 10), obs_dtype=np.dtype(np.uint8), num_actions=3)
    assert spec.obs_scale == 1.0  # 0/1 planes
    assert chain(env) == ["ChannelsFirst", "OrderEnforcing", "PassiveEnvChecker", "BaseEnv"]
    obs, _ = env.reset(seed=0)
    raw = env.unwrapped.game.state()  # (10, 10, 4) bool, channels last
    assert raw.shape == (10, 10, 4) and raw.dtype == bool
    np.testing.assert_array_equal(obs, np.moveaxis(raw, -1, 0).astype(np.uint8))
    assert obs.flags.c_contiguous and obs.dtype == np.uint8
    assert env.observation_space == gym.spaces.Box(0, 1, (4, 10, 10), np.uint8)


@needs_minatar
@pytest.mark.parametrize(("game", "channels", "actions"), [
    ("Asterix", 4, 5), ("Freeway", 7, 3), ("SpaceInvaders", 6, 4), ("Seaquest", 10, 6),
])
def test_every_minatar_game_has_its_shape_and_minimal_action_set(game, channels, actions):
    _, spec = make_env(EnvConfig(id=f"MinAtar/{game}-v1"))
    assert (spec.obs_shape, spec.num_actions) == ((channels, 10, 10), actions)


@needs_minatar
def test_minatar_frame_stack_adds_a_leading_axis():
    env, spec = make_env(EnvConfig(id="MinAtar/Breakout-v1", frame_stack=3))
    assert spec.obs_shape == (3, 4, 10, 10)
    obs, _ = env.reset(seed=0)
    assert all(np.array_equal(obs[i], obs[0]) for i in (1, 2))  # padded with the first frame
    next_obs, *_ = env.step(1)
    np.testing.assert_array_equal(next_obs[:-1], obs[1:])


@needs_minatar
def test_minatar_snapshot_continues_exactly_mid_episode():
    env, _ = make_env(EnvConfig(id="MinAtar/Breakout-v1"))
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(int(rng.integers(3)))
    copy = restore_env(snapshot_env(env))
    actions = rng.integers(3, size=60).tolist()
    runs = []
    for e in (env, copy):
        steps = []
        for action in actions:
            obs, reward, terminated, truncated, _ = e.step(action)
            steps.append((obs.tobytes(), reward, terminated, truncated))
            if terminated:
                steps.append(e.reset()[0].tobytes())  # sticky actions' and spawns' RNG go on too
        runs.append(steps)
    assert runs[0] == runs[1]
    assert any(step[2] for step in runs[0] if isinstance(step, tuple))  # an episode ended


# --- Atari ----------------------------------------------------------------------------------------


ATARI_TRAINING = AtariConfig(terminal_on_life_loss=True, clip_rewards=True)


@needs_atari
def test_atari_frames_are_stacked_84x84_grayscale_bytes():
    env, spec = make_env(EnvConfig(id="ALE/Pong-v5", frame_stack=4))
    assert (spec.obs_shape, spec.obs_dtype, spec.num_actions) == ((4, 84, 84), np.uint8, 6)
    assert spec.obs_scale == 1 / 255
    assert env.unwrapped.spec.kwargs["frameskip"] == 1  # AtariPreprocessing skips the frames
    preprocessing = find(env, gym.wrappers.AtariPreprocessing)
    assert (preprocessing.frame_skip, preprocessing.noop_max) == (4, 30)
    assert preprocessing.terminal_on_life_loss is False  # LifeLossTerminal's job, training only
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    _, single = make_env(EnvConfig(id="ALE/Pong-v5", atari=AtariConfig(screen_size=42)))
    assert single.obs_shape == (1, 42, 42)  # one frame still gets its leading axis


@needs_atari
def test_atari_eval_env_has_no_clipping_or_life_loss_episodes():
    config = EnvConfig(id="ALE/Breakout-v5", frame_stack=4, atari=ATARI_TRAINING)
    train_env, _ = make_env(config)
    eval_env, _ = make_env(config, evaluation=True)
    assert chain(train_env)[:4] == [
        "FrameStackObservation", "ClipReward", "LifeLossTerminal", "AtariPreprocessing"
    ]
    clip = find(train_env, gym.wrappers.ClipReward)
    assert [float(clip.func(r)) for r in (-3.0, -1.0, 0.0, 1.0, 7.0)] == [-1, -1, 0, 1, 1]
    assert chain(eval_env)[:2] == ["FrameStackObservation", "AtariPreprocessing"]
    assert find(eval_env, gym.wrappers.ClipReward) is None
    assert find(eval_env, LifeLossTerminal) is None


@needs_atari
def test_a_lost_life_ends_a_training_episode_only_and_the_game_goes_on():
    """Both envs play the same seeded game with the same actions: at the first lost life the
    training env reports terminated, the eval env does not; the training env's reset then
    continues that game (4 lives left, frame counter running on) instead of a new one."""
    config = EnvConfig(id="ALE/Breakout-v5", atari=ATARI_TRAINING)
    train_env, _ = make_env(config)
    eval_env, _ = make_env(config, evaluation=True)
    train_env.reset(seed=1)
    eval_env.reset(seed=1)
    ale = train_env.unwrapped.ale
    assert ale.lives() == 5
    rng = np.random.default_rng(0)
    steps = 0
    while ale.lives() == 5 and steps < 3000:
        action = int(rng.integers(4))
        _, _, terminated, _, _ = train_env.step(action)
        _, _, eval_terminated, _, _ = eval_env.step(action)
        steps += 1
    assert (terminated, eval_terminated) == (True, False), steps
    assert eval_env.unwrapped.ale.lives() == 4
    frame = ale.getEpisodeFrameNumber()
    train_env.reset()
    assert ale.lives() == 4
    assert ale.getEpisodeFrameNumber() == frame + 4  # one no-op step of 4 frames, same game


@needs_atari
def test_atari_env_cannot_be_snapshot():
    env, _ = make_env(EnvConfig(id="ALE/Pong-v5"))
    env.reset(seed=0)
    assert snapshot_env(env) is None  # AtariEnv pickles only its constructor arguments


@needs_atari
def test_vector_copies_get_the_same_wrappers_as_the_single_env():
    config = EnvConfig(
        id="ALE/Breakout-v5", num_envs=2, frame_stack=4, atari=ATARI_TRAINING
    )
    envs, spec = make_vector_env(config)
    single, _ = make_env(config)
    assert spec.obs_shape == (4, 84, 84)
    assert [chain(e) for e in envs.envs] == [chain(single)] * 2
    assert envs.observation_space.shape == (2, 4, 84, 84)
    envs.close()


# --- Training runs --------------------------------------------------------------------------------


@needs_minatar
def test_minatar_preset_trains_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "dqn_stable.train",
               "--config", str(CONFIGS / "minatar" / "breakout.yaml"), "--run-dir", str(run_dir),
               *SHORT]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert (summary["env_id"], summary["status"], summary["env_steps"]) == (
        "MinAtar/Breakout-v1", "finished", 600
    )
    assert summary["gradient_updates"] == SHORT_UPDATES
    [point] = summary["eval_curve"]
    assert point["env_step"] == 600 and len(point["returns"]) == 1
    assert summary["final_eval_return_mean"] == point["returns"][0] >= 0.0
    # minatar torso: conv 4->16 (3x3), fc 1024->128, head 128->3
    assert summary["network_parameters"] == (4 * 9 * 16 + 16) + (1024 * 128 + 128) + (128 * 3 + 3)


@needs_atari
def test_pong_preset_trains_through_the_cli_with_frame_stack_replay(tmp_path, caplog):
    run_dir = tmp_path / "run"
    argv = ["--config", str(CONFIGS / "atari" / "pong.yaml"), "--run-dir", str(run_dir), *SHORT,
            "env.kwargs.max_episode_steps=2000"]  # emulator frames: games cut at 500 env steps
    assert train.main(argv) == 0
    # the CLI routes warnings to logging
    assert "env ALE/Pong-v5 cannot be saved (its state does not pickle)" in caplog.text
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert (summary["env_id"], summary["status"], summary["env_steps"]) == (
        "ALE/Pong-v5", "finished", 600
    )
    assert summary["gradient_updates"] == SHORT_UPDATES
    [point] = summary["eval_curve"]
    assert -21.0 <= point["returns"][0] <= 21.0 and point["returns"][0] == int(point["returns"][0])

    with pytest.warns(UserWarning, match="restarting the episode that was in progress"):
        trainer = load_run(run_dir)
    try:
        assert isinstance(trainer.replay, FrameStackReplay)
        assert (trainer.replay.obs_shape, trainer.replay.num_streams) == ((4, 84, 84), 1)
        assert 0 < len(trainer.replay) <= 600
        assert trainer.agent.network.torso_kind == "nature"
        assert trainer.agent.network.obs_scale == 1 / 255
    finally:
        trainer.close()



@needs_atari
def test_an_atari_run_resumes_with_its_frame_stack_replay_and_a_new_game(tmp_path):
    """ALE cannot be saved, so the resumed run starts a new game; the replay (its frames, streams
    and sampling RNG) comes back whole and takes the new game's frames."""
    config = load_config(CONFIGS / "atari" / "pong.yaml", SHORT)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)
    first = Trainer(config)
    with pytest.warns(UserWarning, match="env ALE/Pong-v5 cannot be saved"):
        first.run(run_dir, should_stop=lambda: first.env_step >= 300)
    stored = first.replay.state_dict()
    first.close()
    with pytest.warns(UserWarning, match="restarting the episode that was in progress at env "
                                         "step 300"):
        resumed = load_run(run_dir)
    try:
        assert len(resumed.replay) == len(first.replay) > 0
        state = resumed.replay.state_dict()
        assert state.keys() == stored.keys()
        for key, value in stored.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(state[key], value, err_msg=key)
            else:
                assert state[key] == value, key
        with pytest.warns(UserWarning, match="cannot be saved"):
            result = resumed.run(run_dir)
    finally:
        resumed.close()
    assert (result.status, result.summary["env_steps"]) == ("finished", 600)
    assert result.summary["gradient_updates"] == SHORT_UPDATES

@needs_minatar
def test_stacked_minatar_frames_train_from_vector_envs_with_one_stream_each(tmp_path):
    config = load_config(CONFIGS / "minatar" / "breakout.yaml", [
        *SHORT, "env.frame_stack=2", "env.num_envs=2",
    ])
    trainer = Trainer(config)
    try:
        assert isinstance(trainer.replay, FrameStackReplay)
        assert (trainer.replay.obs_shape, trainer.replay.num_streams) == ((2, 4, 10, 10), 2)
        assert trainer.agent.network.torso.conv1.in_channels == 8  # 2 frames x 4 planes
        result = trainer.run(tmp_path / "run")
    finally:
        trainer.close()
    assert (result.status, result.summary["env_steps"]) == ("finished", 600)
    assert result.summary["gradient_updates"] == SHORT_UPDATES


@needs_minatar
def test_unstacked_minatar_uses_the_plain_replay():
    trainer = Trainer(load_config(CONFIGS / "minatar" / "breakout.yaml", SHORT))
    try:
        assert type(trainer.replay) is ReplayBuffer
    finally:
        trainer.close()


@needs_minatar
def test_a_minatar_run_resumed_mid_episode_equals_the_uninterrupted_one(tmp_path):
    config = load_config(CONFIGS / "minatar" / "breakout.yaml", [*SHORT, "train.train_every=4"])
    whole, whole_recorder = Trainer(config), MemoryRecorder()
    whole_result = whole.run(tmp_path / "whole", whole_recorder)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)
    first, recorder = Trainer(config), MemoryRecorder()
    stopped = first.run(run_dir, recorder, should_stop=lambda: first.env_step >= 333)
    assert (stopped.status, first.env_step) == ("interrupted", 333)
    assert first.episode_length > 0  # mid-episode: the env snapshot is what makes this exact
    resumed = load_run(run_dir)
    assert resumed.episode_length == first.episode_length
    result = resumed.run(run_dir, recorder)

    for tag in (Tags.TD_LOSS, Tags.EPISODIC_RETURN, Tags.EPISODIC_LENGTH):
        assert recorder.scalars[tag] == whole_recorder.scalars[tag], tag
    assert len(whole_recorder.scalars[Tags.EPISODIC_RETURN]) > 5
    assert result.summary["eval_curve"][-1]["returns"] == (
        whole_result.summary["eval_curve"][-1]["returns"]
    )
    for name, tensor in whole.agent.network.state_dict().items():
        assert torch.equal(resumed.agent.network.state_dict()[name], tensor), name
    for trainer in (whole, first, resumed):
        trainer.close()


# --- A missing extra ------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "preset", "env_id", "extra", "reason"), [
    ("ale_py", "atari/pong.yaml", "ALE/Pong-v5", "atari",
     "import of ale_py halted; None in sys.modules"),
    ("minatar", "minatar/breakout.yaml", "MinAtar/Breakout-v1", "minatar",
     "No module named 'minatar.gym'; 'minatar' is not a package"),
])
def test_a_missing_extra_exits_2_with_the_pip_line(tmp_path, module, preset, env_id, extra,
                                                    reason):
    """``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys
        sys.modules[{module!r}] = None
        from dqn_stable import train
        raise SystemExit(train.main([
            "--config", {str(CONFIGS / preset)!r}, "--run-dir", {str(run_dir)!r}
        ]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: env {env_id!r} needs the {extra} extra: pip install 'dqn_stable[{extra}]' "
        f"({reason})"
    )
    assert not run_dir.exists()


def test_a_torso_that_cannot_take_the_observations_is_a_config_error():
    from dqn_stable.config import ConfigError

    data = {"env": {"id": "CartPole-v1"}, "network": {"torso": "nature"}}
    with pytest.raises(ConfigError, match=r"^cannot build the Q-network for env CartPole-v1: "
                                          r"torso 'nature' \(network.torso\) cannot take "
                                          r"observations of shape \(4,\)"):
        Trainer(config_from_dict(data))


@needs_minatar
def test_a_frame_stack_replay_too_small_for_one_transition_is_a_config_error():
    from dqn_stable.config import ConfigError

    overrides = ["env.frame_stack=4", "replay.capacity=4", "replay.batch_size=4"]
    with pytest.raises(ConfigError, match=re.escape(
        "replay.capacity = 4: capacity 4 gives each of 1 streams 4 entries, but one transition "
        "of 4 stacked frames needs 5; raise replay.capacity"
    )):
        Trainer(load_config(CONFIGS / "minatar" / "breakout.yaml", overrides))


def test_channels_first_refuses_flat_observations():
    from dqn_stable.envs import EnvError

    with pytest.raises(EnvError, match=r"ChannelsFirst needs \(H, W, C\) observations"):
        ChannelsFirst(gym.make("CartPole-v1"))
