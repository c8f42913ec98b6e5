"""Checkpoints: atomic replacement, and one CheckpointError naming the file for every bad one."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dqn_stable.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint


def sample_state(value: float) -> dict:
    return {
        "weights": torch.full((3, 2), value),
        "rng": np.random.default_rng(7).bit_generator.state,
        "env_step": int(value),
        "curve": [{"env_step": 1, "returns": [value]}],
    }


def assert_same_state(loaded: dict, state: dict) -> None:
    assert loaded.keys() == {"format", *state}
    assert loaded["format"] == FORMAT_VERSION
    assert torch.equal(loaded["weights"], state["weights"])
    assert {k: v for k, v in loaded.items() if k not in ("format", "weights")} == {
        k: v for k, v in state.items() if k != "weights"
    }


def test_save_then_load_round_trips_and_creates_the_directory(tmp_path):
    path = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint(sample_state(1.0), path)
    assert_same_state(load_checkpoint(path), sample_state(1.0))
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]


def test_a_second_save_replaces_the_first(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(sample_state(1.0), path)
    save_checkpoint(sample_state(2.0), path)
    assert_same_state(load_checkpoint(path), sample_state(2.0))


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch,
                                                                      failure):
    path = tmp_path / "latest.pt"
    save_checkpoint(sample_state(1.0), path)
    old_bytes = path.read_bytes()

    def partial_save(obj, f):
        f.write(old_bytes[: len(old_bytes) // 2])
        raise failure

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(type(failure)):
        save_checkpoint(sample_state(2.0), path)

    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
    assert path.read_bytes() == old_bytes
    assert_same_state(load_checkpoint(path), sample_state(1.0))


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    with pytest.raises(CheckpointError, match=f"^checkpoint not found: {re.escape(str(path))}$"):
        load_checkpoint(path)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {re.escape(str(tmp_path))}"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / "latest.pt"
    save_checkpoint(sample_state(1.0), path)
    data = path.read_bytes()
    path.write_bytes({
        "truncated": data[: len(data) // 2],
        "garbage": b"\x00\x01 this is not a zip archive",
        "empty": b"",
    }[damage])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} is unreadable or corrupt: ")
    assert "\n" not in message
    assert len(message) <= len(f"checkpoint {path} is unreadable or corrupt: ") + 200


@pytest.mark.parametrize("payload", [[1, 2, 3], {"format": FORMAT_VERSION + 1}, {"env_step": 5}])
def test_a_torch_file_that_is_not_our_checkpoint(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError,
        match=f"^checkpoint {re.escape(str(path))} is not a dqn_stable checkpoint of format 1$",
    ):
        load_checkpoint(path)
