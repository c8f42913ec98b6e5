"""The training runner end to end: the run directory a run leaves, its numbers, determinism,
divergence, and resuming an env that cannot be saved."""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, expected_updates, tiny_data, write_yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_stable import train
from dqn_stable.checkpoint import load_checkpoint, save_checkpoint
from dqn_stable.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from dqn_stable.recorder import Recorder, Tags, read_scalars
from dqn_stable.schedules import LinearSchedule
from dqn_stable.trainer import CHECKPOINT, CONFIG_FILE, Trainer, load_run

LAYERS = ("torso.fc1", "torso.fc2", "head")
# CartPole: 4 observations, 2 actions; hidden [16, 16]: (4*16 + 16) + (16*16 + 16) + (16*2 + 2)
MLP_PARAMETERS = 80 + 272 + 34
SUMMARY_KEYS = {
    "name", "env_id", "seed", "status", "diverged", "env_steps", "gradient_updates", "episodes",
    "final_eval_return_mean", "final_eval_return_std", "wall_seconds", "steps_per_second",
    "peak_rss_mb", "network_parameters", "q_abs_max", "update_norm_var", "eval_curve",
}
WINDOW_TAGS = [
    Tags.TD_LOSS, Tags.Q_VALUES, Tags.OUTPUT_GRAD_NORM, Tags.OUTPUT_CLIP_FRACTION, Tags.Q_ABS_MAX,
    Tags.PARAM_NORM, Tags.UPDATE_NORM, Tags.UPDATE_NORM_VAR,
    *(f"{Tags.GRAD_NORM}/{layer}" for layer in LAYERS),
    *(f"{Tags.UPDATE_NORM}/{layer}" for layer in LAYERS),
]


def f32(x: float) -> float:
    """``x`` as TensorBoard stores it (float32)."""
    return float(np.float32(x))


class MemoryRecorder(Recorder):
    """Keeps every scalar as ``{tag: [(step, value), ...]}``."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag].append((step, value))


def run_trainer(config, run_dir, **kwargs):
    recorder = MemoryRecorder()
    trainer = Trainer(config)
    result = trainer.run(run_dir, recorder, **kwargs)
    return trainer, result, recorder.scalars


# --- A finished run through the CLI -------------------------------------------------------------


def test_run_dir_holds_config_command_events_checkpoint_and_summary(finished_run):
    run_dir, config_path, command = finished_run
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events.")) == [
        "checkpoints", "command.txt", "config.yaml", "summary.json"
    ]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert load_config(run_dir / CONFIG_FILE) == load_config(config_path)
    assert load_config(run_dir / CONFIG_FILE).name == "tiny"
    assert (run_dir / "command.txt").read_text() == shlex.join(command) + "\n"
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["latest.pt"]
    state = load_checkpoint(run_dir / CHECKPOINT)
    assert (state["env_step"], state["agent"]["num_updates"]) == (1250, 1152)


def test_summary_counts_and_eval_curve(finished_run):
    run_dir, _, _ = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["name"] == "tiny"
    assert (summary["env_id"], summary["seed"]) == ("CartPole-v1", 3)
    assert (summary["status"], summary["diverged"]) == ("finished", False)
    assert summary["env_steps"] == 1250
    # updates after env steps 100, 102, ..., 1250: 576 rounds of 2
    assert summary["gradient_updates"] == expected_updates(1250, 100, 2, 2) == 1152
    assert summary["network_parameters"] == MLP_PARAMETERS == 386
    assert summary["wall_seconds"] > 0
    assert summary["steps_per_second"] == pytest.approx(1250 / summary["wall_seconds"])
    assert 50 < summary["peak_rss_mb"] < 100_000

    curve = summary["eval_curve"]
    assert [p["env_step"] for p in curve] == [500, 1000, 1250]
    assert [p["gradient_updates"] for p in curve] == [
        expected_updates(s, 100, 2, 2) for s in (500, 1000, 1250)
    ] == [402, 902, 1152]
    for point in curve:
        assert len(point["returns"]) == 2
        assert point["return_mean"] == float(np.mean(point["returns"]))
        assert point["return_std"] == float(np.std(point["returns"]))
    assert [p["wall_seconds"] for p in curve] == sorted(p["wall_seconds"] for p in curve)
    assert summary["final_eval_return_mean"] == curve[-1]["return_mean"]
    assert summary["final_eval_return_std"] == curve[-1]["return_std"]


def test_event_file_has_every_tag_at_the_log_steps(finished_run):
    run_dir, _, _ = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    scalars = read_scalars(run_dir)
    assert set(scalars) == {
        Tags.EPISODIC_RETURN, Tags.EPISODIC_LENGTH, Tags.SPS, Tags.EPSILON,
        Tags.EVAL_RETURN, Tags.EVAL_RETURN_STD, Tags.EVAL_FINAL_RETURN, Tags.EVAL_FINAL_RETURN_STD,
        *WINDOW_TAGS,
    }
    # log_every multiples once learning starts at 100, and the last env step
    log_steps = [*range(100, 1250, 100), 1250]
    for tag in [Tags.SPS, Tags.EPSILON, *WINDOW_TAGS]:
        assert [step for step, _ in scalars[tag]] == log_steps, tag
    assert all(sps > 0 for _, sps in scalars[Tags.SPS])
    epsilon = LinearSchedule(1.0, 0.1, 1000)
    assert scalars[Tags.EPSILON] == [(s, f32(epsilon(s))) for s in log_steps]

    curve = summary["eval_curve"]
    assert scalars[Tags.EVAL_RETURN] == [(p["env_step"], f32(p["return_mean"])) for p in curve]
    assert scalars[Tags.EVAL_RETURN_STD] == [(p["env_step"], f32(p["return_std"])) for p in curve]
    final_mean, final_std = summary["final_eval_return_mean"], summary["final_eval_return_std"]
    assert scalars[Tags.EVAL_FINAL_RETURN] == [(1250, f32(final_mean))]
    assert scalars[Tags.EVAL_FINAL_RETURN_STD] == [(1250, f32(final_std))]

    # CartPole pays 1 per step and episodes follow each other: each ends at the running total
    # of the lengths so far.
    lengths = [int(v) for _, v in scalars[Tags.EPISODIC_LENGTH]]
    assert len(lengths) == summary["episodes"]
    assert [s for s, _ in scalars[Tags.EPISODIC_LENGTH]] == np.cumsum(lengths).tolist()
    assert scalars[Tags.EPISODIC_RETURN] == scalars[Tags.EPISODIC_LENGTH]
    assert sum(lengths) <= 1250

    # The updates after the last log point (1201..1250) reach the summary but no log window.
    assert max(v for _, v in scalars[Tags.Q_ABS_MAX]) <= f32(summary["q_abs_max"])


def test_every_tag_in_the_event_file_is_defined_in_tags(finished_run):
    defined = {value for name, value in vars(Tags).items() if name.isupper()}
    for tag in read_scalars(finished_run[0]):
        assert tag in defined or tag.rsplit("/", 1)[0] in (Tags.GRAD_NORM, Tags.UPDATE_NORM), tag


def test_stability_scalars_obey_sgd_and_the_output_clip(finished_run):
    """SGD moves each layer by lr * its gradient; the output layer's gradient is clipped to norm 1,
    so its step is at most lr * 1; the output gradient norm is logged before the clip."""
    run_dir, _, _ = finished_run
    scalars = read_scalars(run_dir)
    lr, clip = 1e-3, 1.0

    def values(tag):
        return np.array([v for _, v in scalars[tag]])

    assert scalars[Tags.OUTPUT_GRAD_NORM] == scalars[f"{Tags.GRAD_NORM}/head"]
    for layer in ("torso.fc1", "torso.fc2"):
        np.testing.assert_allclose(
            values(f"{Tags.UPDATE_NORM}/{layer}"), lr * values(f"{Tags.GRAD_NORM}/{layer}"),
            rtol=1e-3,
        )
    head_steps = values(f"{Tags.UPDATE_NORM}/head")
    fraction = values(Tags.OUTPUT_CLIP_FRACTION)
    assert np.all((fraction >= 0) & (fraction <= 1))
    assert np.all(head_steps <= lr * clip * (1 + 1e-4))
    assert np.any(fraction == 1.0)
    np.testing.assert_allclose(head_steps[fraction == 1.0], lr * clip, rtol=1e-4)
    assert np.all(values(Tags.PARAM_NORM) > 0)


def test_config_is_shown_as_text_in_tensorboard(finished_run):
    run_dir, _, _ = finished_run
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert "config/text_summary" in accumulator.Tags()["tensors"]
    (event,) = accumulator.Tensors("config/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 0
    assert text == f"```yaml\n{(run_dir / CONFIG_FILE).read_text()}```"


def test_polyak_target_doubles_the_parameter_count(make_config, tmp_path):
    config = make_config(**{"train.total_steps": 200, "agent.target": "polyak"})
    run_dir = tmp_path / "polyak"
    assert train.main(["--config", str(config), "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["network_parameters"] == 2 * MLP_PARAMETERS
    assert summary["gradient_updates"] == expected_updates(200, 100, 2, 2) == 102
    assert [p["env_step"] for p in summary["eval_curve"]] == [200]


def test_command_txt_records_the_arguments_given_to_main(make_config, tmp_path):
    config = make_config(**{"train.total_steps": 200})
    argv = ["--config", str(config), "--run-dir", str(tmp_path / "run")]
    assert train.main(argv) == 0
    command = shlex.join([sys.executable, "-m", "dqn_stable.train", *argv])
    assert (tmp_path / "run" / "command.txt").read_text() == command + "\n"


# --- Determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_runs_and_another_seed_does_not(tmp_path):
    data = tiny_data(**{"train.total_steps": 600, "checkpoint.every": 1000})
    _, first, first_scalars = run_trainer(config_from_dict(data), tmp_path / "a")
    _, again, again_scalars = run_trainer(config_from_dict(data), tmp_path / "b")
    data["seed"] = 4
    _, _, other_scalars = run_trainer(config_from_dict(data), tmp_path / "c")

    assert [s for s, _ in first_scalars[Tags.TD_LOSS]] == [100, 200, 300, 400, 500, 600]
    assert first_scalars[Tags.TD_LOSS] == again_scalars[Tags.TD_LOSS]
    assert first_scalars[Tags.EPISODIC_RETURN] == again_scalars[Tags.EPISODIC_RETURN]
    assert [p["returns"] for p in first.summary["eval_curve"]] == [
        p["returns"] for p in again.summary["eval_curve"]
    ]
    assert first.summary["episodes"] == again.summary["episodes"]
    assert first_scalars[Tags.TD_LOSS] != other_scalars[Tags.TD_LOSS]
    assert first_scalars[Tags.EPISODIC_RETURN] != other_scalars[Tags.EPISODIC_RETURN]


def test_interrupted_and_resumed_in_process_equals_uninterrupted(tmp_path):
    """``should_stop`` at env step 333 (mid-episode, off every schedule), then ``load_run``."""
    data = tiny_data(**{"train.total_steps": 600})
    config = config_from_dict(data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)

    whole, whole_result, whole_scalars = run_trainer(config, tmp_path / "whole")
    first, recorder = Trainer(config), MemoryRecorder()
    stopped = first.run(run_dir, recorder, should_stop=lambda: first.env_step >= 333)
    scalars = recorder.scalars
    assert (stopped.status, first.env_step) == ("interrupted", 333)
    assert load_checkpoint(run_dir / CHECKPOINT)["env_step"] == 333
    assert not (run_dir / "summary.json").exists()

    resumed = load_run(run_dir)
    assert resumed.env_step == 333
    recorder = MemoryRecorder()
    result = resumed.run(run_dir, recorder)
    for tag, series in recorder.scalars.items():
        scalars[tag].extend(series)

    assert set(scalars) == set(whole_scalars)
    for tag in set(scalars) - {Tags.SPS}:
        assert scalars[tag] == whole_scalars[tag], tag
    for key in ("env_steps", "gradient_updates", "episodes", "q_abs_max", "update_norm_var"):
        assert result.summary[key] == whole_result.summary[key], key
    assert [p["returns"] for p in result.summary["eval_curve"]] == [
        p["returns"] for p in whole_result.summary["eval_curve"]
    ]
    for name, tensor in whole.agent.network.state_dict().items():
        assert torch.equal(resumed.agent.network.state_dict()[name], tensor), name


def test_resume_after_a_crash_drops_what_the_crashed_process_logged_after_its_checkpoint(
    tmp_path, finished_run, monkeypatch
):
    """The process dies at env step 1000 (its checkpoint write fails) after logging steps
    751..1000; the resumed run starts from the checkpoint of step 750 and must not show those
    points twice: TensorBoard's purge_step hides them."""

    class Crash(Exception):
        pass

    save = Trainer.save

    def save_or_crash(self, path):
        if self.env_step == 1000:
            raise Crash
        save(self, path)

    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(Trainer, "save", save_or_crash)
    with pytest.raises(Crash):
        train.main(["--config", str(config), "--run-dir", str(run_dir)])
    monkeypatch.undo()
    assert load_checkpoint(run_dir / CHECKPOINT)["env_step"] == 750
    crashed = read_scalars(run_dir)
    assert crashed[Tags.EVAL_RETURN][-1][0] == 1000
    assert crashed[Tags.TD_LOSS][-1][0] == 1000

    assert train.main(["--resume", str(run_dir)]) == 0
    scalars, whole = read_scalars(run_dir), read_scalars(finished_run[0])
    assert set(scalars) == set(whole)
    for tag in set(scalars) - {Tags.SPS}:
        assert scalars[tag] == whole[tag], tag
    assert [s for s, _ in scalars[Tags.SPS]] == [s for s, _ in whole[Tags.SPS]]


# --- Divergence ---------------------------------------------------------------------------------


def diverging_config(tmp_path, after):
    """A run on HugeRewardEnv: rewards turn to 1e38 after ``after`` env steps, so the first batch
    holding such a transition has an infinite squared TD error."""
    data = tiny_data(**{
        "env.id": "toy_envs:HugeReward-v0",
        "env.kwargs": {"after": after},
        "train.total_steps": 1000,
        "train.train_every": 1,
        "train.gradient_steps": 1,
        "checkpoint.every": 500,
    })
    return write_yaml(tmp_path / "huge.yaml", data)


def test_divergence_before_the_first_checkpoint_exits_3_without_a_checkpoint(tmp_path, caplog):
    run_dir = tmp_path / "run"
    code = train.main(["--config", str(diverging_config(tmp_path, 0)), "--run-dir", str(run_dir)])
    assert code == train.EXIT_DIVERGED == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    # Every stored reward is 1e38, so the very first update (at learning_starts) is non-finite.
    assert (summary["status"], summary["diverged"]) == ("diverged", True)
    assert (summary["env_steps"], summary["gradient_updates"]) == (100, 1)
    assert summary["eval_curve"] == []
    assert summary["final_eval_return_mean"] is None
    assert not (run_dir / "checkpoints").exists()
    assert "diverged at env step 100" in caplog.text


def test_divergence_after_a_checkpoint_keeps_the_last_good_one(tmp_path):
    run_dir = tmp_path / "run"
    code = train.main(["--config", str(diverging_config(tmp_path, 550)), "--run-dir", str(run_dir)])
    assert code == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["diverged"]) == ("diverged", True)
    assert 550 < summary["env_steps"] < 1000
    assert summary["gradient_updates"] == summary["env_steps"] - 100 + 1
    assert [p["env_step"] for p in summary["eval_curve"]] == [500]
    assert summary["final_eval_return_mean"] == summary["eval_curve"][0]["return_mean"]

    state = load_checkpoint(run_dir / CHECKPOINT)
    assert state["env_step"] == 500
    assert state["agent"]["num_updates"] == 401
    assert all(torch.isfinite(t).all() for t in state["agent"]["network"].values())
    scalars = read_scalars(run_dir)
    assert all(math.isfinite(v) for _, v in scalars[Tags.TD_LOSS])
    assert [s for s, _ in scalars[Tags.TD_LOSS]] == list(range(100, summary["env_steps"], 100))


# --- Environments from config -------------------------------------------------------------------


def test_env_kwargs_reach_gymnasium_make(tmp_path):
    """A never-ending env cut by ``max_episode_steps=7``: every training episode is 7 steps."""
    data = tiny_data(**{
        "env.id": "toy_envs:Counter-v0",
        "env.kwargs": {"max_episode_steps": 7},
        "train.total_steps": 150,
        "eval.every": 1000,
        "checkpoint.every": 1000,
    })
    trainer, result, scalars = run_trainer(config_from_dict(data), tmp_path / "run")
    assert scalars[Tags.EPISODIC_LENGTH] == [(7 * i, 7) for i in range(1, 22)]
    assert result.summary["episodes"] == 21  # 150 // 7
    assert result.summary["eval_curve"][0]["returns"] == [7.0, 7.0]
    assert trainer.episode_length == 150 - 7 * 21


def test_unpicklable_env_warns_at_checkpoint_and_resume_restarts_the_episode(tmp_path):
    data = tiny_data(**{
        "env.id": "toy_envs:Unpicklable-v0",
        "train.total_steps": 300,
        "checkpoint.every": 1000,
    })
    config = config_from_dict(data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)

    trainer = Trainer(config)
    with pytest.warns(UserWarning, match=r"cannot be saved \(its state does not pickle\); a "
                      "resumed run restarts the episode in progress"):
        result = trainer.run(run_dir, MemoryRecorder(), should_stop=lambda: trainer.env_step >= 250)
    assert result.status == "interrupted"
    assert (trainer.env_step, trainer.episode_length) == (250, 10)  # episodes are 20 steps
    assert load_checkpoint(run_dir / CHECKPOINT)["env"] is None

    with pytest.warns(UserWarning, match="restarting the episode that was in progress at env "
                      "step 250"):
        resumed = load_run(run_dir)
    assert (resumed.env_step, resumed.episodes) == (250, 12)
    assert (resumed.episode_return, resumed.episode_length) == (0.0, 0)
    fresh = gym.make("toy_envs:Unpicklable-v0")
    expected_obs, _ = fresh.reset(seed=3 + 250)
    np.testing.assert_array_equal(resumed.obs, expected_obs)
    assert not np.array_equal(resumed.obs, trainer.obs)

    recorder = MemoryRecorder()
    with pytest.warns(UserWarning, match="cannot be saved"):
        assert resumed.run(run_dir, recorder).status == "finished"
    # the restarted episode runs its full 20 steps from env step 250
    assert recorder.scalars[Tags.EPISODIC_LENGTH][0] == (270, 20)



def test_a_box2d_run_resumes_by_restarting_its_episode(tmp_path):
    """LunarLander pickles (EzPickle) but only as constructor arguments: unpickled it is a fresh,
    un-reset env that fails on its first step. The trainer must treat it as unsaveable."""
    pytest.importorskip("Box2D", reason="the box2d extra is not installed")
    data = tiny_data(**{
        "env.id": "LunarLander-v3", "train.total_steps": 400, "checkpoint.every": 1000,
        "eval.every": 1000, "eval.episodes": 1,
    })
    config = config_from_dict(data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)
    trainer = Trainer(config)
    with pytest.warns(UserWarning, match="cannot be saved"):
        result = trainer.run(run_dir, MemoryRecorder(), should_stop=lambda: trainer.env_step >= 150)
    assert result.status == "interrupted"
    assert load_checkpoint(run_dir / CHECKPOINT)["env"] is None
    with pytest.warns(UserWarning, match="restarting the episode that was in progress at env "
                      "step 150"):
        resumed = load_run(run_dir)
    assert resumed.episode_length == 0
    with pytest.warns(UserWarning, match="cannot be saved"):
        assert resumed.run(run_dir, MemoryRecorder()).status == "finished"
    assert resumed.env_step == 400


# --- Devices ----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_auto_is_cpu_without_cuda_and_trains_as_cpu(tmp_path):
    data = tiny_data(**{"train.total_steps": 300})
    on_cpu = run_trainer(config_from_dict(data), tmp_path / "cpu")[0]
    auto = run_trainer(config_from_dict({**data, "device": "auto"}), tmp_path / "auto")[0]
    assert auto.agent.device == torch.device("cpu")
    for name, tensor in on_cpu.agent.network.state_dict().items():
        assert torch.equal(auto.agent.network.state_dict()[name], tensor), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_config_error(device):
    with pytest.raises(ConfigError, match=rf"^device = '{device}': this machine has no CUDA .*"
                                          "use device=cpu, or device=auto"):
        Trainer(config_from_dict({**tiny_data(), "device": device}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_trains_on_cuda_and_resumes(tmp_path):
    config = config_from_dict({**tiny_data(**{"train.total_steps": 400}), "device": "cuda"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / CONFIG_FILE)
    first = Trainer(config)
    assert next(first.agent.network.parameters()).is_cuda
    assert first.run(run_dir, should_stop=lambda: first.env_step >= 250).status == "interrupted"
    resumed = load_run(run_dir)
    assert next(resumed.agent.network.parameters()).is_cuda
    assert resumed.run(run_dir).status == "finished"


def test_checkpoint_from_before_a_config_key_existed_resumes(tmp_path):
    """A key added later (here ``device``) at its default does not make a checkpoint foreign."""
    config = config_from_dict(tiny_data(**{"train.total_steps": 400}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = Trainer(config)
    first.run(run_dir, should_stop=lambda: first.env_step >= 200)
    state = load_checkpoint(run_dir / CHECKPOINT)
    del state["config"]["device"]
    save_checkpoint(state, run_dir / CHECKPOINT)
    old_config = config_to_dict(config)
    del old_config["device"]
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(old_config, sort_keys=False))
    resumed = load_run(run_dir)
    assert resumed.env_step == 200 and resumed.config.device == "cpu"
    assert resumed.run(run_dir).status == "finished"
