"""Collection with Gymnasium vector envs (``env.num_envs > 1``, sync and async)."""

import multiprocessing

import numpy as np
import pytest
import torch
from conftest import expected_updates, tiny_data

from dqn_stable.config import ConfigError, config_from_dict, dump_config
from dqn_stable.trainer import CHECKPOINT, CONFIG_FILE, Trainer, load_run

pytestmark = pytest.mark.filterwarnings("ignore:env .* vector envs, which are not saved")


def vector_data(num_envs=4, vectorization="sync", **dotted):
    return tiny_data(**{"env.num_envs": num_envs, "env.vectorization": vectorization, **dotted})


def stored(trainer):
    n = len(trainer.replay)
    r = trainer.replay
    return r.obs[:n], r.actions[:n], r.rewards[:n], r.next_obs[:n], r.terminated[:n]


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_no_stored_transition_spans_a_reset_and_truncation_keeps_the_true_last_obs(
    tmp_path, vectorization
):
    data = vector_data(
        3, vectorization,
        **{"env.id": "toy_envs:EpisodeTag-v0", "env.kwargs": {"max_episode_steps": 4},
           "train.total_steps": 300, "replay.learning_starts": 150, "eval.every": 300},
    )
    trainer = Trainer(config_from_dict(data))
    trainer.run(tmp_path / "run")
    trainer.close()
    obs, _, rewards, next_obs, terminated = stored(trainer)
    assert len(obs) == 300
    # Same episode at both ends, one step apart, reward = the step's index in its episode.
    assert np.array_equal(next_obs[:, 0], obs[:, 0])
    assert np.array_equal(next_obs[:, 1], obs[:, 1] + 1)
    assert np.array_equal(rewards, next_obs[:, 1])
    # The three copies were seeded 3, 4, 5 (seed + copy index) and all took part.
    assert set((obs[:, 0] // 1000).astype(int)) == {3, 4, 5}
    # Episode k terminates after 3 + k % 4 steps; the 4-step time limit truncates the 6-step ones,
    # which are stored as not terminated, with their real 4th observation as successor.
    episode, t = obs[:, 0] % 1000, next_obs[:, 1]
    natural_end = 3 + episode % 4
    assert np.array_equal(terminated, t == natural_end)
    truncated_ends = (t == 4) & (natural_end > 4)
    assert truncated_ends.any() and not terminated[truncated_ends].any()
    assert trainer.episodes == int(((t == natural_end) | (t == 4)).sum())


def test_updates_scale_with_env_steps(tmp_path):
    for train_every, gradient_steps in [(1, 1), (8, 2), (6, 1)]:
        data = vector_data(4, **{"train.total_steps": 400, "replay.learning_starts": 101,
                                 "train.train_every": train_every,
                                 "train.gradient_steps": gradient_steps})
        trainer = Trainer(config_from_dict(data))
        trainer.run(tmp_path / f"run{train_every}")
        trainer.close()
        assert trainer.env_step == 400
        assert trainer.agent.num_updates == expected_updates(400, 101, train_every, gradient_steps)


def test_async_collects_what_sync_collects(tmp_path):
    runs = {}
    for mode in ("sync", "async"):
        trainer = Trainer(config_from_dict(vector_data(2, mode, **{"train.total_steps": 400})))
        trainer.run(tmp_path / mode)
        trainer.close()
        runs[mode] = trainer
    for a, b in zip(stored(runs["sync"]), stored(runs["async"]), strict=True):
        assert np.array_equal(a, b)
    for name, tensor in runs["sync"].agent.network.state_dict().items():
        assert torch.equal(runs["async"].agent.network.state_dict()[name], tensor), name


def test_schedules_fire_when_a_vector_step_crosses_them(tmp_path):
    # 3 envs: env steps go 3, 6, ..., 300; eval every 50 fires at the first step past each 50.
    data = vector_data(3, **{"train.total_steps": 300, "eval.every": 50, "checkpoint.every": 100})
    trainer = Trainer(config_from_dict(data))
    result = trainer.run(tmp_path / "run")
    trainer.close()
    assert [p["env_step"] for p in result.summary["eval_curve"]] == [51, 102, 150, 201, 252, 300]


def test_vector_run_resumes_with_fresh_episodes(tmp_path):
    config = config_from_dict(vector_data(2, **{"train.total_steps": 400}))
    first = Trainer(config)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)
    with pytest.warns(UserWarning, match="2 vector envs, which are not saved; a resumed run"):
        first.run(run_dir, should_stop=lambda: first.env_step >= 200)
    first.close()
    assert (run_dir / CHECKPOINT).is_file()
    with pytest.warns(UserWarning, match="the 2 vector envs are not saved; restarting the "
                                         "episodes that were in progress at env step 200"):
        resumed = load_run(run_dir)
    assert resumed.env_step == 200
    assert list(resumed.episode_length) == [0, 0]
    assert resumed.run(run_dir).status == "finished"
    resumed.close()
    assert resumed.env_step == 400


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_bad_device_fails_before_any_async_worker_starts():
    with pytest.raises(ConfigError, match="device = 'cuda': this machine has no CUDA"):
        Trainer(config_from_dict({**vector_data(2, "async"), "device": "cuda"}))
    assert multiprocessing.active_children() == []


def test_total_steps_must_be_a_multiple_of_num_envs():
    with pytest.raises(ConfigError, match=r"^train.total_steps = 1250 in <dict>: must be a "
                                          r"multiple of env.num_envs \(4\)"):
        config_from_dict(vector_data(4))
