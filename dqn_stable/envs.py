"""Making environments from config: Gymnasium ids (and ``module:Env-v0`` ids), checked spaces.

MinAtar ids ('MinAtar/Breakout-v1') and ALE ids ('ALE/Pong-v5') are registered on first use, from
the packages of the ``minatar`` and ``atari`` extras. MinAtar's (10, 10, C) bool planes become
(C, 10, 10) uint8; ALE games get Gymnasium's ``AtariPreprocessing`` (``env.atari``) and a leading
frame-stack axis. Every observation reaching the agent is channels-first.
"""

from __future__ import annotations

import functools
import logging
import pickle
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from dqn_stable.config import AtariConfig, EnvConfig, is_ale_id

__all__ = [
    "ChannelsFirst",
    "EnvError",
    "EnvSpec",
    "LifeLossTerminal",
    "build_env",
    "make_env",
    "make_vector_env",
    "restore_env",
    "snapshot_env",
]

logger = logging.getLogger(__name__)


class EnvError(ValueError):
    """An environment that cannot be made, or that DQN cannot train on."""


@dataclass(frozen=True)
class EnvSpec:
    """What the agent and the replay buffer need to know about an environment."""

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int
    obs_scale: float = 1.0
    """Factor that brings observations to about [0, 1] for the network: 1/255 for 8-bit pixels
    (a uint8 Box whose high is 255, as ALE frames), else 1."""


def _is_minatar_id(env_id: str) -> bool:
    return env_id.rpartition(":")[2].startswith("MinAtar/")


def _register(env_id: str) -> None:
    """Import (and register) the package behind a MinAtar or ALE id; an :class:`EnvError` that
    names the extra to install when it is missing."""
    try:
        if is_ale_id(env_id):
            import ale_py
            import cv2  # noqa: F401  (AtariPreprocessing resizes with OpenCV)

            gym.register_envs(ale_py)
        elif _is_minatar_id(env_id):
            import minatar.gym

            if "MinAtar/Breakout-v1" not in gym.registry:
                minatar.gym.register_envs()
    except ImportError as exc:
        extra = "atari" if is_ale_id(env_id) else "minatar"
        raise EnvError(
            f"env {env_id!r} needs the {extra} extra: pip install 'dqn_stable[{extra}]' ({exc})"
        ) from None


class ChannelsFirst(gym.ObservationWrapper):
    """(H, W, C) observations as (C, H, W) uint8 (MinAtar's bool planes): the layout of torch's
    convolutions, one byte per value in replay."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if len(space.shape) != 3:
            raise EnvError(f"ChannelsFirst needs (H, W, C) observations, got {space}")
        self.observation_space = gym.spaces.Box(
            low=np.moveaxis(space.low, -1, 0).astype(np.uint8),
            high=np.moveaxis(space.high, -1, 0).astype(np.uint8),
            dtype=np.uint8,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0), dtype=np.uint8)


class LifeLossTerminal(gym.Wrapper):
    """An ALE game whose lost lives end episodes: ``step`` reports ``terminated`` when a life is
    lost, and ``reset`` then continues the same game with one no-op step instead of starting a new
    one (a new game only after the real game over, a truncation, or a reset with a seed). Mnih et
    al. (2015) train this way; Stable-Baselines3 calls it ``EpisodicLifeEnv``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        # lives > 0: some games (Q*bert) sit at 0 lives for a few frames before the game over.
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)  # 0 is NOOP in every game
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


def _atari_preprocessing(env: gym.Env, atari: AtariConfig, evaluation: bool) -> gym.Env:
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=atari.noop_max, frame_skip=atari.frame_skip,
        screen_size=atari.screen_size, terminal_on_life_loss=False, grayscale_obs=True,
    )
    # The two training signals stay out of evaluation: an eval return is the game score.
    if atari.terminal_on_life_loss and not evaluation:
        env = LifeLossTerminal(env)
    if atari.clip_rewards and not evaluation:
        env = gym.wrappers.ClipReward(env, -1.0, 1.0)
    return env


def build_env(config: EnvConfig, evaluation: bool = False) -> gym.Env:
    """``gymnasium.make(config.id, **config.kwargs)`` with the wrappers the config asks for,
    unchecked: the one builder of :func:`make_env` and of every copy of :func:`make_vector_env`.

    ``evaluation`` leaves out the training-only ALE signals (``env.atari.clip_rewards``,
    ``env.atari.terminal_on_life_loss``).
    """
    _register(config.id)
    ale = is_ale_id(config.id)
    kwargs = {**config.kwargs, "frameskip": 1} if ale else config.kwargs
    env = gym.make(config.id, **kwargs)
    if ale:
        env = _atari_preprocessing(env, config.atari, evaluation)
    elif _is_minatar_id(config.id):
        env = ChannelsFirst(env)
    # ALE frames are (H, W): a stack of one gives them their channel axis.
    if config.frame_stack > 1 or ale:
        env = gym.wrappers.FrameStackObservation(env, config.frame_stack, padding_type="reset")
    return env


def make_env(config: EnvConfig, *, evaluation: bool = False) -> tuple[gym.Env, EnvSpec]:
    """:func:`build_env` with its spaces checked for DQN; ``evaluation`` makes the env that
    evaluates the policy (no ALE reward clipping or life-loss episodes).

    Raises :class:`EnvError` with a one-line reason (Gymnasium's own suggestion for a mistyped
    id) for an unknown id, a module that fails to import, a missing extra (naming the pip command),
    bad kwargs, a non-Discrete action space or a non-Box observation space.
    """
    try:
        env = build_env(config, evaluation)
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
    """``config.num_envs`` copies of the (training) env as one Gymnasium vector env:
    ``SyncVectorEnv`` or, for ``config.vectorization == "async"``, ``AsyncVectorEnv`` (one process
    per copy). Each copy is made by :func:`build_env`, with the same wrappers as :func:`make_env`.

    A copy whose episode ends is reset within the same step (``AutoresetMode.SAME_STEP``): the step
    returns the new episode's first observation and keeps the ended episode's true last
    observation in ``info["final_obs"]``, so every step of every copy is a real transition. The
    id, kwargs and spaces are checked on one copy first, with :func:`make_env`'s errors.
    """
    probe, spec = make_env(config)
    probe.close()
    make_one = functools.partial(build_env, config)
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
    dtype = np.dtype(observations.dtype)
    pixels = dtype == np.uint8 and bool(np.all(observations.high == 255))
    return EnvSpec(
        tuple(observations.shape), dtype, int(actions.n), obs_scale=1 / 255 if pixels else 1.0
    )


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
