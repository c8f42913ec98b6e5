"""Recorders: the tag set, how the helpers map onto tags, TensorBoard round trips, summary.json."""

from __future__ import annotations

import json

import pytest

from dqn_stable.recorder import (
    NullRecorder,
    Recorder,
    Tags,
    TensorBoardRecorder,
    read_scalars,
    write_summary,
)


class ListRecorder(Recorder):
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int]] = []

    def scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


def test_tags_are_distinct_and_namespaced():
    tags = {name: value for name, value in vars(Tags).items() if name.isupper()}
    assert len(set(tags.values())) == len(tags) == 18
    prefixes = {value.split("/")[0] for name, value in tags.items() if name != "CONFIG"}
    assert prefixes == {"charts", "losses", "eval", "stability"}


def test_helpers_write_the_documented_tags():
    recorder = ListRecorder()
    recorder.episode(17, 21.0, 21)
    recorder.evaluation(500, 9.5, 0.5)
    recorder.updates(100, {
        "td_loss": 1.0, "q_taken_mean": 2.0, "output_grad_norm": 3.0, "update_norm": 4.0,
        "q_abs_max": 5.0, "output_clip_fraction": 0.25, "param_norm": 6.0,
        "grad_norm/head": 7.0, "update_norm/torso.fc1": 8.0,
    })
    assert recorder.calls == [
        ("charts/episodic_return", 21.0, 17),
        ("charts/episodic_length", 21, 17),
        ("eval/episodic_return", 9.5, 500),
        ("eval/episodic_return_std", 0.5, 500),
        ("losses/td_loss", 1.0, 100),
        ("losses/q_values", 2.0, 100),
        ("stability/output_grad_norm", 3.0, 100),
        ("stability/update_norm", 4.0, 100),
        ("stability/q_abs_max", 5.0, 100),
        ("stability/output_clip_fraction", 0.25, 100),
        ("stability/param_norm", 6.0, 100),
        ("stability/grad_norm/head", 7.0, 100),
        ("stability/update_norm/torso.fc1", 8.0, 100),
    ]


def test_null_recorder_accepts_everything():
    recorder = NullRecorder()
    recorder.scalar("a", 1.0, 0)
    recorder.text("config", "x", 0)
    recorder.hparams({"seed": 0}, {Tags.EVAL_FINAL_RETURN: 1.0}, 1250)
    recorder.episode(1, 1.0, 1)
    recorder.updates(1, {"td_loss": 1.0})
    recorder.flush()
    recorder.close()


def test_tensorboard_round_trip_and_purge_on_resume(tmp_path):
    """A resumed writer with purge_step=6 hides what the first one wrote at steps >= 6."""
    first = TensorBoardRecorder(tmp_path)
    for step in range(1, 11):
        first.scalar("losses/td_loss", step * 0.5, step)
    first.close()
    assert read_scalars(tmp_path) == {"losses/td_loss": [(s, s * 0.5) for s in range(1, 11)]}

    resumed = TensorBoardRecorder(tmp_path, purge_step=6)
    for step in range(6, 9):
        resumed.scalar("losses/td_loss", -step, step)
    resumed.close()
    assert read_scalars(tmp_path) == {
        "losses/td_loss": [(s, s * 0.5) for s in range(1, 6)] + [(s, -s) for s in range(6, 9)]
    }


def test_write_summary_is_indented_json_without_temp_files(tmp_path):
    path = tmp_path / "summary.json"
    write_summary({"env_steps": 3, "eval_curve": [{"returns": [1.0]}]}, path)
    write_summary({"env_steps": 4, "diverged": False, "final_eval_return_mean": None}, path)
    assert json.loads(path.read_text()) == {
        "env_steps": 4, "diverged": False, "final_eval_return_mean": None
    }
    assert path.read_text().startswith('{\n  "env_steps": 4,')
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_write_summary_refuses_non_json_values_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_summary({"env_steps": 3}, path)
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        write_summary({"env_steps": object()}, path)
    assert json.loads(path.read_text()) == {"env_steps": 3}


def test_write_summary_failure_leaves_no_temp_file(tmp_path):
    path = tmp_path / "summary.json"
    write_summary({"env_steps": 3}, path)
    with pytest.raises(TypeError):
        write_summary({"env_steps": object()}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_resumed_run_in_the_same_second_still_reads_back_purged(tmp_path):
    # An interrupted process's file, named in this second by a process with a larger pid than
    # ours: TensorBoard reads files in name order, so ours must not be named in this second too.
    first = TensorBoardRecorder(tmp_path)
    for step in (100, 200, 300):
        first.scalar(Tags.TD_LOSS, float(step), step)
    first.close()
    (old,) = tmp_path.glob("events.out.tfevents.*")
    parts = old.name.split(".")
    parts[5] = "9" * 9  # the pid field
    old.rename(tmp_path / ".".join(parts))
    resumed = TensorBoardRecorder(tmp_path, purge_step=201)  # the checkpoint was at step 200
    resumed.scalar(Tags.TD_LOSS, -300.0, 300)
    resumed.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert names[0] == ".".join(parts)
    assert read_scalars(tmp_path)[Tags.TD_LOSS] == [(100, 100.0), (200, 200.0), (300, -300.0)]


def test_an_event_file_from_a_clock_far_ahead_does_not_hold_up_a_new_recorder(tmp_path):
    import time

    (tmp_path / f"events.out.tfevents.{int(time.time()) + 3600}.host.1.0").write_bytes(b"")
    start = time.monotonic()
    TensorBoardRecorder(tmp_path).close()
    assert time.monotonic() - start < 1.0
