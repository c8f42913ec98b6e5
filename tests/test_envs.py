"""Environments from config: ids (and ``module:Env-v0`` ids), kwargs, space checks, snapshots."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dqn_stable.config import EnvConfig
from dqn_stable.envs import EnvError, EnvSpec, make_env, restore_env, snapshot_env


def balance(obs) -> int:
    """Push the cart towards the side the pole falls to: keeps CartPole up for 100+ steps."""
    return int(obs[2] + obs[3] > 0)


def test_cartpole_spec():
    env, spec = make_env(EnvConfig(id="CartPole-v1"))
    assert spec == EnvSpec(obs_shape=(4,), obs_dtype=np.dtype(np.float32), num_actions=2)
    assert env.spec.id == "CartPole-v1"


def test_module_colon_id_imports_the_module_that_registers_the_env():
    env, spec = make_env(EnvConfig(id="toy_envs:Counter-v0", kwargs={"episode_length": 3}))
    assert spec == EnvSpec(obs_shape=(3,), obs_dtype=np.dtype(np.float32), num_actions=2)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0, 1.0])
    steps = [env.step(0) for _ in range(3)]
    assert [(float(r), term, trunc) for _, r, term, trunc, _ in steps] == [
        (1.0, False, False), (1.0, False, False), (1.0, True, False)
    ]


def test_max_episode_steps_kwarg_truncates_cartpole_at_50():
    env, _ = make_env(EnvConfig(id="CartPole-v1", kwargs={"max_episode_steps": 50}))
    obs, _ = env.reset(seed=0)
    for step in range(1, 51):
        obs, _, terminated, truncated, _ = env.step(balance(obs))
        assert not terminated
        assert truncated == (step == 50), step


@pytest.mark.parametrize(("env_id", "kwargs", "message"), [
    ("CartPol-v1", {}, "cannot make env 'CartPol-v1': Environment `CartPol` doesn't exist. "
                       "Did you mean: `CartPole`?"),
    ("CartPole-v9", {}, "cannot make env 'CartPole-v9': Environment version `v9` for environment "
                        "`CartPole` doesn't exist."),
    ("no_such_module:X-v0", {}, "cannot make env 'no_such_module:X-v0': No module named "
                                "'no_such_module'."),
    ("CartPole-v1", {"bogus": 1}, "cannot make env 'CartPole-v1' with env.kwargs {'bogus': 1}: "
                                  "CartPoleEnv.__init__() got an unexpected keyword argument "
                                  "'bogus'"),
    ("Pendulum-v1", {}, "DQN needs a Discrete action space, but Pendulum-v1 has "
                        "Box(-2.0, 2.0, (1,), float32); choose an env with discrete actions"),
    ("FrozenLake-v1", {}, "FrozenLake-v1 has observation space Discrete(16); only Box "
                          "observations are supported"),
])
def test_bad_envs_raise_one_line(env_id, kwargs, message):
    with pytest.raises(EnvError) as info:
        make_env(EnvConfig(id=env_id, kwargs=kwargs))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_snapshot_continues_cartpole_exactly_mid_episode():
    env, _ = make_env(EnvConfig(id="CartPole-v1", kwargs={"max_episode_steps": 30}))
    obs, _ = env.reset(seed=1)
    for _ in range(20):
        obs, *_ = env.step(balance(obs))
    copy = restore_env(snapshot_env(env))
    original_steps, copied_steps = [], []
    for steps, e in ((original_steps, env), (copied_steps, copy)):
        o = obs
        for _ in range(10):
            o, reward, terminated, truncated, _ = e.step(balance(o))
            steps.append((o.tolist(), reward, terminated, truncated))
        steps.append(e.reset()[0].tolist())  # the env's RNG continues too
    assert copied_steps == original_steps
    assert original_steps[9][3] is True  # truncated at step 30 in both


def test_unpicklable_env_has_no_snapshot():
    env = gym.make("toy_envs:Unpicklable-v0")
    env.reset(seed=0)
    assert snapshot_env(env) is None


def test_ezpickle_env_has_no_snapshot_and_an_old_snapshot_of_one_restores_to_none():
    """Box2D envs pickle only their constructor arguments: unpickled, LunarLander has no lander."""
    pytest.importorskip("Box2D", reason="the box2d extra is not installed")
    import pickle

    env, _ = make_env(EnvConfig(id="LunarLander-v3"))
    env.reset(seed=0)
    env.step(0)
    assert snapshot_env(env) is None
    raw = pickle.dumps(env)  # what a checkpoint written before the check holds
    assert pickle.loads(raw).unwrapped.lander is None
    assert restore_env(raw) is None
