import numpy as np
import pytest
import torch
from state_transports import TRANSPORT_IDS, TRANSPORTS

from dqn_stable import replay
from dqn_stable.replay import (
    Batch,
    FrameStackReplay,
    InsufficientMemoryError,
    ReplayBuffer,
    available_memory_bytes,
    estimate_bytes,
)

PLENTY = 1 << 40  # available_bytes for buffers whose memory check is not under test


def numbered_buffer(capacity, count, seed=0):
    """A buffer of (1,) float32 observations holding transitions 0..count-1, each identifiable:
    obs = i, next_obs = i + 0.5, action = i, reward = 10 i, terminated = (i % 3 == 0)."""
    buffer = ReplayBuffer(capacity, (1,), np.float32, seed=seed, available_bytes=PLENTY)
    for i in range(count):
        obs, next_obs = np.array([i], np.float32), np.array([i + 0.5], np.float32)
        buffer.add(obs, i, 10.0 * i, next_obs, i % 3 == 0)
    return buffer


def stored(buffer):
    """The filled rows of every storage array."""
    n = len(buffer)
    return [
        buffer.obs[:n],
        buffer.next_obs[:n],
        buffer.actions[:n],
        buffer.rewards[:n],
        buffer.terminated[:n],
    ]


def assert_batches_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_dtype_preserved_in_storage_and_batch(dtype):
    buffer = ReplayBuffer(4, (2, 3), dtype, seed=0, available_bytes=PLENTY)
    obs = np.full((2, 3), 7, dtype)
    buffer.add(obs, 1, 0.5, obs + 1, False)

    batch = buffer.sample(5)

    torch_dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
    assert buffer.obs.dtype == dtype and buffer.next_obs.dtype == dtype
    assert isinstance(batch, Batch)
    assert batch.obs.dtype == torch_dtype and batch.obs.shape == (5, 2, 3)
    assert batch.next_obs.dtype == torch_dtype and batch.next_obs.shape == (5, 2, 3)
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (5,)
    assert batch.rewards.dtype == torch.float32 and batch.rewards.shape == (5,)
    assert batch.terminated.dtype == torch.float32 and batch.terminated.shape == (5,)
    assert batch.obs.tolist() == [[[7] * 3] * 2] * 5
    assert batch.next_obs.tolist() == [[[8] * 3] * 2] * 5
    assert batch.actions.tolist() == [1] * 5
    assert batch.rewards.tolist() == [0.5] * 5
    assert batch.terminated.tolist() == [0.0] * 5


def test_wraparound_keeps_the_last_capacity_transitions():
    buffer = numbered_buffer(capacity=5, count=8)

    # Transitions 5, 6, 7 overwrote rows 0, 1, 2; 3 and 4 remain.
    assert len(buffer) == 5 and buffer.full
    assert buffer.obs[:, 0].tolist() == [5, 6, 7, 3, 4]
    assert buffer.next_obs[:, 0].tolist() == [5.5, 6.5, 7.5, 3.5, 4.5]
    assert buffer.actions.tolist() == [5, 6, 7, 3, 4]
    assert buffer.rewards.tolist() == [50, 60, 70, 30, 40]
    assert buffer.terminated.tolist() == [False, True, False, True, False]


def test_not_full_until_capacity():
    buffer = numbered_buffer(capacity=5, count=4)
    assert len(buffer) == 4 and not buffer.full
    buffer.add(np.zeros(1, np.float32), 0, 0.0, np.zeros(1, np.float32), False)
    assert len(buffer) == 5 and buffer.full


@pytest.mark.parametrize(
    ("prefill", "chunks"),
    [(3, [4]), (0, [2, 3, 6]), (4, [12]), (2, [0, 5, 1])],
    ids=["across-wrap", "several-chunks", "more-than-capacity", "empty-chunk"],
)
def test_add_batch_equals_sequential_adds(prefill, chunks):
    sequential = numbered_buffer(capacity=5, count=prefill + sum(chunks))
    batched = numbered_buffer(capacity=5, count=prefill)

    start = prefill
    for n in chunks:
        i = np.arange(start, start + n)
        batched.add_batch(
            obs=i[:, None].astype(np.float32),
            actions=i,
            rewards=10.0 * i,
            next_obs=(i + 0.5)[:, None].astype(np.float32),
            terminated=i % 3 == 0,
        )
        start += n

    assert len(batched) == len(sequential)
    for a, b in zip(stored(batched), stored(sequential), strict=True):
        np.testing.assert_array_equal(a, b)
    # Same write position: the next add lands on the same row in both.
    for buffer in (batched, sequential):
        buffer.add(np.array([-1.0], np.float32), -1, -1.0, np.array([-1.0], np.float32), True)
    for a, b in zip(stored(batched), stored(sequential), strict=True):
        np.testing.assert_array_equal(a, b)


def test_add_batch_rejects_mismatched_lengths():
    buffer = ReplayBuffer(5, (2,), np.float32, available_bytes=PLENTY)
    with pytest.raises(ValueError, match=r"rewards must have shape \(3,\), got \(2,\)"):
        buffer.add_batch(np.zeros((3, 2)), np.zeros(3), np.zeros(2), np.zeros((3, 2)), np.zeros(3))


def test_add_rejects_wrong_obs_shape():
    buffer = ReplayBuffer(5, (2,), np.float32, available_bytes=PLENTY)
    with pytest.raises(ValueError, match=r"must have shape \(2,\), got \(3,\) and \(2,\)"):
        buffer.add(np.zeros(3), 0, 0.0, np.zeros(2), False)


def fill_with_toy_chain(buffer):
    """Runs a deterministic chain, gymnasium style, and stores every step in `buffer`.

    An episode starts at an arbitrary value x and each step moves to x + 1. Observations are
    (episode, x) so transitions of different episodes cannot be confused. Episodes end either
    terminated or truncated by a time limit; after either, the next observation comes from a
    reset, which is never stored as a successor. Returns {(episode, x): terminated} for every step
    and the (episode, final x) of truncated episodes.
    """
    starts = [40, 3, 250, 7, 100, 41, 0, 999, 12, 60, 5, 300]
    lengths = [9, 4, 17, 1, 11, 6, 23, 2, 8, 13, 3, 30]
    terminated_flags = {}
    truncated_ends = []
    for episode, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        ends_terminated = episode % 2 == 0
        obs = np.array([episode, start], np.float32)
        for t in range(length):
            next_obs = obs + np.array([0, 1], np.float32)
            terminated = ends_terminated and t == length - 1
            buffer.add(obs, t % 2, float(start + t), next_obs, terminated)
            terminated_flags[(episode, start + t)] = terminated
            obs = next_obs
        if not ends_terminated:
            truncated_ends.append((episode, start + length))
    return terminated_flags, truncated_ends


@pytest.mark.parametrize("capacity", [1000, 64], ids=["not-full", "full-wrapped"])
def test_samples_never_cross_an_episode_boundary(capacity):
    buffer = ReplayBuffer(capacity, (2,), np.float32, seed=3, available_bytes=PLENTY)
    terminated_flags, truncated_ends = fill_with_toy_chain(buffer)
    total_steps = len(terminated_flags)
    assert buffer.full == (total_steps >= capacity)

    batch = buffer.sample(4096)

    obs, next_obs = batch.obs.numpy(), batch.next_obs.numpy()
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0])
    np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)
    expected = [float(terminated_flags[(e, x)]) for e, x in obs.tolist()]
    assert batch.terminated.tolist() == expected
    # The sample reached both kinds of episode end, so the checks above covered them.
    assert 1.0 in expected
    sampled_next = {tuple(row) for row in next_obs.tolist()}
    assert sampled_next & {(float(e), float(x)) for e, x in truncated_ends}

    # A truncated final step keeps its true final observation and bootstraps.
    rows = {tuple(row): i for i, row in enumerate(buffer.next_obs[: len(buffer)].tolist())}
    for episode, final_x in truncated_ends:
        row = rows.get((float(episode), float(final_x)))
        if row is None:  # Overwritten by later episodes (full buffer).
            continue
        assert buffer.obs[row].tolist() == [episode, final_x - 1]
        assert not buffer.terminated[row]


def test_td_target_bootstraps_after_truncation_but_not_after_termination():
    buffer = ReplayBuffer(2, (1,), np.float32, seed=0, available_bytes=PLENTY)
    # Row 0 ends an episode (terminated) in state 1; row 1 is cut by a time limit in state 2.
    buffer.add(np.array([0.0], np.float32), 0, 1.0, np.array([1.0], np.float32), True)
    buffer.add(np.array([3.0], np.float32), 1, 0.5, np.array([2.0], np.float32), False)
    next_q_table = torch.tensor([[0.0, 0.0], [2.0, 3.0], [4.0, -1.0]])
    gamma = 0.5

    batch = buffer.sample(16)
    next_q_values = next_q_table[batch.next_obs[:, 0].long()]
    td_target = batch.rewards + gamma * (1.0 - batch.terminated) * next_q_values.max(dim=1).values

    # Terminated: y = 1.0 (the 3.0 of state 1 is ignored). Truncated: y = 0.5 + 0.5 * 4.0.
    expected = {1.0: 1.0, 2.0: 2.5}
    assert set(batch.next_obs[:, 0].tolist()) == {1.0, 2.0}
    assert td_target.tolist() == [expected[s] for s in batch.next_obs[:, 0].tolist()]


def test_same_seed_same_samples_different_seed_different():
    a, b, c = (numbered_buffer(capacity=50, count=50, seed=seed) for seed in (7, 7, 8))
    samples_a = [a.sample(32).actions.tolist() for _ in range(3)]
    samples_b = [b.sample(32).actions.tolist() for _ in range(3)]
    samples_c = [c.sample(32).actions.tolist() for _ in range(3)]
    assert samples_a == samples_b
    assert samples_a != samples_c


def test_sample_rejects_empty_buffer_and_bad_batch_size():
    buffer = ReplayBuffer(5, (1,), np.float32, available_bytes=PLENTY)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(1)
    buffer.add(np.zeros(1), 0, 0.0, np.zeros(1), False)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        buffer.sample(0)


@pytest.mark.parametrize("count", [6, 23], ids=["partial", "full-wrapped"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=TRANSPORT_IDS)
def test_state_dict_round_trip_continues_exactly(count, transport):
    original = numbered_buffer(capacity=10, count=count, seed=1)
    original.sample(4)  # Advance the generator so its state is not the seed's.

    restored = ReplayBuffer(10, (1,), np.float32, seed=999, available_bytes=PLENTY)
    restored.load_state_dict(transport(original.state_dict()))

    assert len(restored) == len(original) and restored.full == original.full
    for a, b in zip(stored(restored), stored(original), strict=True):
        np.testing.assert_array_equal(a, b)
    for _ in range(3):
        assert_batches_equal(restored.sample(8), original.sample(8))
    # Adds continue at the same ring position.
    for buffer in (original, restored):
        for i in range(3):
            buffer.add(
                np.array([100.0 + i], np.float32), 100 + i, 0.0, np.array([0.0], np.float32), False
            )
    for a, b in zip(stored(restored), stored(original), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_batches_equal(restored.sample(8), original.sample(8))


@pytest.mark.parametrize(
    ("capacity", "obs_shape", "obs_dtype", "message"),
    [
        (10, (2,), np.float32, r"obs_shape=\(1,\) but this buffer has obs_shape=\(2,\)"),
        (10, (1,), np.uint8, "obs_dtype=float32 but this buffer has obs_dtype=uint8"),
        (20, (1,), np.float32, "capacity=10 but this buffer has capacity=20"),
    ],
)
def test_load_state_dict_rejects_a_different_layout(capacity, obs_shape, obs_dtype, message):
    # The saved buffer has capacity 10, shape (1,), float32; the parameters are the new buffer's.
    state = numbered_buffer(capacity=10, count=4).state_dict()
    other = ReplayBuffer(capacity, obs_shape, obs_dtype, available_bytes=PLENTY)
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(state)


def test_estimate_bytes_exact():
    # Per transition: 2 observations of 6 bytes, int64 action, float32 reward, bool flag.
    assert estimate_bytes(10, (2, 3), np.uint8) == 10 * (2 * 6 + 8 + 4 + 1) == 250
    assert estimate_bytes(1000, (4,), np.float32) == 1000 * (2 * 16 + 13) == 45_000


def test_refuses_a_buffer_larger_than_available_memory():
    with pytest.raises(InsufficientMemoryError) as error:
        ReplayBuffer(1000, (4,), np.float32, available_bytes=1000)
    assert str(error.value) == (
        "replay buffer needs 43.9 KiB (capacity 1000 x 45 B per transition) "
        "but only 1000 B is available; lower replay.capacity"
    )
    assert isinstance(error.value, MemoryError)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ReplayBuffer(10**12, (4,), np.float32),
            r"needs 40\.9 TiB \(capacity 1000000000000 x 45 B per transition\) but only",
        ),
        (
            lambda: FrameStackReplay(10**12, (4, 84, 84), np.uint8),
            r"needs 6\.3 PiB \(1000000000000 entries x 6\.9 KiB per entry\) but only",
        ),
    ],
    ids=["ReplayBuffer", "FrameStackReplay"],
)
def test_refuses_a_huge_buffer_before_allocating(monkeypatch, make, message):
    if available_memory_bytes() is None:
        pytest.skip("this machine does not report its available memory")

    def no_allocation(*args, **kwargs):
        raise AssertionError("the buffer allocated before checking memory")

    monkeypatch.setattr(np, "empty", no_allocation)
    monkeypatch.setattr(np, "zeros", no_allocation)
    with pytest.raises(InsufficientMemoryError, match=message):
        make()


def test_available_memory_reads_meminfo(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2048 kB\n")
    monkeypatch.setattr(replay, "_MEMINFO", meminfo)
    assert available_memory_bytes() == 2048 * 1024


def test_available_memory_falls_back_to_sysconf(monkeypatch, tmp_path):
    monkeypatch.setattr(replay, "_MEMINFO", tmp_path / "missing")
    sysconf = {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(replay.os, "sysconf", sysconf.__getitem__)
    assert available_memory_bytes() == 3 * 4096


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True])
def test_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        ReplayBuffer(capacity, (1,), np.float32, available_bytes=PLENTY)


def test_sample_into_a_batch_draws_the_same_and_reuses_its_tensors():
    a, b = numbered_buffer(16, 10, seed=3), numbered_buffer(16, 10, seed=3)
    out = Batch.empty(6, (1,), np.float32)
    for _ in range(3):
        got = a.sample(6, out=out)
        assert got is out
        assert_batches_equal(got, b.sample(6))


def test_sample_into_a_batch_that_does_not_fit_is_refused_before_drawing():
    a, b = numbered_buffer(16, 10, seed=3), numbered_buffer(16, 10, seed=3)
    with pytest.raises(ValueError, match=r"out.obs is a torch.float32 tensor of shape \(5, 1\) on "
                       r"cpu; sample\(6\) needs torch.float32 of shape \(6, 1\), contiguous on "
                       r"the CPU: make it with Batch.empty\(6, \(1,\), 'float32'\)"):
        a.sample(6, out=Batch.empty(5, (1,), np.float32))
    with pytest.raises(ValueError, match=r"out\.obs is a torch\.uint8 tensor"):
        a.sample(6, out=Batch.empty(6, (1,), np.uint8))
    assert_batches_equal(a.sample(6), b.sample(6))  # the refused calls drew nothing
    out = Batch.empty(6, (1,), np.float32)
    a.sample(6, out=out)
    with pytest.raises(ValueError, match=r"out\.obs is .* shape \(6, 1\) on cpu; sample\(4\)"):
        a.sample(4, out=out)  # a batch that fitted another size is checked again
