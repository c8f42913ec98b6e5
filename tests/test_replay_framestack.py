import math

import numpy as np
import pytest
import torch
from state_transports import TRANSPORT_IDS, TRANSPORTS

from dqn_stable.replay import (
    Batch,
    FrameStackReplay,
    InsufficientMemoryError,
    ReplayBuffer,
    estimate_bytes,
    estimate_framestack_bytes,
)

PLENTY = 1 << 40  # available_bytes for buffers whose memory check is not under test
FRAME = (3, 5)


def episodes(seed, k, lengths=(1, 2, 3, 5, 8)):
    """Yields (obs, reward, next_obs, terminated, first) forever, like FrameStackObservation.

    Each episode has random uint8 frames f0 .. fL; its first stack repeats f0 (Gymnasium's
    "reset" padding), each step shifts in one frame, and the last next_obs is the true final
    stack whether the episode ends terminated or truncated. Lengths are drawn from `lengths`.
    """
    rng = np.random.default_rng(seed)
    while True:
        length = int(rng.choice(lengths))
        frames = rng.integers(0, 256, size=(length + 1, *FRAME), dtype=np.uint8)
        padded = np.concatenate([np.repeat(frames[:1], k - 1, axis=0), frames])
        ends_terminated = bool(rng.integers(2))
        for t in range(length):
            terminated = ends_terminated and t == length - 1
            obs, next_obs = padded[t : t + k], padded[t + 1 : t + 1 + k]
            yield obs, float(rng.normal()), next_obs, terminated, t == 0


class EntryModel:
    """Which transitions a stream can sample, worked out from episode starts alone.

    An episode's first transition takes k + 1 entries, every later one 1; a transition can be
    sampled while its entry minus k is among the last `ring_size` entries written.
    """

    def __init__(self, k, ring_size):
        self.k, self.ring_size = k, ring_size
        self.written = 0
        self.entry_of = {}  # transition id -> entry number

    def add(self, transition_id, first):
        self.written += self.k if first else 0
        self.entry_of[transition_id] = self.written
        self.written += 1

    def sampleable(self):
        oldest = self.written - self.ring_size
        return sorted(i for i, entry in self.entry_of.items() if entry - self.k >= oldest)


def naive_and_framestack(k, capacity, total, num_streams=1):
    naive = ReplayBuffer(total, (k, *FRAME), np.uint8, available_bytes=PLENTY)
    buffer = FrameStackReplay(
        capacity, (k, *FRAME), np.uint8, seed=0, num_streams=num_streams, available_bytes=PLENTY
    )
    return naive, buffer


def assert_matches_naive(buffer, naive, expected_ids, stream=None):
    """Every sampleable transition of `buffer` (of one stream, if given) equals the naive row with
    the same id (the id is the action), and the ids are exactly `expected_ids`, oldest first."""
    streams, slots = buffer._sampleable()
    if stream is not None:
        slots = slots[streams == stream]
        streams = streams[streams == stream]
    batch = buffer._gather(streams, slots)
    ids = batch.actions.numpy()
    assert ids.tolist() == expected_ids
    np.testing.assert_array_equal(batch.obs.numpy(), naive.obs[ids])
    np.testing.assert_array_equal(batch.next_obs.numpy(), naive.next_obs[ids])
    np.testing.assert_array_equal(batch.rewards.numpy(), naive.rewards[ids])
    assert batch.terminated.tolist() == naive.terminated[ids].astype(float).tolist()


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("extra", [1, 3, 20], ids=["ring-k+1", "ring-k+3", "ring-k+20"])
def test_every_sampleable_transition_equals_naive_storage(k, extra):
    capacity, total = k + extra, 300
    naive, buffer = naive_and_framestack(k, capacity, total)
    model = EntryModel(k, capacity)
    stream = episodes(seed=k * 100 + extra, k=k)
    for i in range(total):
        obs, reward, next_obs, terminated, first = next(stream)
        naive.add(obs, i, reward, next_obs, terminated)
        buffer.add(obs, i, reward, next_obs, terminated)
        model.add(i, first)

        expected = model.sampleable()
        assert len(buffer) == len(expected)
        assert_matches_naive(buffer, naive, expected)
    assert buffer.full
    # The ring wrapped many times, and both kinds of episode end are still being checked.
    assert model.written > 10 * capacity
    assert naive.terminated.any() and not naive.terminated.all()


def test_streams_interleaved_equal_separate_buffers():
    k, ring_size, total = 2, 11, 150
    # 32 is not a multiple of 3: each stream's ring still gets ceil(32 / 3) = 11 entries.
    naive, shared = naive_and_framestack(k, 32, 3 * total, num_streams=3)
    separate = [
        FrameStackReplay(ring_size, (k, *FRAME), np.uint8, available_bytes=PLENTY) for _ in range(3)
    ]
    models = [EntryModel(k, ring_size) for _ in range(3)]
    streams = [episodes(seed, k, lengths=(1, 4, 9)) for seed in (1, 2, 3)]
    for step in range(total):
        rows = [next(stream) for stream in streams]
        ids = np.arange(3 * step, 3 * step + 3)
        obs, rewards, next_obs, terminated, first = (np.array(x) for x in zip(*rows, strict=True))
        shared.add_batch(obs, ids, rewards, next_obs, terminated)
        naive.add_batch(obs, ids, rewards, next_obs, terminated)
        for i in range(3):
            separate[i].add(obs[i], ids[i], rewards[i], next_obs[i], terminated[i])
            models[i].add(ids[i], first[i])

    assert len(shared) == sum(len(buffer) for buffer in separate)
    for i, buffer in enumerate(separate):
        assert shared._written[i] == buffer._written[0]
        filled = min(buffer._written[0], ring_size)
        for name in ("frames", "actions", "rewards", "terminated", "is_transition"):
            np.testing.assert_array_equal(
                getattr(shared, name)[i, :filled], getattr(buffer, name)[0, :filled]
            )
        assert_matches_naive(shared, naive, models[i].sampleable(), stream=i)
    # Streams with different episode lengths hold different numbers of transitions.
    assert len({len(buffer) for buffer in separate}) > 1


def filled_buffer(seed=0, total=80, lengths_per_stream=((6,), (1,))):
    """Two streams, wrapped: stream 0 has episodes of 6 steps, stream 1 of one step, so stream 1
    holds fewer transitions in the same number of entries."""
    k = 2
    buffer = FrameStackReplay(
        2 * 15, (k, *FRAME), np.uint8, seed=seed, num_streams=2, available_bytes=PLENTY
    )
    streams = [episodes(10 + i, k, lengths) for i, lengths in enumerate(lengths_per_stream)]
    for step in range(total):
        add_step(buffer, streams, ids=[2 * step, 2 * step + 1])
    return buffer, streams


def add_step(buffer, streams, ids):
    rows = [next(stream) for stream in streams]
    obs, rewards, next_obs, terminated, _ = (np.array(x) for x in zip(*rows, strict=True))
    buffer.add_batch(obs, np.array(ids), rewards, next_obs, terminated)


def test_sampling_is_uniform_over_sampleable_transitions():
    buffer, _ = filled_buffer()
    streams, slots = buffer._sampleable()
    sampleable = buffer._gather(streams, slots).actions.tolist()
    # Each stream's window is its last 15 - k = 13 entries. Stream 0 (8 entries per episode:
    # two first frames, six transitions) has two episode starts in it, so 9 transitions; stream 1
    # (3 entries per episode) has 5.
    assert np.bincount(streams).tolist() == [9, 5]
    assert len(buffer) == len(sampleable) == len(set(sampleable)) == 14

    draws = 50_000
    counts = {i: 0 for i in sampleable}
    for _ in range(10):
        for i in buffer.sample(draws // 10).actions.tolist():
            counts[i] += 1  # A KeyError here is a sample of a transition that is not sampleable.

    expected = draws / len(sampleable)
    chi_square = sum((c - expected) ** 2 / expected for c in counts.values())
    degrees = len(sampleable) - 1
    # Under uniform sampling chi_square ~ degrees +- sqrt(2 degrees); 5 sigma above is a bug
    # (drawing a stream uniformly, for one, would give stream 1's transitions 1.4x their share).
    assert chi_square < degrees + 5 * math.sqrt(2 * degrees)


def test_batch_dtypes_and_shapes():
    buffer, _ = filled_buffer()
    batch = buffer.sample(7)
    assert isinstance(batch, Batch)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (7, 2, *FRAME)
    assert batch.next_obs.dtype == torch.uint8 and batch.next_obs.shape == (7, 2, *FRAME)
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (7,)
    assert batch.rewards.dtype == torch.float32 and batch.rewards.shape == (7,)
    assert batch.terminated.dtype == torch.float32 and batch.terminated.shape == (7,)
    # obs and next_obs do not share memory: changing one leaves the other alone.
    before = batch.next_obs.clone()
    batch.obs.zero_()
    assert torch.equal(batch.next_obs, before)


def test_same_seed_same_samples_different_seed_different():
    a, b, c = (filled_buffer(seed=seed)[0] for seed in (7, 7, 8))
    samples_a = [a.sample(32).actions.tolist() for _ in range(3)]
    samples_b = [b.sample(32).actions.tolist() for _ in range(3)]
    samples_c = [c.sample(32).actions.tolist() for _ in range(3)]
    assert samples_a == samples_b
    assert samples_a != samples_c


def test_sample_rejects_empty_buffer_and_bad_batch_size():
    buffer = FrameStackReplay(8, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(1)
    obs = np.zeros((2, *FRAME), np.uint8)
    buffer.add(obs, 0, 0.0, obs, False)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        buffer.sample(0)


def assert_batches_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        assert torch.equal(x, y)


@pytest.mark.parametrize("total", [3, 80], ids=["partial", "full-wrapped"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=TRANSPORT_IDS)
def test_state_dict_round_trip_continues_exactly(total, transport):
    original, streams = filled_buffer(seed=1, total=total, lengths_per_stream=((6,), (3,)))
    original.sample(4)  # Advance the generator so its state is not the seed's.

    restored = FrameStackReplay(
        30, (2, *FRAME), np.uint8, seed=999, num_streams=2, available_bytes=PLENTY
    )
    restored.load_state_dict(transport(original.state_dict()))

    assert len(restored) == len(original) and restored.full == original.full
    assert restored._written == original._written
    for _ in range(3):
        assert_batches_equal(restored.sample(8), original.sample(8))
    # Both continue the episodes in progress (no new first frames) and sample alike.
    written = list(original._written)
    for step in range(5):
        rows = [next(stream) for stream in streams]
        for buffer in (original, restored):
            add_step(buffer, [iter([row]) for row in rows], ids=[1000 + step, 2000 + step])
    assert restored._written == original._written
    # Five transitions each, and in both cases stream 0 starts one episode (6 steps) in them and
    # stream 1 two (3 steps): the restored buffer knew where the episodes in progress stood.
    assert restored._written == [written[0] + 5 + 2, written[1] + 5 + 2 * 2]
    assert len(restored) == len(original)
    both = [buffer._sampleable() for buffer in (original, restored)]
    np.testing.assert_array_equal(both[0][0], both[1][0])
    np.testing.assert_array_equal(both[0][1], both[1][1])
    assert_batches_equal(restored._gather(*both[1]), original._gather(*both[0]))
    assert_batches_equal(restored.sample(16), original.sample(16))


@pytest.mark.parametrize(
    ("capacity", "obs_shape", "obs_dtype", "num_streams", "message"),
    [
        (30, (3, *FRAME), np.uint8, 2, r"obs_shape=\(2, 3, 5\) but this buffer has obs_shape=\(3,"),
        (30, (2, *FRAME), np.float32, 2, "obs_dtype=uint8 but this buffer has obs_dtype=float32"),
        (40, (2, *FRAME), np.uint8, 2, "capacity=30 but this buffer has capacity=40"),
        (30, (2, *FRAME), np.uint8, 3, "num_streams=2 but this buffer has num_streams=3"),
    ],
)
def test_load_state_dict_rejects_a_different_layout(
    capacity, obs_shape, obs_dtype, num_streams, message
):
    # The saved buffer has capacity 30, shape (2, 3, 5), uint8 and 2 streams.
    state = filled_buffer(total=5)[0].state_dict()
    other = FrameStackReplay(
        capacity, obs_shape, obs_dtype, num_streams=num_streams, available_bytes=PLENTY
    )
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(state)


def test_load_state_dict_refuses_a_plain_replay_buffer_state():
    plain = ReplayBuffer(30, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    obs = np.zeros((2, *FRAME), np.uint8)
    plain.add(obs, 0, 0.0, obs, False)
    buffer = FrameStackReplay(30, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    message = (
        r"^replay state was saved by a ReplayBuffer \(obs and next_obs per transition\), not a "
        r"FrameStackReplay; resume with the replay buffer of the saved run$"
    )
    with pytest.raises(ValueError, match=message):
        buffer.load_state_dict(plain.state_dict())


def test_unshifted_next_obs_is_refused():
    buffer = FrameStackReplay(8, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    obs = np.stack([np.full(FRAME, 1, np.uint8), np.full(FRAME, 2, np.uint8)])
    message = (
        r"^next_obs\[:-1\] must equal obs\[1:\] \(the stack of 2 frames shifted by one step\); "
        r"FrameStackReplay needs frame-stacked observations such as FrameStackObservation's, "
        r"use ReplayBuffer for other observations$"
    )
    with pytest.raises(ValueError, match=message):
        buffer.add(obs, 0, 0.0, obs + 2, False)  # Frames 1, 2 then 3, 4: frame 2 is lost.
    assert buffer._written == [0]


def test_add_batch_checks_every_row_before_storing_any():
    buffer = FrameStackReplay(30, (2, *FRAME), np.uint8, num_streams=3, available_bytes=PLENTY)
    obs = np.zeros((3, 2, *FRAME), np.uint8)
    next_obs = obs.copy()
    next_obs[1, 0] = 9  # Row 1's next stack does not start with obs[1][1].
    with pytest.raises(ValueError, match=r"^row 1: next_obs\[:-1\] must equal obs\[1:\]"):
        buffer.add_batch(obs, np.zeros(3), np.zeros(3), next_obs, np.zeros(3))
    assert buffer._written == [0, 0, 0] and len(buffer) == 0


def test_add_and_add_batch_refuse_a_mismatched_stream_count():
    buffer = FrameStackReplay(30, (2, *FRAME), np.uint8, num_streams=3, available_bytes=PLENTY)
    obs = np.zeros((2, 2, *FRAME), np.uint8)
    with pytest.raises(ValueError, match=r"obs must have shape \(3, 2, 3, 5\) \(one row per"):
        buffer.add_batch(obs, np.zeros(2), np.zeros(2), obs, np.zeros(2))
    with pytest.raises(ValueError, match="add\\(\\) stores into stream 0 but this buffer has "):
        buffer.add(obs[0], 0, 0.0, obs[0], False)


def test_add_rejects_wrong_obs_shape():
    buffer = FrameStackReplay(8, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    with pytest.raises(ValueError, match=r"must have shape \(2, 3, 5\), got \(3, 3, 5\) and"):
        buffer.add(np.zeros((3, *FRAME)), 0, 0.0, np.zeros((2, *FRAME)), False)


def stack(*values):
    return np.stack([np.full(FRAME, v, np.uint8) for v in values])


def test_a_restarted_episode_starts_fresh_and_a_matching_one_continues():
    buffer = FrameStackReplay(20, (2, *FRAME), np.uint8, available_bytes=PLENTY)
    buffer.add(stack(1, 2), 0, 0.0, stack(2, 3), False)
    buffer.add(stack(2, 3), 1, 0.0, stack(3, 4), False)
    assert buffer._written == [3 + 1]  # Two first frames, then one entry per transition.

    # After a resume the env restarts mid-game: obs 7, 8 is not what was stored last.
    buffer.add(stack(7, 8), 2, 0.5, stack(8, 9), True)
    assert buffer._written == [4 + 3]
    # A reset whose stack happens to equal the last two frames continues from them: the frames
    # rebuilt are the same bits, so nothing is lost by not storing them again.
    buffer.add(stack(8, 9), 3, 0.0, stack(9, 9), False)
    assert buffer._written == [7 + 1]

    batch = buffer._gather(*buffer._sampleable())
    assert batch.actions.tolist() == [0, 1, 2, 3]
    assert [row[:, 0, 0].tolist() for row in batch.obs] == [[1, 2], [2, 3], [7, 8], [8, 9]]
    assert [row[:, 0, 0].tolist() for row in batch.next_obs] == [[2, 3], [3, 4], [8, 9], [9, 9]]
    assert batch.terminated.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert batch.rewards.tolist() == [0.0, 0.0, 0.5, 0.0]


def test_float_frames_are_compared_bit_for_bit():
    buffer = FrameStackReplay(20, (2, 2), np.float32, available_bytes=PLENTY)
    nan_frames = np.array([[np.nan, 0.0], [1.0, np.nan]], np.float32)
    buffer.add(nan_frames, 0, 0.0, np.array([[1.0, np.nan], [2.0, 2.0]], np.float32), False)
    # NaN equals itself bit for bit, so this continues the episode (no new first frames) ...
    buffer.add(np.array([[1.0, np.nan], [2.0, 2.0]]), 1, 0.0, np.array([[2.0, 2.0], [0, 0]]), False)
    assert buffer._written == [2 + 2]
    # ... while -0.0 is not 0.0: the rebuilt obs keeps the sign that was added.
    buffer.add(np.array([[2.0, 2.0], [-0.0, 0.0]]), 2, 0.0, np.array([[-0.0, 0.0], [5, 5]]), False)
    assert buffer._written == [4 + 3]
    obs = buffer._gather(*buffer._sampleable()).obs.numpy()
    assert np.signbit(obs[2, 1]).tolist() == [True, False]
    np.testing.assert_array_equal(obs[0], nan_frames)


def test_estimate_framestack_bytes_exact():
    # Per entry: one frame, int64 action, float32 reward, bool terminated, bool is_transition.
    assert estimate_framestack_bytes(10, (4, 2, 3), np.uint8) == 10 * (6 + 8 + 4 + 1 + 1) == 200
    # Three streams of ceil(10 / 3) = 4 entries each.
    assert estimate_framestack_bytes(10, (4, 2, 3), np.uint8, num_streams=3) == 12 * 20


def test_atari_replay_of_a_million_transitions_needs_about_6_6_gib():
    framestack = estimate_framestack_bytes(1_000_000, (4, 84, 84), np.uint8)
    plain = estimate_bytes(1_000_000, (4, 84, 84), np.uint8)
    assert framestack == 1_000_000 * (84 * 84 + 14) == 7_070_000_000
    assert round(framestack / 2**30, 2) == 6.58
    assert plain == 1_000_000 * (2 * 4 * 84 * 84 + 13) == 56_461_000_000
    assert round(plain / 2**30, 2) == 52.58


def test_refuses_a_buffer_larger_than_available_memory():
    with pytest.raises(InsufficientMemoryError) as error:
        FrameStackReplay(1000, (4, 2, 3), np.uint8, num_streams=3, available_bytes=1000)
    assert str(error.value) == (
        "frame-stack replay buffer needs 19.6 KiB (1002 entries x 20 B per entry) "
        "but only 1000 B is available; lower replay.capacity"
    )


@pytest.mark.parametrize(
    ("capacity", "num_streams", "message"),
    [
        (0, 1, "capacity must be an int >= 1"),
        (2.5, 1, "capacity must be an int >= 1"),
        (4, 1, r"capacity 4 gives each of 1 streams 4 entries, but one transition of 4 stacked "),
        (14, 4, "gives each of 4 streams 4 entries, .* needs 5; raise replay.capacity"),
        (10, 0, "num_streams must be an int >= 1"),
    ],
)
def test_rejects_bad_sizes(capacity, num_streams, message):
    with pytest.raises(ValueError, match=message):
        FrameStackReplay(
            capacity, (4, *FRAME), np.uint8, num_streams=num_streams, available_bytes=PLENTY
        )


def test_a_plain_replay_buffer_refuses_a_frame_stack_state():
    stacked = FrameStackReplay(8, (2, 3), np.uint8, seed=0)
    obs = np.zeros((2, 3), dtype=np.uint8)
    stacked.add(obs, 1, 0.5, obs, False)
    plain = ReplayBuffer(8, (2, 3), np.uint8, seed=0)
    with pytest.raises(ValueError, match="saved by a FrameStackReplay"):
        plain.load_state_dict(stacked.state_dict())


def test_sample_into_a_batch_draws_the_same_and_reuses_its_tensors():
    a, _ = filled_buffer(seed=4, total=40, lengths_per_stream=((6,), (3,)))
    b, _ = filled_buffer(seed=4, total=40, lengths_per_stream=((6,), (3,)))
    out = Batch.empty(9, a.obs_shape, np.uint8)
    for _ in range(3):
        got = a.sample(9, out=out)
        assert got is out
        assert_batches_equal(got, b.sample(9))
    with pytest.raises(ValueError, match=r"out.next_obs is a torch.uint8 tensor of shape"):
        a.sample(9, out=out._replace(next_obs=out.next_obs[:, :1]))
