"""Tiny deterministic Gymnasium envs for the runner's tests, made through ``toy_envs:<Id>`` ids.

``gymnasium.make("toy_envs:Counter-v0")`` imports this module, whose body registers the envs
(the tests directory is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import threading

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observation [t / 100, 0, 1] at step t of the episode, reward 1 per step, and the episode
    ends (terminated) after ``episode_length`` steps, or never if that is None."""

    def __init__(self, episode_length: int | None = None) -> None:
        self.observation_space = spaces.Box(-1e3, 1e3, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode_length = episode_length
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / 100, 0.0, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode_length is not None and self.t >= self.episode_length
        return self._obs(), 1.0, terminated, False, {}


class HugeRewardEnv(CounterEnv):
    """A CounterEnv whose reward is 0 for the first ``after`` steps of the env's lifetime (over
    all episodes) and ``reward`` from then on: a TD target of 1e38 squares to inf in float32."""

    def __init__(self, after: int = 0, reward: float = 1e38, episode_length: int = 20) -> None:
        super().__init__(episode_length)
        self.after = after
        self.reward = reward
        self.lifetime_steps = 0

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        self.lifetime_steps += 1
        reward = self.reward if self.lifetime_steps > self.after else 0.0
        return obs, reward, terminated, truncated, info


class UnpicklableEnv(CounterEnv):
    """A CounterEnv holding a lock, so that ``pickle.dumps`` fails on it (like native envs). Its
    reset observation depends on the seed, so a test can tell which seed reset it."""

    def __init__(self, episode_length: int = 20) -> None:
        super().__init__(episode_length)
        self._lock = threading.Lock()
        self._offset = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / 100, self._offset, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._offset = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}


class EpisodeTagEnv(gym.Env):
    """Observation [tag, t, 1] at step t of an episode, where tag = 1000 * (the seed of the first
    reset) + the episode's index, so a stored transition shows which episode each of its ends is
    from. The k-th episode terminates after 3 + k % 4 steps; with a time limit below that it is
    truncated instead. Reward t."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1e9, 1e9, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.base = 0
        self.episode = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.base + self.episode, self.t, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.base, self.episode = 1000 * seed, -1
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.t >= 3 + self.episode % 4
        return self._obs(), float(self.t), terminated, False, {}


for _id, _entry_point in [
    ("Counter-v0", CounterEnv),
    ("HugeReward-v0", HugeRewardEnv),
    ("Unpicklable-v0", UnpicklableEnv),
    ("EpisodeTag-v0", EpisodeTagEnv),
]:
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry_point)
