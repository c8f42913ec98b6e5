"""Uniform experience replay with a memory check before allocation.

Each stored transition keeps its own `obs` and `next_obs`, so a sampled transition never spans an
episode boundary, at the price of storing every observation twice.

This module never builds or calls torch modules; it only hands out torch tensors in a `Batch`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

_MEMINFO = Path("/proc/meminfo")

# Bytes per transition besides the two observations: int64 action, float32 reward, bool flag.
_SCALAR_BYTES_PER_TRANSITION = 8 + 4 + 1

_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")


class InsufficientMemoryError(MemoryError):
    """The replay buffer would not fit in the memory this machine has available."""


class Batch(NamedTuple):
    """A batch of B transitions, as torch tensors on the CPU.

    `obs` and `next_obs` have shape (B, *obs_shape) and keep the buffer's stored dtype (uint8
    frames stay uint8; scale them in the network). `actions` is int64 (B,), `rewards` float32 (B,)
    and `terminated` float32 (B,): 1.0 where the episode really ended, so the TD target must not
    bootstrap, and 0.0 otherwise, including steps cut by a time limit.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Returns the same batch with every tensor moved to `device`."""
        return Batch(*(tensor.to(device) for tensor in self))


def estimate_bytes(capacity: int, obs_shape: tuple[int, ...], obs_dtype: Any) -> int:
    """Bytes that a `ReplayBuffer` with these arguments allocates for its arrays."""
    return capacity * _bytes_per_transition(obs_shape, obs_dtype)


def available_memory_bytes() -> int | None:
    """Memory the OS can give a new allocation without swapping, or None if it cannot tell.

    Reads MemAvailable from /proc/meminfo (Linux), else free physical pages from sysconf.
    """
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # The kernel always reports it in kB.
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions, sampled uniformly with replacement.

    `obs`, `next_obs`, `actions`, `rewards` and `terminated` are the storage arrays, in ring
    order; only the first `len(self)` rows hold transitions. Sampling uses the buffer's own
    generator, seeded by `seed`, and its state is part of `state_dict()`.

    `available_bytes` replaces the probe of the machine's free memory (for tests); the
    constructor raises `InsufficientMemoryError` rather than allocate more than that.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: Any,
        seed: int | None = None,
        *,
        available_bytes: int | None = None,
    ) -> None:
        if not _is_int(capacity) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1 (transitions), got {capacity!r}")
        if not all(_is_int(dim) and dim >= 1 for dim in obs_shape):
            raise ValueError(f"obs_shape must be a tuple of ints >= 1, got {obs_shape!r}")
        capacity = int(capacity)
        obs_shape = tuple(int(dim) for dim in obs_shape)
        self.capacity = capacity
        self.obs_shape = obs_shape
        self.obs_dtype = np.dtype(obs_dtype)

        # np.empty only reserves address space: an oversized buffer would be OOM-killed (or swap)
        # when the ring fills up, possibly hours into training. Refuse it before allocating.
        if available_bytes is None:
            available_bytes = available_memory_bytes()
        needed = estimate_bytes(capacity, obs_shape, self.obs_dtype)
        if available_bytes is not None and needed > available_bytes:
            per_transition = _bytes_per_transition(obs_shape, self.obs_dtype)
            raise InsufficientMemoryError(
                f"replay buffer needs {_format_bytes(needed)} (capacity {capacity} x "
                f"{_format_bytes(per_transition)} per transition) but only "
                f"{_format_bytes(available_bytes)} is available; lower replay.capacity"
            )

        self.obs = np.empty((capacity, *obs_shape), dtype=self.obs_dtype)
        self.next_obs = np.empty((capacity, *obs_shape), dtype=self.obs_dtype)
        self.actions = np.empty(capacity, dtype=np.int64)
        self.rewards = np.empty(capacity, dtype=np.float32)
        self.terminated = np.empty(capacity, dtype=bool)
        self._rng = np.random.default_rng(seed)
        self._position = 0  # Row the next transition is written to.
        self._size = 0

    def __len__(self) -> int:
        """Number of stored transitions, at most `capacity`."""
        return self._size

    @property
    def full(self) -> bool:
        """True once `capacity` transitions are stored; each `add` then overwrites the oldest."""
        return self._size == self.capacity

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
    ) -> None:
        """Stores one transition, overwriting the oldest once the buffer is full.

        `next_obs` is the true next observation: after a time-limit truncation pass the final
        observation (not the reset one) with `terminated=False`, so the target bootstraps from it.
        Observations are cast to `obs_dtype`.
        """
        if np.shape(obs) != self.obs_shape or np.shape(next_obs) != self.obs_shape:
            raise ValueError(
                f"obs and next_obs must have shape {self.obs_shape}, "
                f"got {np.shape(obs)} and {np.shape(next_obs)}"
            )
        row = self._position
        self.obs[row] = obs
        self.next_obs[row] = next_obs
        self.actions[row] = action
        self.rewards[row] = reward
        self.terminated[row] = terminated
        self._position = (row + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def add_batch(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Stores n transitions given as arrays with leading dimension n, in order.

        Same result as n calls to `add`; see there for what `next_obs` must hold.
        """
        arrays = [np.asarray(x) for x in (obs, next_obs, actions, rewards, terminated)]
        n = arrays[2].shape[0] if arrays[2].ndim else 0  # A 0-d input fails the check below.
        expected_shapes = [(n, *self.obs_shape)] * 2 + [(n,)] * 3
        for name, array, shape in zip(_FIELDS, arrays, expected_shapes, strict=True):
            if array.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {array.shape}")

        added = n
        if n > self.capacity:
            # Sequential adds would overwrite the first n - capacity transitions anyway.
            skipped = n - self.capacity
            arrays = [array[skipped:] for array in arrays]
            self._position = (self._position + skipped) % self.capacity
            n = self.capacity
        start = self._position
        head = min(n, self.capacity - start)  # Rows that fit before the end of the ring.
        storage = (self.obs, self.next_obs, self.actions, self.rewards, self.terminated)
        for destination, source in zip(storage, arrays, strict=True):
            destination[start : start + head] = source[:head]
            destination[: n - head] = source[head:]
        self._position = (start + n) % self.capacity
        self._size = min(self._size + added, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """Draws `batch_size` transitions uniformly, with replacement, from the stored ones."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer; add transitions first")
        rows = self._rng.integers(0, self._size, size=batch_size)
        return Batch(
            obs=torch.from_numpy(self.obs[rows]),
            actions=torch.from_numpy(self.actions[rows]),
            rewards=torch.from_numpy(self.rewards[rows]),
            next_obs=torch.from_numpy(self.next_obs[rows]),
            terminated=torch.from_numpy(self.terminated[rows].astype(np.float32)),
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue adding and sampling exactly where this buffer is.

        Holds only numpy arrays (the filled rows) and plain Python values, so it pickles.
        """
        filled = slice(0, self._size)
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "obs_shape": self.obs_shape,
            "obs_dtype": self.obs_dtype.str,
            "position": self._position,
            "size": self._size,
            "rng_state": self._rng.bit_generator.state,
        }
        for name in _FIELDS:
            state[name] = getattr(self, name)[filled].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict()` from a buffer built with the same capacity, shape and dtype."""
        layout = {
            "capacity": (state["capacity"], self.capacity),
            "obs_shape": (tuple(state["obs_shape"]), self.obs_shape),
            "obs_dtype": (np.dtype(state["obs_dtype"]), self.obs_dtype),
        }
        for what, (theirs, mine) in layout.items():
            if theirs != mine:
                raise ValueError(
                    f"replay state has {what}={theirs} but this buffer has {what}={mine}; "
                    "build the buffer with the settings of the saved run"
                )
        size = state["size"]
        for name in _FIELDS:
            if len(state[name]) != size:
                raise ValueError(
                    f"replay state is inconsistent: {name} has {len(state[name])} rows, size={size}"
                )
            getattr(self, name)[:size] = state[name]
        self._position = state["position"]
        self._size = size
        self._rng.bit_generator.state = state["rng_state"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _bytes_per_transition(obs_shape: tuple[int, ...], obs_dtype: Any) -> int:
    obs_bytes = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    return 2 * obs_bytes + _SCALAR_BYTES_PER_TRANSITION


def _format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; counts under 1 KiB stay exact ('45 B')."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
