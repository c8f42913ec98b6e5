"""Making environments from config: Gymnasium ids (and ``module:Env-v0`` ids), checked spaces."""

from __future__ import annotations

import functools
import logging
import pickle
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from dqn_stable.config import EnvConfig

__all__ = ["EnvError", "EnvSpec", "make_env", "make_vector_env", "restore_env", "snapshot_env"]

logger = logging.getLogger(__name__)


class EnvError(ValueError):
    """An environment that cannot be made, or that DQN cannot train on."""


@dataclass(frozen=True)
class EnvSpec:
    """What the agent and the replay buffer need to know about an environment."""

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int


def make_env(config: EnvConfig) -> tuple[gym.Env, EnvSpec]:
    """``gymnasium.make(config.id, **config.kwargs)`` with its spaces checked for DQN.

    Raises :class:`EnvError` with a one-line reason (Gymnasium's own suggestion for a mistyped
    id) for an unknown id, a module that fails to import, bad kwargs, a non-Discrete action space
    or a non-Box observation space.
    """
    try:
        env = gym.make(config.id, **config.kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"cannot make env {config.id!r}: {exc}") from None
    except ImportError as exc:
        raise EnvError(f"cannot make env {config.id!r}: {exc}") from None
    except TypeError as exc:
        raise EnvError(
            f"cannot make env {config.id!r} with env.kwargs {config.kwargs}: {exc}"
        ) from None
    try:
        spec = _check_spaces(env, config.id)
    except EnvError:
        env.close()
        raise
    return env, spec


def make_vector_env(config: EnvConfig) -> tuple[gym.vector.VectorEnv, EnvSpec]:
    """``config.num_envs`` copies of the env as one Gymnasium vector env: ``SyncVectorEnv`` or,
    for ``config.vectorization == "async"``, ``AsyncVectorEnv`` (one process per copy).

    A copy whose episode ends is reset within the same step (``AutoresetMode.SAME_STEP``): the step
    returns the new episode's first observation and keeps the ended episode's true last
    observation in ``info["final_obs"]``, so every step of every copy is a real transition. The
    id, kwargs and spaces are checked on one copy first, with :func:`make_env`'s errors.
    """
    probe, spec = make_env(config)
    probe.close()
    make_one = functools.partial(gym.make, config.id, **config.kwargs)
    vector_cls = (
        gym.vector.AsyncVectorEnv if config.vectorization == "async" else gym.vector.SyncVectorEnv
    )
    envs = vector_cls(
        [make_one] * config.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    return envs, spec


def _check_spaces(env: gym.Env, env_id: str) -> EnvSpec:
    actions, observations = env.action_space, env.observation_space
    if not isinstance(actions, gym.spaces.Discrete):
        raise EnvError(
            f"DQN needs a Discrete action space, but {env_id} has {actions}; "
            "choose an env with discrete actions"
        )
    if not isinstance(observations, gym.spaces.Box):
        raise EnvError(
            f"{env_id} has observation space {observations}; only Box observations are supported"
        )
    return EnvSpec(tuple(observations.shape), np.dtype(observations.dtype), int(actions.n))


def _keeps_state_in_pickle(env: gym.Env) -> bool:
    """False for an env built on Gymnasium's ``EzPickle`` (Box2D's, MuJoCo's) at any layer: it
    pickles without error but keeps only its constructor arguments, so unpickled it is fresh and
    not even reset."""
    layer = env
    while layer is not None:
        if isinstance(layer, EzPickle):
            return False
        layer = layer.env if isinstance(layer, gym.Wrapper) else None
    return True


def snapshot_env(env: gym.Env) -> bytes | None:
    """The env pickled mid-episode (state, RNG, time-limit counter), or None if it cannot be
    (it does not pickle, or it pickles only its constructor arguments)."""
    if not _keeps_state_in_pickle(env):
        logger.debug("env %s pickles only its constructor arguments (EzPickle)", env)
        return None
    try:
        return pickle.dumps(env)
    except Exception as exc:  # Box2D, MuJoCo, ALE... hold unpicklable native objects
        logger.debug("env %s cannot be pickled: %s", env, exc)
        return None


def restore_env(snapshot: bytes) -> gym.Env | None:
    """An env from :func:`snapshot_env`, continuing exactly where it was; None when the snapshot
    holds only constructor arguments (written before such envs were recognised)."""
    env = pickle.loads(snapshot)
    if not _keeps_state_in_pickle(env):
        env.close()
        return None
    return env
