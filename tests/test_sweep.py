"""Sweeps: the runs a sweep file expands to, bad sweep files, and tiny sweeps end to end (two
workers, a second invocation that does nothing, SIGINT then resume, a failing run)."""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_data, write_yaml

from dqn_stable import report, sweep
from dqn_stable.config import ConfigError, load_config
from dqn_stable.sweep import RunSpec, SweepError, load_sweep
from dqn_stable.trainer import CHECKPOINT, SUMMARY_FILE

PRESET = {
    "replay.capacity": 2000, "replay.batch_size": 32, "replay.learning_starts": 100,
    "train.total_steps": 400, "train.train_every": 4, "train.gradient_steps": 1,
    "train.log_every": 100, "eval.every": 200, "eval.episodes": 2, "checkpoint.every": 200,
}
"""A CartPole run of a few hundred env steps; its 'tiny' name comes from the file's stem."""

TRAIN = [sys.executable, "-m", "dqn_stable.train"]


@pytest.fixture
def preset(tmp_path) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_data(**PRESET))


def write_sweep(path: Path, **data) -> Path:
    return write_yaml(path, data)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def tree(path: Path) -> dict:
    """Every file under ``path`` with its bytes and mtime, to show that nothing changed."""
    return {p.relative_to(path): (p.stat().st_mtime_ns, p.read_bytes())
            for p in path.rglob("*") if p.is_file()}


def manifest(out: Path) -> dict:
    return json.loads((out / sweep.MANIFEST).read_text())


def statuses(out: Path) -> dict:
    return {run["run_dir"]: (run["status"], run["exit_code"]) for run in manifest(out)["runs"]}


@pytest.fixture
def sweep_log(caplog):
    caplog.set_level(logging.INFO, logger="dqn_stable.sweep")
    return caplog


# --- load_sweep ----------------------------------------------------------------------------------


def test_variants_times_seeds_in_file_order(tmp_path, preset):
    path = write_sweep(
        tmp_path / "grid.yaml", name="grid", seeds=[0, 1], set={"train.total_steps": 300},
        variants={"stable": {"config": str(preset)},
                  "polyak": {"config": str(preset),
                             "set": {"agent.target": "polyak", "train.total_steps": 500}}},
    )
    loaded = load_sweep(path)
    assert loaded.name == "grid"
    assert [(r.name, r.variant, r.env_id, r.seed, r.config, r.overrides) for r in loaded.runs] == [
        ("stable__CartPole-v1__seed0", "stable", "CartPole-v1", 0, str(preset),
         ("train.total_steps=300", "seed=0")),
        ("stable__CartPole-v1__seed1", "stable", "CartPole-v1", 1, str(preset),
         ("train.total_steps=300", "seed=1")),
        ("polyak__CartPole-v1__seed0", "polyak", "CartPole-v1", 0, str(preset),
         ("train.total_steps=300", 'agent.target="polyak"', "train.total_steps=500", "seed=0")),
        ("polyak__CartPole-v1__seed1", "polyak", "CartPole-v1", 1, str(preset),
         ("train.total_steps=300", 'agent.target="polyak"', "train.total_steps=500", "seed=1")),
    ]
    # later overrides win: the variant's budget replaces the sweep's
    config = load_config(loaded.runs[3].config, loaded.runs[3].overrides)
    assert (config.train.total_steps, config.agent.target, config.seed) == (500, "polyak", 1)


def test_environments_with_one_preset_replace_its_env_id(tmp_path, preset):
    path = write_sweep(
        tmp_path / "envs.yaml", name="envs", seeds=[4], set={"eval.episodes": 1},
        environments={"CartPole-v1": {"train.total_steps": 300},
                      "Acrobot-v1": {"train.total_steps": 500}},
        variants={"hard": {"config": str(preset), "set": {"agent.target": "hard"}}},
    )
    runs = load_sweep(path).runs
    assert [(r.name, r.env_id, r.overrides) for r in runs] == [
        ("hard__CartPole-v1__seed4", "CartPole-v1",
         ("eval.episodes=1", 'env.id="CartPole-v1"', "train.total_steps=300",
          'agent.target="hard"', "seed=4")),
        ("hard__Acrobot-v1__seed4", "Acrobot-v1",
         ("eval.episodes=1", 'env.id="Acrobot-v1"', "train.total_steps=500",
          'agent.target="hard"', "seed=4")),
    ]
    assert load_config(runs[1].config, runs[1].overrides).env.id == "Acrobot-v1"


def test_environments_with_a_preset_per_env(tmp_path, preset):
    acrobot = write_yaml(tmp_path / "acro.yaml", tiny_data(**PRESET, **{"env.id": "Acrobot-v1"}))
    path = write_sweep(
        tmp_path / "per_env.yaml", name="per-env", seeds=[0],
        environments={"CartPole-v1": None, "Acrobot-v1": {"train.total_steps": 600}},
        variants={"own": {"config": {"CartPole-v1": str(preset), "Acrobot-v1": str(acrobot)}}},
    )
    assert [(r.name, r.config, r.overrides) for r in load_sweep(path).runs] == [
        ("own__CartPole-v1__seed0", str(preset), ("seed=0",)),
        ("own__Acrobot-v1__seed0", str(acrobot), ("train.total_steps=600", "seed=0")),
    ]


def test_preset_paths_are_relative_to_the_cwd_or_else_to_the_sweep_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    beside = write_yaml(tmp_path / "sub" / "tiny.yaml", tiny_data(**PRESET))
    path = write_sweep(tmp_path / "sub" / "s.yaml", name="s", seeds=[0],
                       variants={"v": {"config": "tiny.yaml"}})
    monkeypatch.chdir(tmp_path)
    assert load_sweep(path).runs[0].config == str(beside)
    write_yaml(tmp_path / "tiny.yaml", tiny_data(**PRESET))
    assert load_sweep(path).runs[0].config == "tiny.yaml"


def test_run_names_and_train_commands(tmp_path):
    assert RunSpec("v", "ALE/Pong-v5", 2, "p.yaml", ()).name == "v__ALE-Pong-v5__seed2"
    assert RunSpec("v", "my_pkg:Env-v0", 0, "p.yaml", ()).name == "v__my_pkg-Env-v0__seed0"
    spec = RunSpec("v", "CartPole-v1", 1, "p.yaml", ("train.total_steps=300", "seed=1"))
    run_dir = tmp_path / spec.name
    assert spec.train_command(run_dir) == [
        *TRAIN, "--config", "p.yaml", "--run-dir", str(run_dir), "train.total_steps=300", "seed=1"]
    (run_dir / CHECKPOINT).parent.mkdir(parents=True)
    (run_dir / CHECKPOINT).write_bytes(b"")
    assert spec.train_command(run_dir) == [*TRAIN, "--resume", str(run_dir)]


GOOD = {"name": "s", "seeds": [0]}


@pytest.mark.parametrize(("data", "message"), [
    ({**GOOD, "seed": 1}, "unknown key(s) ['seed'] in {path}; "
                          "valid: ['environments', 'name', 'seeds', 'set', 'variants']"),
    ({"seeds": [0]}, "{path} needs a 'name' (a non-empty string)"),
    ({**GOOD, "name": ""}, "{path} needs a 'name' (a non-empty string)"),
    ({"name": "s"}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    ({**GOOD, "seeds": []}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    ({**GOOD, "seeds": 0}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    ({**GOOD, "seeds": [0, -1]}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    ({**GOOD, "seeds": [True]}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    ({**GOOD, "seeds": [1.5]}, "'seeds' in {path} must be a non-empty list of integers >= 0"),
    (GOOD, "{path} needs at least one entry under 'variants'"),
    ({**GOOD, "variants": {}}, "{path} needs at least one entry under 'variants'"),
    ({**GOOD, "variants": ["a"]}, "'variants' in {path} must be a mapping, got ['a']"),
    ({**GOOD, "variants": {"a": "tiny.yaml"}},
     "variant 'a' in {path} must be a mapping, got 'tiny.yaml'"),
    ({**GOOD, "variants": {"a": {"set": {"seed": 1}}}},
     "variant 'a' in {path} takes 'config' and optionally 'set'"),
    ({**GOOD, "variants": {"a": {"config": "{preset}", "seeds": [1]}}},
     "variant 'a' in {path} takes 'config' and optionally 'set'"),
    ({**GOOD, "variants": {"a": {"config": "nope.yaml"}}},
     "preset nope.yaml named in {path} not found"),
    ({**GOOD, "environments": {"CartPole-v1": None}, "variants": {"a": {"config": 3}}},
     "a variant's config in {path} must be a path, got 3"),
    ({**GOOD, "variants": {"a": {"config": {"CartPole-v1": "{preset}"}}}},
     "variant 'a' in {path} maps envs to presets, so the sweep needs 'environments'"),
    ({**GOOD, "environments": {"CartPole-v1": None, "Acrobot-v1": None},
      "variants": {"a": {"config": {"CartPole-v1": "{preset}"}}}},
     "variant 'a' in {path} has no preset for Acrobot-v1"),
    ({**GOOD, "set": [1], "variants": {"a": {"config": "{preset}"}}},
     "'set' in {path} must be a mapping, got [1]"),
    ({**GOOD, "variants": {"a": {"config": "{preset}", "set": "x"}}},
     "'set' of variant 'a' must be a mapping, got 'x'"),
    ({**GOOD, "environments": {"CartPole-v1": 5}, "variants": {"a": {"config": "{preset}"}}},
     "environment 'CartPole-v1' in {path} must be a mapping, got 5"),
    ({**GOOD, "seeds": [0, 1, 0], "variants": {"a": {"config": "{preset}"}}},
     "{path} lists the same (variant, env, seed) more than once"),
    # distinct env ids, one run directory name
    ({**GOOD, "environments": {"ALE/Pong-v5": None, "ALE-Pong-v5": None},
      "variants": {"a": {"config": "{preset}"}}},
     "{path} lists the same (variant, env, seed) more than once"),
])
def test_bad_sweep_files(tmp_path, preset, data, message):
    text = json.dumps(data).replace("{preset}", str(preset))
    path = write_sweep(tmp_path / "bad.yaml", **json.loads(text))
    with pytest.raises(SweepError, match=exactly(message.format(path=path))):
        load_sweep(path)


def test_a_config_that_is_not_a_path_is_named_as_such(tmp_path):
    path = write_sweep(tmp_path / "bad.yaml", **GOOD, variants={"a": {"config": 3}})
    with pytest.raises(SweepError, match=exactly(
            f"a variant's config in {path} must be a path, got 3")):
        load_sweep(path)


def test_a_variant_listed_twice_is_refused(tmp_path, preset):
    path = tmp_path / "dup.yaml"
    path.write_text(f"name: s\nseeds: [0]\nvariants:\n"
                    f"  a: {{config: {preset}, set: {{agent.target: polyak}}}}\n"
                    f"  a: {{config: {preset}}}\n")
    with pytest.raises(SweepError, match="duplicate key 'a'"):
        load_sweep(path)


def test_missing_or_unparsable_sweep_file(tmp_path):
    with pytest.raises(SweepError, match=exactly(f"sweep file not found: {tmp_path / 'no.yaml'}")):
        load_sweep(tmp_path / "no.yaml")
    (tmp_path / "broken.yaml").write_text("name: [s\n")
    broken = re.escape(f"invalid YAML in {tmp_path / 'broken.yaml'}: ")
    with pytest.raises(SweepError, match=f"^{broken}"):
        load_sweep(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SweepError, match=exactly(
            f"the top level of {tmp_path / 'list.yaml'} must be a mapping, got [1, 2]")):
        load_sweep(tmp_path / "list.yaml")


@pytest.mark.parametrize(("where", "message"), [
    ("sweep", "agent.gamma = 2.0 in {preset} with overrides: must be in [0, 1]"),
    ("variant", "unknown key 'agent.gama' in override 'agent.gama=0.9'; "
                "did you mean 'agent.gamma'?"),
])
def test_bad_override_fails_before_anything_runs(tmp_path, preset, monkeypatch, capsys,
                                                 where, message):
    variant = {"config": str(preset)}
    common = {}
    if where == "sweep":
        common = {"set": {"agent.gamma": 2}}
    else:
        variant["set"] = {"agent.gama": 0.9}
    path = write_sweep(tmp_path / "s.yaml", name="s", seeds=[0], **common,
                       variants={"ok": {"config": str(preset)}, "bad": variant})
    message = message.format(preset=preset)
    with pytest.raises(ConfigError, match=exactly(message)):
        load_sweep(path)

    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    assert sweep.main(["--config", str(path), "--out", "out"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert tree(tmp_path) == before  # no out/, no sweeps/


def test_workers_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        sweep.main(["--config", str(tmp_path / "s.yaml"), "--workers", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("error: --workers must be >= 1, got 0\n")


# --- A tiny sweep end to end ---------------------------------------------------------------------

TWO_BY_TWO = ["stable__CartPole-v1__seed0", "stable__CartPole-v1__seed1",
              "polyak__CartPole-v1__seed0", "polyak__CartPole-v1__seed1"]


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """2 variants x 2 seeds run by ``main`` with 2 workers in a fresh cwd and its default output
    folder, sweeps/<name>: ``(cwd, argv, out, exit code, log messages)``."""
    cwd = tmp_path_factory.mktemp("sweep")
    preset = write_yaml(cwd / "tiny.yaml", tiny_data(**PRESET))
    path = write_sweep(
        cwd / "sweep.yaml", name="tiny", seeds=[0, 1], set={"train.total_steps": 300},
        variants={"stable": {"config": str(preset)},
                  "polyak": {"config": str(preset), "set": {"agent.target": "polyak"}}},
    )
    argv = ["--config", str(path), "--workers", "2"]
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("dqn_stable.sweep")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            code = sweep.main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return cwd, argv, cwd / "sweeps" / "tiny", code, messages


def test_a_sweep_runs_every_run_and_reports(two_by_two, capsys):
    _, _, out, code, messages = two_by_two
    assert code == 0, messages
    assert "sweep tiny: 4 runs, 0 already ended, 4 to run, 2 at a time" in messages
    assert f"sweep tiny in {Path('sweeps/tiny')}: {{'finished': 4}}" in messages
    assert manifest(out)["name"] == "tiny"
    assert [(r["run_dir"], r["variant"], r["seed"], r["status"], r["exit_code"])
            for r in manifest(out)["runs"]] == [
        (name, name.split("__")[0], int(name[-1]), "finished", 0) for name in TWO_BY_TWO]
    for name in TWO_BY_TWO:
        summary = json.loads((out / name / SUMMARY_FILE).read_text())
        assert (summary["status"], summary["env_steps"], summary["seed"]) \
            == ("finished", 300, int(name[-1]))
        assert (out / f"{name}.log").is_file()
        assert len(list((out / name).glob("events.out.tfevents.*"))) == 1

    assert report.main([str(out), "--resamples", "200"]) == 0
    assert capsys.readouterr().out == f"{out / 'report.md'}\n"
    for figure in ("eval_return.png", "update_norm_var.png", "td_loss.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads((out / "report.json").read_text())
    assert {key: value["runs"] for key, value in stats.items()} \
        == {"CartPole-v1/polyak": 2, "CartPole-v1/stable": 2}
    text = (out / "report.md").read_text()
    assert "- CartPole-v1 / stable: `stable__CartPole-v1__seed0`, `stable__CartPole-v1__seed1`" \
        in text.splitlines()


def test_running_a_finished_sweep_again_does_nothing(two_by_two, monkeypatch, sweep_log):
    cwd, argv, out, code, _ = two_by_two
    assert code == 0
    before, entries = tree(out), manifest(out)
    monkeypatch.chdir(cwd)
    assert sweep.main(argv) == 0
    assert "sweep tiny: 4 runs, 4 already ended, 0 to run, 2 at a time" in sweep_log.messages
    assert manifest(out) == entries
    after = tree(out)
    del before[Path(sweep.MANIFEST)], after[Path(sweep.MANIFEST)]  # rewritten, same content
    assert after == before


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, preset, monkeypatch):
    """replay.capacity=10^12 passes config validation, but train refuses the replay memory at
    start-up (exit 2). The good run's directory holds only a stray file, as if the sweep had
    died before its first checkpoint: it starts again from scratch."""
    path = write_sweep(
        tmp_path / "s.yaml", name="mixed", seeds=[0], set={"train.total_steps": 300},
        variants={"huge": {"config": str(preset), "set": {"replay.capacity": 10**12}},
                  "good": {"config": str(preset)}},
    )
    out = tmp_path / "out"
    (out / "good__CartPole-v1__seed0").mkdir(parents=True)
    (out / "good__CartPole-v1__seed0" / "stray.txt").write_text("left over\n")
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["--config", str(path), "--workers", "2", "--out", str(out)]) == 1
    assert statuses(out) == {"huge__CartPole-v1__seed0": ("failed", 2),
                             "good__CartPole-v1__seed0": ("finished", 0)}
    log = (out / "huge__CartPole-v1__seed0.log").read_text()
    assert "error: replay buffer needs " in log
    assert not (out / "huge__CartPole-v1__seed0").exists()
    good = out / "good__CartPole-v1__seed0"
    assert not (good / "stray.txt").exists()
    assert json.loads((good / SUMMARY_FILE).read_text())["env_steps"] == 300
    assert (good / "command.txt").read_text().count("\n") == 1


def wait_for(condition, process, what, timeout=180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def test_sigint_stops_the_sweep_and_running_it_again_resumes(tmp_path, preset, monkeypatch):
    path = write_sweep(tmp_path / "s.yaml", name="long", seeds=[0, 1],
                       set={"train.total_steps": 1000, "eval.every": 400},
                       variants={"v": {"config": str(preset)}})
    out = tmp_path / "out"
    names = ["v__CartPole-v1__seed0", "v__CartPole-v1__seed1"]
    argv = ["--config", str(path), "--workers", "2", "--out", str(out)]
    with open(tmp_path / "sweep.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dqn_stable.sweep", *argv],
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Both runs past their start-up (see test_sigint_during_a_runs_start_up).
            wait_for(lambda: all((out / n / CHECKPOINT).is_file()
                                 or (out / n / SUMMARY_FILE).is_file() for n in names),
                     process, "checkpoint of both runs")
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    output = (tmp_path / "sweep.log").read_text()
    assert code == 130, output
    assert "interrupted: run the same command again to continue" in output
    interrupted = [n for n, entry in statuses(out).items() if entry == ("interrupted", 130)]
    assert interrupted, statuses(out)
    for name, entry in statuses(out).items():
        assert entry in {("interrupted", 130), ("finished", 0)}, (name, entry)
        assert (out / name / SUMMARY_FILE).is_file() == (entry[0] == "finished")
    for name in interrupted:
        assert "SIGINT received: writing a checkpoint" in (out / f"{name}.log").read_text()

    monkeypatch.chdir(tmp_path)
    assert sweep.main(argv) == 0
    assert statuses(out) == {name: ("finished", 0) for name in names}
    for name in names:
        assert json.loads((out / name / SUMMARY_FILE).read_text())["env_steps"] == 1000
    for name in interrupted:
        run_dir = out / name
        first = [*TRAIN, "--config", str(preset), "--run-dir", str(run_dir),
                 "train.total_steps=1000", "eval.every=400", f"seed={name[-1]}"]
        assert (run_dir / "command.txt").read_text() \
            == f"{shlex.join(first)}\n{shlex.join([*TRAIN, '--resume', str(run_dir)])}\n"


def test_sigint_during_a_runs_start_up(tmp_path, preset, monkeypatch):
    """The run was interrupted, not broken: it should stay resumable-looking ('pending' or
    'interrupted'), and running the sweep again starts it from scratch either way."""
    path = write_sweep(tmp_path / "s.yaml", name="early", seeds=[0],
                       variants={"v": {"config": str(preset)}})
    started = threading.Event()
    popen = subprocess.Popen

    def popen_and_tell(*args, **kwargs):
        child = popen(*args, **kwargs)
        started.set()
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_and_tell)
    main_thread = threading.main_thread().ident
    threading.Thread(target=lambda: started.wait(60) and signal.pthread_kill(
        main_thread, signal.SIGINT), daemon=True).start()
    entries, signum = sweep.run_sweep(load_sweep(path), tmp_path / "out", workers=1)
    assert signum == signal.SIGINT
    [entry] = entries["runs"]
    assert not (tmp_path / "out" / "v__CartPole-v1__seed0" / SUMMARY_FILE).exists()
    assert entry["status"] in {"pending", "interrupted"}, (entry["status"], entry["exit_code"])
