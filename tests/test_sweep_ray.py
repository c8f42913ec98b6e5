"""The Ray backend runs a tiny sweep on a local Ray instance, exactly like the local backend."""

import json

import pytest
from conftest import write_yaml

from dqn_stable import sweep

pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'dqn_stable[ray]'")

TINY_SET = {
    "network.hidden": [16, 16], "replay.capacity": 2000, "replay.batch_size": 32,
    "replay.learning_starts": 100, "train.total_steps": 400, "train.train_every": 4,
    "train.gradient_steps": 1, "train.log_every": 100, "eval.every": 200, "eval.episodes": 2,
    "checkpoint.every": 200,
}


def test_ray_backend_runs_a_tiny_sweep_on_a_local_instance(tmp_path, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "preset.yaml", {"env": {"id": "CartPole-v1"}})
    preset = "preset.yaml"  # relative: Ray tasks must not depend on their working directory
    sweep_file = write_yaml(tmp_path / "sweep.yaml", {
        "name": "tiny-ray", "seeds": [0, 1], "set": TINY_SET,
        "variants": {"a": {"config": preset},
                     "b": {"config": preset, "set": {"agent.target": "polyak"}}},
    })
    try:
        code = sweep.main(["--config", str(sweep_file), "--backend", "ray", "--out", "out"])
    finally:
        ray.shutdown()
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [(r["run_dir"], r["status"], r["exit_code"]) for r in manifest["runs"]] == [
        ("a__CartPole-v1__seed0", "finished", 0), ("a__CartPole-v1__seed1", "finished", 0),
        ("b__CartPole-v1__seed0", "finished", 0), ("b__CartPole-v1__seed1", "finished", 0),
    ]
    for run in manifest["runs"]:
        summary = json.loads((tmp_path / "out" / run["run_dir"] / "summary.json").read_text())
        assert summary["env_steps"] == 400


def test_address_needs_the_ray_backend(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--config", "x.yaml", "--address", "auto"])
    assert exit_info.value.code == 2
    assert "--address is for --backend ray" in capsys.readouterr().err
