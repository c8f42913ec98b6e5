"""Uniform experience replay with a memory check before allocation.

Two buffers with the same interface (`add`, `add_batch`, `sample`, `state_dict`, ...):

- `ReplayBuffer` keeps each transition's own `obs` and `next_obs`, so a sampled transition never
  spans an episode boundary, at the price of storing every observation twice. It works for any
  observation.
- `FrameStackReplay` is for stacks of k frames (Atari through `FrameStackObservation`): it stores
  each frame once and rebuilds both stacks when sampling, about 2k times less memory for images.

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

# FrameStackReplay, per entry besides its frame: the same scalars plus the is_transition flag.
_SCALAR_BYTES_PER_ENTRY = _SCALAR_BYTES_PER_TRANSITION + 1

_ENTRY_FIELDS = ("frames", "actions", "rewards", "terminated", "is_transition")

# Tags a FrameStackReplay state so a ReplayBuffer state (or another layout) is refused on load.
_FRAME_STACK_LAYOUT = "frame_stack_v1"


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

    @staticmethod
    def empty(batch_size: int, obs_shape: tuple[int, ...], obs_dtype: Any) -> Batch:
        """A batch of `batch_size` uninitialised transitions, for `sample(..., out=)` to fill."""
        obs = (batch_size, *obs_shape)
        # numpy-allocated, as the buffers' own arrays are: cheaper than torch.empty for small ones
        return Batch(
            obs=torch.from_numpy(np.empty(obs, dtype=obs_dtype)),
            actions=torch.from_numpy(np.empty(batch_size, dtype=np.int64)),
            rewards=torch.from_numpy(np.empty(batch_size, dtype=np.float32)),
            next_obs=torch.from_numpy(np.empty(obs, dtype=obs_dtype)),
            terminated=torch.from_numpy(np.empty(batch_size, dtype=np.float32)),
        )

    def _check_fits(self, batch_size: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        """ValueError unless this batch can hold a `sample(batch_size)` of such observations."""
        for name, got, like in zip(
            self._fields, self, Batch.empty(batch_size, obs_shape, obs_dtype), strict=True
        ):
            if (got.shape != like.shape or got.dtype != like.dtype or got.device.type != "cpu"
                    or not got.is_contiguous()):
                raise ValueError(
                    f"out.{name} is a {got.dtype} tensor of shape {tuple(got.shape)} on "
                    f"{got.device}; sample({batch_size}) needs {like.dtype} of shape "
                    f"{tuple(like.shape)}, contiguous on the CPU: make it with "
                    f"Batch.empty({batch_size}, {obs_shape}, {obs_dtype.name!r})"
                )


def _check_sample(buffer: ReplayBuffer | FrameStackReplay, batch_size: int,
                  out: Batch | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(buffer) == 0:
        raise ValueError("cannot sample from an empty replay buffer; add transitions first")
    # The trainer passes the same batch, for the same size, every time: check it once.
    if out is not None and (out is not buffer._fitting_out or batch_size != buffer._fitting_size):
        out._check_fits(batch_size, buffer.obs_shape, buffer.obs_dtype)
        buffer._fitting_out, buffer._fitting_size = out, batch_size


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

        per_transition = _bytes_per_transition(obs_shape, self.obs_dtype)
        _require_memory(
            "replay buffer", estimate_bytes(capacity, obs_shape, self.obs_dtype),
            f"capacity {capacity} x {_format_bytes(per_transition)} per transition",
            available_bytes,
        )

        self.obs = np.empty((capacity, *obs_shape), dtype=self.obs_dtype)
        self.next_obs = np.empty((capacity, *obs_shape), dtype=self.obs_dtype)
        self.actions = np.empty(capacity, dtype=np.int64)
        self.rewards = np.empty(capacity, dtype=np.float32)
        self.terminated = np.empty(capacity, dtype=bool)
        self._rng = np.random.default_rng(seed)
        self._fitting_out: Batch | None = None  # the last `out` sample() checked, and
        self._fitting_size = 0  # the batch size it was checked for
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
        _check_pair_shape(obs, next_obs, self.obs_shape)
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
        _check_batch_shapes(arrays, n, self.obs_shape)

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

    def sample(self, batch_size: int, out: Batch | None = None) -> Batch:
        """Draws `batch_size` transitions uniformly, with replacement, from the stored ones.

        With `out` (from `Batch.empty(batch_size, obs_shape, obs_dtype)`) they are written into
        its tensors, which are returned: the same draw, without allocating a batch (the trainer
        reuses one for every update). Each such call overwrites what the previous one wrote;
        without `out` the batch is new.
        """
        _check_sample(self, batch_size, out)
        rows = self._rng.integers(0, self._size, size=batch_size)
        if out is None:
            out = Batch.empty(batch_size, self.obs_shape, self.obs_dtype)
        np.take(self.obs, rows, axis=0, out=out.obs.numpy())
        np.take(self.actions, rows, out=out.actions.numpy())
        np.take(self.rewards, rows, out=out.rewards.numpy())
        np.take(self.next_obs, rows, axis=0, out=out.next_obs.numpy())
        out.terminated.numpy()[:] = self.terminated[rows]
        return out

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
        if "layout" in state:
            raise ValueError(
                f"replay state was saved by a FrameStackReplay ({state['layout']}), not a "
                "ReplayBuffer; resume with the replay buffer of the saved run"
            )
        layout = {
            "capacity": (state["capacity"], self.capacity),
            "obs_shape": (tuple(state["obs_shape"]), self.obs_shape),
            "obs_dtype": (np.dtype(state["obs_dtype"]), self.obs_dtype),
        }
        _check_same_layout(layout)
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


def estimate_framestack_bytes(
    capacity: int, obs_shape: tuple[int, ...], obs_dtype: Any, num_streams: int = 1
) -> int:
    """Bytes that a `FrameStackReplay` with these arguments allocates for its arrays."""
    entries = math.ceil(capacity / num_streams) * num_streams
    return entries * _bytes_per_entry(obs_shape[1:], obs_dtype)


class FrameStackReplay:
    """Replay for stacked frames that stores each frame once; same interface as `ReplayBuffer`.

    `obs_shape` is the stacked shape (k, *frame_shape). Each stream (one env copy of a vector env;
    row i of `add_batch` belongs to stream i) has its own ring of `ceil(capacity / num_streams)`
    entries, oldest overwritten first. An entry holds one frame with the action, reward and
    `terminated` flag of the step that produced it, and whether it ends a transition. The
    transition ending at entry e is rebuilt as obs = frames e-k .. e-1 and next_obs = frames
    e-k+1 .. e; it can be sampled while entry e-k is still in the ring.

    Episode boundaries are found by content: an `obs` equal to the stream's last k stored frames
    continues from them, any other `obs` (a reset, a restart after resuming) is first stored as k
    entries of its own. So each episode also uses k entries for its first observation, and the
    buffer holds fewer than `capacity` transitions: k fewer per episode in the ring, and a stream
    at most (ring entries - k) even within one endless episode.

    Rebuilding is exact only when `next_obs[:-1] == obs[1:]` (one step shifts the stack by one
    frame, as `FrameStackObservation` does within an episode); `add` and `add_batch` check it.
    Frames are compared bit for bit. Sampling uses the buffer's own generator, seeded by `seed`,
    whose state is part of `state_dict()`.

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
        num_streams: int = 1,
        available_bytes: int | None = None,
    ) -> None:
        if not _is_int(capacity) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1 (transitions), got {capacity!r}")
        if not obs_shape or not all(_is_int(dim) and dim >= 1 for dim in obs_shape):
            raise ValueError(
                f"obs_shape must be a non-empty tuple of ints >= 1 (k, *frame_shape), "
                f"got {obs_shape!r}"
            )
        if not _is_int(num_streams) or num_streams < 1:
            raise ValueError(f"num_streams must be an int >= 1 (env copies), got {num_streams!r}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(int(dim) for dim in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.num_streams = int(num_streams)
        self.stack = self.obs_shape[0]
        self.frame_shape = self.obs_shape[1:]
        self.ring_size = math.ceil(self.capacity / self.num_streams)  # Entries per stream.
        if self.ring_size <= self.stack:
            raise ValueError(
                f"capacity {capacity} gives each of {num_streams} streams {self.ring_size} "
                f"entries, but one transition of {self.stack} stacked frames needs "
                f"{self.stack + 1}; raise replay.capacity"
            )
        self._check_memory(available_bytes)

        shape = (self.num_streams, self.ring_size)
        self.frames = np.empty((*shape, *self.frame_shape), dtype=self.obs_dtype)
        self.actions = np.empty(shape, dtype=np.int64)
        self.rewards = np.empty(shape, dtype=np.float32)
        self.terminated = np.empty(shape, dtype=bool)
        self.is_transition = np.empty(shape, dtype=bool)
        self._rng = np.random.default_rng(seed)
        self._fitting_out: Batch | None = None  # the last `out` sample() checked, and
        self._fitting_size = 0  # the batch size it was checked for
        self._written = [0] * self.num_streams  # Entries ever written, per stream.
        self._size = 0  # Sampleable transitions, kept up to date by _write.

    def _check_memory(self, available_bytes: int | None) -> None:
        entries = self.num_streams * self.ring_size
        per_entry = _bytes_per_entry(self.frame_shape, self.obs_dtype)
        _require_memory(
            "frame-stack replay buffer",
            estimate_framestack_bytes(
                self.capacity, self.obs_shape, self.obs_dtype, self.num_streams
            ),
            f"{entries} entries x {_format_bytes(per_entry)} per entry", available_bytes,
        )

    def __len__(self) -> int:
        """Number of transitions that can be sampled (their k earlier frames are still stored)."""
        return self._size

    @property
    def full(self) -> bool:
        """True once every stream's ring is filled; each add then overwrites the oldest entries."""
        return min(self._written) >= self.ring_size

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
    ) -> None:
        """Stores one transition in stream 0; only for a buffer with `num_streams=1`.

        `next_obs` is the true next observation: after a time-limit truncation pass the final
        observation (not the reset one) with `terminated=False`, so the target bootstraps from it.
        Observations are cast to `obs_dtype`.
        """
        if self.num_streams != 1:
            raise ValueError(
                f"add() stores into stream 0 but this buffer has num_streams={self.num_streams}; "
                "use add_batch with one row per stream"
            )
        _check_pair_shape(obs, next_obs, self.obs_shape)
        obs, next_obs = self._cast(obs), self._cast(next_obs)
        self._check_shift(obs, next_obs, where="")
        self._store(0, obs, action, reward, next_obs, terminated)

    def add_batch(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Stores one transition per stream: row i of each array belongs to stream i.

        See `add` for what `next_obs` must hold. Every row is checked before any is stored, so a
        rejected call leaves the buffer as it was.
        """
        n = self.num_streams
        arrays = [np.asarray(x) for x in (obs, next_obs, actions, rewards, terminated)]
        _check_batch_shapes(arrays, n, self.obs_shape, " (one row per stream)")
        obs, next_obs = self._cast(arrays[0]), self._cast(arrays[1])
        for stream in range(n):
            self._check_shift(obs[stream], next_obs[stream], where=f"row {stream}: ")
        for stream in range(n):
            self._store(
                stream,
                obs[stream],
                arrays[2][stream],
                arrays[3][stream],
                next_obs[stream],
                arrays[4][stream],
            )

    def _cast(self, obs: Any) -> np.ndarray:
        return np.asarray(obs).astype(self.obs_dtype, copy=False)

    def _check_shift(self, obs: np.ndarray, next_obs: np.ndarray, where: str) -> None:
        if not _same_bits(next_obs[:-1], obs[1:]):
            raise ValueError(
                f"{where}next_obs[:-1] must equal obs[1:] (the stack of {self.stack} frames "
                "shifted by one step); FrameStackReplay needs frame-stacked observations such "
                "as FrameStackObservation's, use ReplayBuffer for other observations"
            )

    def _store(
        self,
        stream: int,
        obs: np.ndarray,
        action: Any,
        reward: Any,
        next_obs: np.ndarray,
        terminated: Any,
    ) -> None:
        if not self._continues(stream, obs):
            # A new (or restarted) episode: its first stack is no transition's next_obs yet.
            for frame in obs:
                self._write(stream, frame, 0, 0.0, False, is_transition=False)
        self._write(stream, next_obs[-1], action, reward, terminated, is_transition=True)

    def _continues(self, stream: int, obs: np.ndarray) -> bool:
        """Whether `obs` equals the last k frames stored for `stream`, bit for bit."""
        written, k = self._written[stream], self.stack
        if written < k:
            return False
        slots = np.arange(written - k, written) % self.ring_size
        return _same_bits(self.frames[stream, slots], obs)

    def _write(
        self,
        stream: int,
        frame: np.ndarray,
        action: Any,
        reward: Any,
        terminated: Any,
        *,
        is_transition: bool,
    ) -> None:
        entry = self._written[stream]
        # This write overwrites entry - ring_size, the first frame of entry `unstored`, which
        # therefore stops being sampleable. (ring_size > k keeps both slots distinct.)
        unstored = entry - self.ring_size + self.stack
        if unstored >= 0 and self.is_transition[stream, unstored % self.ring_size]:
            self._size -= 1
        slot = entry % self.ring_size
        self.frames[stream, slot] = frame
        self.actions[stream, slot] = action
        self.rewards[stream, slot] = reward
        self.terminated[stream, slot] = terminated
        self.is_transition[stream, slot] = is_transition
        self._size += is_transition
        self._written[stream] = entry + 1

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """Per stream, the first and one-past-last entry number whose k earlier frames are stored.

        Every sampleable transition ends at an entry in its stream's window; the other entries in
        it are the first frames of episodes.
        """
        written = np.array(self._written, dtype=np.int64)
        return np.maximum(written - self.ring_size + self.stack, 0), written

    def _sampleable(self) -> tuple[np.ndarray, np.ndarray]:
        """(streams, slots) of every sampleable transition, per stream from oldest to newest."""
        streams, slots = [], []
        for stream, (low, high) in enumerate(zip(*self._window(), strict=True)):
            stream_slots = np.arange(low, high) % self.ring_size
            stream_slots = stream_slots[self.is_transition[stream, stream_slots]]
            streams.append(np.full(len(stream_slots), stream, dtype=np.int64))
            slots.append(stream_slots)
        return np.concatenate(streams), np.concatenate(slots)

    def sample(self, batch_size: int, out: Batch | None = None) -> Batch:
        """Draws `batch_size` transitions uniformly, with replacement, from the sampleable ones;
        `out` as in `ReplayBuffer.sample`."""
        _check_sample(self, batch_size, out)
        return self._gather(*self._draw(batch_size), out)

    def _draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        # Uniform over the entries of all windows, redrawing episodes' first frames: uniform over
        # transitions, whatever each stream's share. Few redraws: k per episode are rejected.
        low, high = self._window()
        ends = np.cumsum(high - low)
        streams = np.empty(batch_size, dtype=np.int64)
        slots = np.empty(batch_size, dtype=np.int64)
        pending = np.arange(batch_size)
        while len(pending):
            draws = self._rng.integers(0, ends[-1], size=len(pending))
            stream = np.searchsorted(ends, draws, side="right")
            entry = high[stream] - (ends[stream] - draws)
            slot = entry % self.ring_size
            accepted = self.is_transition[stream, slot]
            streams[pending[accepted]] = stream[accepted]
            slots[pending[accepted]] = slot[accepted]
            pending = pending[~accepted]
        return streams, slots

    def _gather(self, streams: np.ndarray, slots: np.ndarray, out: Batch | None = None) -> Batch:
        """The transitions that end at these (stream, slot) entries, rebuilt as a `Batch` (into
        `out`'s tensors if given)."""
        window = (slots[:, None] + np.arange(-self.stack, 1)) % self.ring_size
        frames = self.frames[streams[:, None], window]  # (B, k + 1, *frame_shape)
        if out is None:
            out = Batch.empty(len(slots), self.obs_shape, self.obs_dtype)
        out.obs.numpy()[:] = frames[:, :-1]
        out.actions.numpy()[:] = self.actions[streams, slots]
        out.rewards.numpy()[:] = self.rewards[streams, slots]
        out.next_obs.numpy()[:] = frames[:, 1:]
        out.terminated.numpy()[:] = self.terminated[streams, slots]
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue adding and sampling exactly where this buffer is.

        Holds only numpy arrays (the slots written so far) and plain Python values, so it pickles.
        """
        filled = slice(0, min(max(self._written), self.ring_size))
        state: dict[str, Any] = {
            "layout": _FRAME_STACK_LAYOUT,
            "capacity": self.capacity,
            "obs_shape": self.obs_shape,
            "obs_dtype": self.obs_dtype.str,
            "num_streams": self.num_streams,
            "written": list(self._written),
            "rng_state": self._rng.bit_generator.state,
        }
        for name in _ENTRY_FIELDS:
            state[name] = getattr(self, name)[:, filled].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict()` of a FrameStackReplay with the same layout as this one."""
        if state.get("layout") != _FRAME_STACK_LAYOUT:
            raise ValueError(
                "replay state was saved by a ReplayBuffer (obs and next_obs per transition), "
                "not a FrameStackReplay; resume with the replay buffer of the saved run"
            )
        layout = {
            "capacity": (state["capacity"], self.capacity),
            "obs_shape": (tuple(state["obs_shape"]), self.obs_shape),
            "obs_dtype": (np.dtype(state["obs_dtype"]), self.obs_dtype),
            "num_streams": (state["num_streams"], self.num_streams),
        }
        _check_same_layout(layout)
        written = [int(count) for count in state["written"]]
        filled = min(max(written), self.ring_size)
        for name in _ENTRY_FIELDS:
            if state[name].shape[:2] != (self.num_streams, filled):
                raise ValueError(
                    f"replay state is inconsistent: {name} has shape {state[name].shape}, "
                    f"expected ({self.num_streams}, {filled}, ...) from written={written}"
                )
            getattr(self, name)[:, :filled] = state[name]
        self._written = written
        self._size = len(self._sampleable()[0])
        self._rng.bit_generator.state = state["rng_state"]


def _require_memory(
    what: str, needed: int, breakdown: str, available_bytes: int | None
) -> None:
    """Refuses an allocation of ``needed`` bytes larger than what the machine has available
    (``available_bytes``, probed when None): np.empty only reserves address space, so an oversized
    buffer would be OOM-killed (or swap) when the ring fills up, possibly hours into training."""
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    if available_bytes is not None and needed > available_bytes:
        raise InsufficientMemoryError(
            f"{what} needs {_format_bytes(needed)} ({breakdown}) but only "
            f"{_format_bytes(available_bytes)} is available; lower replay.capacity"
        )


def _check_pair_shape(obs: Any, next_obs: Any, obs_shape: tuple[int, ...]) -> None:
    if np.shape(obs) != obs_shape or np.shape(next_obs) != obs_shape:
        raise ValueError(
            f"obs and next_obs must have shape {obs_shape}, "
            f"got {np.shape(obs)} and {np.shape(next_obs)}"
        )


def _check_batch_shapes(
    arrays: list[np.ndarray], n: int, obs_shape: tuple[int, ...], note: str = ""
) -> None:
    """`arrays` in `_FIELDS` order: n observations, n next observations, n of each scalar."""
    expected_shapes = [(n, *obs_shape)] * 2 + [(n,)] * 3
    for name, array, shape in zip(_FIELDS, arrays, expected_shapes, strict=True):
        if array.shape != shape:
            raise ValueError(f"{name} must have shape {shape}{note}, got {array.shape}")


def _check_same_layout(layout: dict[str, tuple[Any, Any]]) -> None:
    """`layout` maps a setting to (the saved state's value, this buffer's value)."""
    for what, (theirs, mine) in layout.items():
        if theirs != mine:
            raise ValueError(
                f"replay state has {what}={theirs} but this buffer has {what}={mine}; "
                "build the buffer with the settings of the saved run"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _bytes_per_transition(obs_shape: tuple[int, ...], obs_dtype: Any) -> int:
    obs_bytes = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    return 2 * obs_bytes + _SCALAR_BYTES_PER_TRANSITION


def _bytes_per_entry(frame_shape: tuple[int, ...], obs_dtype: Any) -> int:
    frame_bytes = math.prod(frame_shape) * np.dtype(obs_dtype).itemsize
    return frame_bytes + _SCALAR_BYTES_PER_ENTRY


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    # Bitwise, not ==: a NaN frame equals itself, and -0.0 is not taken for 0.0, so a rebuilt
    # observation is byte for byte the one that was added.
    return a.shape == b.shape and a.tobytes() == b.tobytes()


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
