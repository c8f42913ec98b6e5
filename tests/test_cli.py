"""The command lines: bad input exits 2 before writing anything, SIGINT/SIGTERM checkpoint and
--resume continues exactly, and ``dqn_stable.evaluate`` replays a run's checkpoint."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import TESTS_DIR, TINY, tiny_data, write_yaml

from dqn_stable import evaluate, train
from dqn_stable.checkpoint import load_checkpoint
from dqn_stable.config import dump_config, load_config
from dqn_stable.recorder import Tags, read_scalars
from dqn_stable.trainer import CHECKPOINT, CONFIG_FILE

# --- Bad input: exit 2, one line on stderr, nothing written -------------------------------------


def tree(path):
    """Every file under ``path`` with its bytes, to show that nothing changed."""
    return {p.relative_to(path): p.read_bytes() if p.is_file() else None for p in path.rglob("*")}


def assert_rejected(capsys, tmp_path, args, message):
    """``main(args)`` run in ``tmp_path`` exits 2, prints one ``error:`` line containing
    ``message`` and writes nothing (no run dir, no ``runs/``)."""
    before = tree(tmp_path)
    capsys.readouterr()
    assert train.main(args) == train.EXIT_BAD_INPUT == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    assert message in err
    assert tree(tmp_path) == before
    assert not (tmp_path / "runs").exists()
    return err


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_config_file(cwd, capsys):
    assert_rejected(capsys, cwd, ["--config", "nope.yaml"], "config file not found: nope.yaml")


def test_yaml_syntax_error(cwd, capsys):
    (cwd / "bad.yaml").write_text("seed: 1\nagent:\n  gamma: 0.9\n    double: true\n")
    assert_rejected(capsys, cwd, ["--config", "bad.yaml", "--run-dir", "out"],
                    "invalid YAML in bad.yaml at line 4")


def test_unknown_key_in_file(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", tiny_data(**{"agent.gama": 0.9}))
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml"],
                    "unknown key 'agent.gama' in tiny.yaml; did you mean 'agent.gamma'?")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", tiny_data())
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "--run-dir", "out", "device=cuda"],
                    "device = 'cuda': this machine has no CUDA device")


@pytest.mark.parametrize(("override", "message"), [
    ("agent.gamma", "malformed override 'agent.gamma': expected dotted.key=value"),
    ("agent.gama=0.5", "unknown key 'agent.gama' in override 'agent.gama=0.5'; "
                       "did you mean 'agent.gamma'?"),
    ("agent.gamma=2", "agent.gamma = 2.0 in tiny.yaml with overrides: must be in [0, 1]"),
])
def test_bad_override(cwd, capsys, override, message):
    write_yaml(cwd / "tiny.yaml", TINY)
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "--run-dir", "out", override], message)


def test_bad_value_in_file(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", tiny_data(**{"agent.gamma": 2}))
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml"],
                    "agent.gamma = 2.0 in tiny.yaml: must be in [0, 1]")


def test_unknown_env_id_gets_gymnasiums_suggestion(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", TINY)
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "env.id=CartPol-v1"],
                    "cannot make env 'CartPol-v1': Environment `CartPol` doesn't exist. "
                    "Did you mean: `CartPole`?")


def test_continuous_actions_are_refused(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", TINY)
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "env.id=Pendulum-v1"],
                    "DQN needs a Discrete action space, but Pendulum-v1 has Box(")


def test_replay_too_large_for_memory(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", TINY)
    err = assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "replay.capacity=1e12"],
                          "(capacity 1000000000000 x 45 B per transition)")
    assert err.rstrip().endswith("is available; lower replay.capacity")


def test_non_empty_run_dir_is_left_alone(cwd, capsys):
    write_yaml(cwd / "tiny.yaml", TINY)
    (cwd / "out").mkdir()
    (cwd / "out" / "notes.txt").write_text("mine")
    assert_rejected(capsys, cwd, ["--config", "tiny.yaml", "--run-dir", "out"],
                    "run directory out already exists and is not empty; choose another "
                    "--run-dir, or continue it with --resume out")
    assert (cwd / "out" / "notes.txt").read_text() == "mine"


def test_resume_of_a_missing_dir(cwd, capsys):
    assert_rejected(capsys, cwd, ["--resume", "gone"], "run directory not found: gone")


def test_resume_of_a_dir_without_config(cwd, capsys):
    (cwd / "out").mkdir()
    assert_rejected(capsys, cwd, ["--resume", "out"],
                    "out is not a run directory: it has no config.yaml")


def test_resume_takes_no_overrides(cwd, capsys):
    assert_rejected(capsys, cwd, ["--resume", "out", "seed=1"],
                    "--resume takes no --run-dir or overrides")


@pytest.mark.parametrize(("content", "message"), [
    (None, "checkpoint not found: out/checkpoints/latest.pt"),
    (b"not a checkpoint", "checkpoint out/checkpoints/latest.pt is unreadable or corrupt"),
])
def test_resume_with_missing_or_corrupt_checkpoint(cwd, capsys, content, message):
    (cwd / "out" / "checkpoints").mkdir(parents=True)
    dump_config(load_config(write_yaml(cwd / "tiny.yaml", TINY)), cwd / "out" / CONFIG_FILE)
    if content is not None:
        (cwd / "out" / CHECKPOINT).write_bytes(content)
    assert_rejected(capsys, cwd, ["--resume", "out"], message)


def test_resume_with_a_changed_config(cwd, capsys, finished_run):
    run_dir = cwd / "run"
    run_dir.mkdir()
    for name in (CONFIG_FILE, CHECKPOINT):
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_bytes((finished_run[0] / name).read_bytes())
    write_yaml(run_dir / CONFIG_FILE, tiny_data(name="tiny", **{"optimizer.lr": 0.5}))
    assert_rejected(capsys, cwd, ["--resume", "run"], "checkpoint run/checkpoints/latest.pt does "
                    "not fit run/config.yaml: it was written with a different config")


def test_resume_of_a_run_that_has_ended(cwd, capsys, finished_run):
    run_dir = finished_run[0]
    before = tree(run_dir)
    assert_rejected(capsys, cwd, ["--resume", str(run_dir)],
                    f"run {run_dir} has already ended (see its summary.json); nothing to resume")
    assert tree(run_dir) == before


# --- SIGINT / SIGTERM and --resume --------------------------------------------------------------


def start_run(tmp_path, run_dir):
    """``python -m dqn_stable.train`` on TINY in a subprocess, its output into tmp_path/log.txt."""
    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    paths = [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 (closed by stop_run)
    args = [sys.executable, "-m", "dqn_stable.train", "--config", str(config),
            "--run-dir", str(run_dir)]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log, args


def stop_run(process, log, run_dir, signum):
    """Send ``signum`` once the first checkpoint (env step 250 of 1250) exists; the exit code."""
    deadline = time.monotonic() + 120
    while not (run_dir / CHECKPOINT).exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    process.send_signal(signum)
    try:
        return process.wait(timeout=120)
    finally:
        log.close()


def test_sigint_then_resume_equals_an_uninterrupted_run(tmp_path, finished_run, monkeypatch):
    run_dir = tmp_path / "run"
    process, log, args = start_run(tmp_path, run_dir)
    code = stop_run(process, log, run_dir, signal.SIGINT)
    output = (tmp_path / "log.txt").read_text()
    assert code == 130, output
    assert "SIGINT received: writing a checkpoint, then stopping" in output
    assert "Traceback" not in output
    assert not (run_dir / "summary.json").exists()
    stopped_at = load_checkpoint(run_dir / CHECKPOINT)["env_step"]
    assert 250 <= stopped_at < 1250
    assert f"continue with: python -m dqn_stable.train --resume {run_dir}" in output

    # `python -m dqn_stable.train --resume RUN_DIR`, in this process
    monkeypatch.setattr(sys, "argv", ["dqn_stable/train.py", "--resume", str(run_dir)])
    assert train.main() == 0

    whole_dir = finished_run[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    whole = json.loads((whole_dir / "summary.json").read_text())
    for key in ("status", "env_steps", "gradient_updates", "episodes", "q_abs_max",
                "update_norm_var", "final_eval_return_mean", "final_eval_return_std"):
        assert summary[key] == whole[key], key
    assert [(p["env_step"], p["gradient_updates"], p["returns"]) for p in summary["eval_curve"]] \
        == [(p["env_step"], p["gradient_updates"], p["returns"]) for p in whole["eval_curve"]]

    scalars, whole_scalars = read_scalars(run_dir), read_scalars(whole_dir)
    assert set(scalars) == set(whole_scalars)
    for tag in set(scalars) - {Tags.SPS}:
        assert scalars[tag] == whole_scalars[tag], tag
    assert [s for s, _ in scalars[Tags.SPS]] == [s for s, _ in whole_scalars[Tags.SPS]]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2

    resume = shlex.join([sys.executable, "-m", "dqn_stable.train", "--resume", str(run_dir)])
    assert (run_dir / "command.txt").read_text() == f"{shlex.join(args)}\n{resume}\n"
    assert load_config(run_dir / CONFIG_FILE) == load_config(tmp_path / "tiny.yaml")


class _Interrupted(Exception):
    """Stands in for KeyboardInterrupt, which would stop pytest itself."""


def test_sigint_while_the_run_dir_is_being_set_up(tiny_config, tmp_path, monkeypatch):
    def interrupt(signum, frame):
        raise _Interrupted

    signal.signal(signal.SIGINT, interrupt)  # Python's default handler, minus killing pytest
    opened = train.TensorBoardRecorder

    def recorder_hit_by_sigint(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return opened(*args, **kwargs)

    monkeypatch.setattr(train, "TensorBoardRecorder", recorder_hit_by_sigint)
    run_dir = tmp_path / "run"
    assert train.main(["--config", str(tiny_config), "--run-dir", str(run_dir)]) == 130
    monkeypatch.undo()
    assert not run_dir.exists() or train.main(["--resume", str(run_dir)]) == 0


def test_sigterm_checkpoints_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    process, log, _ = start_run(tmp_path, run_dir)
    code = stop_run(process, log, run_dir, signal.SIGTERM)
    output = (tmp_path / "log.txt").read_text()
    assert code == 143, output
    assert "SIGTERM received: writing a checkpoint, then stopping" in output
    assert not (run_dir / "summary.json").exists()
    state = load_checkpoint(run_dir / CHECKPOINT)
    assert 250 <= state["env_step"] < 1250
    assert state["agent"]["num_updates"] == (state["env_step"] // 2 - 50 + 1) * 2


# --- dqn_stable.evaluate -------------------------------------------------------------------------


def evaluate_json(capsys, *args):
    capsys.readouterr()
    assert evaluate.main([str(a) for a in args]) == 0
    out, _ = capsys.readouterr()
    assert out.count("\n") == 1
    return json.loads(out)


def test_evaluate_prints_one_json_line_of_returns(finished_run, capsys):
    run_dir = finished_run[0]
    result = evaluate_json(capsys, run_dir, "--episodes", "3", "--seed", "5")
    assert set(result) == {
        "run_dir", "env_id", "env_steps", "episodes", "seed", "returns", "mean", "std"
    }
    assert (result["run_dir"], result["env_id"]) == (str(run_dir), "CartPole-v1")
    assert (result["env_steps"], result["episodes"], result["seed"]) == (1250, 3, 5)
    assert len(result["returns"]) == 3
    assert result["mean"] == float(np.mean(result["returns"]))
    assert result["std"] == float(np.std(result["returns"]))
    assert evaluate_json(capsys, run_dir, "--episodes", "3", "--seed", "5") == result


def test_evaluate_replays_the_runs_final_evaluation(finished_run, capsys):
    """The final evaluation at env step 1250 was seeded seed + seed_offset + 1250 = 11253 and
    played greedily with the agent that the final checkpoint holds."""
    run_dir = finished_run[0]
    final = json.loads((run_dir / "summary.json").read_text())["eval_curve"][-1]
    result = evaluate_json(capsys, run_dir, "--episodes", "2", "--seed", 3 + 10_000 + 1250)
    assert result["returns"] == final["returns"]
    assert evaluate_json(capsys, run_dir, "--episodes", "1")["seed"] == 3 + 10_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_a_cuda_run_on_a_cpu_with_device_cpu(finished_run, capsys, tmp_path):
    """A run whose config says cuda (trained elsewhere) is refused as it is, and evaluates with
    --device cpu to the same returns: the device is not part of the run."""
    run_dir = tmp_path / "cuda_run"
    shutil.copytree(finished_run[0], run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["device"] = "cuda"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    capsys.readouterr()
    assert evaluate.main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device = 'cuda': this machine has no CUDA device" in err
    on_cpu = evaluate_json(capsys, run_dir, "--episodes", "2", "--seed", 7, "--device", "cpu")
    original = evaluate_json(capsys, finished_run[0], "--episodes", "2", "--seed", 7)
    assert on_cpu["returns"] == original["returns"]


def test_evaluate_refuses_zero_episodes(finished_run, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main([str(finished_run[0]), "--episodes", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("error: --episodes must be >= 1, got 0\n")


def test_evaluate_missing_run_dir_exits_2(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "gone")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: run directory not found: {tmp_path / 'gone'}\n"


def test_a_finished_run_ignores_signals_while_it_shuts_down(tiny_config, tmp_path):
    # Python puts the default handlers back as it finalizes; dying of SIGINT then (exit -2)
    # would make a finished run look crashed to a sweep.
    assert train.main(["--config", str(tiny_config), "--run-dir", str(tmp_path / "run")]) == 0
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
