"""Sweeps: many ordinary training runs from one file, resumable, on a pool of worker processes.

    python -m dqn_stable.sweep --config FILE [--workers N] [--out DIR]

A sweep file names variants (a preset plus dotted overrides), optionally environments, seeds, and
overrides for every run::

    name: cartpole-vs-baseline
    seeds: [0, 1, 2, 3, 4]
    set: {train.total_steps: 50000}          # every run
    variants:
      stable:   {config: configs/cartpole.yaml}
      baseline: {config: configs/cartpole_baseline.yaml}
      tgelu_with_target: {config: configs/cartpole.yaml, set: {agent.target: polyak}}

With ``environments`` (env id -> overrides for that env, e.g. its budget), every variant runs on
every listed env; a variant's ``config`` is then either one preset (its ``env.id`` is replaced) or
a mapping from env id to preset. Overrides apply in the order: sweep ``set``, the environment's,
the variant's ``set``.

Each run is ``python -m dqn_stable.train`` in ``OUT/<variant>__<env>__seed<seed>``. Running the
same command again skips finished runs and resumes interrupted ones from their checkpoints. A run
that fails or diverges is recorded in ``OUT/sweep.json`` and the sweep goes on. Exit status: 0 when
every run finished or diverged, 1 when some failed, 2 for a bad sweep file (nothing is run), 130
or 143 when interrupted (the runs in flight checkpoint; run the command again to continue).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from dqn_stable.checkpoint import atomic_write
from dqn_stable.config import ConfigError, YamlLoader, load_config
from dqn_stable.trainer import CHECKPOINT, SUMMARY_FILE

__all__ = ["RunSpec", "Sweep", "SweepError", "load_sweep", "main", "run_sweep"]

logger = logging.getLogger("dqn_stable.sweep")

MANIFEST = "sweep.json"
_TOP_KEYS = {"name", "seeds", "variants", "environments", "set"}
_VARIANT_KEYS = {"config", "set"}
# train's exit codes -> the status a sweep records
_STATUS = {0: "finished", 3: "diverged", 130: "interrupted", 143: "interrupted"}


class SweepError(ValueError):
    """A sweep file that cannot be turned into runs."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep."""

    variant: str
    env_id: str
    seed: int
    config: str
    """Path of the preset."""
    overrides: tuple[str, ...]
    """``key=value`` overrides on top of the preset, seed included."""

    @property
    def name(self) -> str:
        """The run directory's name inside the sweep's output folder."""
        return f"{self.variant}__{self.env_id.replace('/', '-').replace(':', '-')}__seed{self.seed}"

    def train_command(self, run_dir: Path) -> list[str]:
        """The ``python -m dqn_stable.train`` command that runs (or resumes) this run."""
        module = [sys.executable, "-m", "dqn_stable.train"]
        if (run_dir / CHECKPOINT).is_file():
            return [*module, "--resume", str(run_dir)]
        return [*module, "--config", self.config, "--run-dir", str(run_dir), *self.overrides]


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[RunSpec, ...]


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def _as_overrides(values: Mapping[str, Any]) -> list[str]:
    # JSON is YAML's flow syntax: train parses each value back to exactly what was written.
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def load_sweep(path: str | Path) -> Sweep:
    """The sweep's runs, every run's config checked (so a typo fails before any run starts).
    Raises :class:`SweepError` or :class:`~dqn_stable.config.ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=YamlLoader)  # refuses duplicate keys
    except yaml.YAMLError as exc:
        raise SweepError(f"invalid YAML in {path}: {' '.join(str(exc).split())}") from None
    data = _mapping(data, f"the top level of {path}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SweepError(f"unknown key(s) {sorted(unknown)} in {path}; valid: {sorted(_TOP_KEYS)}")
    name = data.get("name")
    seeds = data.get("seeds")
    if not isinstance(name, str) or not name:
        raise SweepError(f"{path} needs a 'name' (a non-empty string)")
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise SweepError(f"'seeds' in {path} must be a non-empty list of integers >= 0")
    variants = _mapping(data.get("variants"), f"'variants' in {path}")
    if not variants:
        raise SweepError(f"{path} needs at least one entry under 'variants'")
    environments = data.get("environments")
    common = _as_overrides(_mapping(data.get("set"), f"'set' in {path}"))

    runs = []
    for variant, spec in variants.items():
        spec = _mapping(spec, f"variant {variant!r} in {path}")
        if set(spec) - _VARIANT_KEYS or "config" not in spec:
            raise SweepError(f"variant {variant!r} in {path} takes 'config' and optionally 'set'")
        variant_set = _as_overrides(_mapping(spec.get("set"), f"'set' of variant {variant!r}"))
        for preset, env_set in _cells(spec["config"], environments, variant, path):
            overrides = [*common, *env_set, *variant_set]
            for seed in seeds:
                run_overrides = (*overrides, f"seed={seed}")
                config = load_config(preset, run_overrides)  # ConfigError names the problem
                runs.append(RunSpec(variant, config.env.id, seed, str(preset), run_overrides))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise SweepError(f"{path} lists the same (variant, env, seed) more than once")
    return Sweep(name, tuple(runs))


def _cells(config: Any, environments: Any, variant: str, path: Path):
    """(preset path, env overrides) for each environment a variant runs on."""
    if environments is None:
        if isinstance(config, Mapping):
            raise SweepError(
                f"variant {variant!r} in {path} maps envs to presets, so the sweep needs "
                "'environments'"
            )
        yield _preset(config, path), []
        return
    environments = _mapping(environments, f"'environments' in {path}")
    for env_id, env_set in environments.items():
        env_overrides = _as_overrides(_mapping(env_set, f"environment {env_id!r} in {path}"))
        if isinstance(config, Mapping):
            if env_id not in config:
                raise SweepError(f"variant {variant!r} in {path} has no preset for {env_id}")
            yield _preset(config[env_id], path), env_overrides
        else:
            yield _preset(config, path), [f"env.id={json.dumps(env_id)}", *env_overrides]


def _preset(value: Any, sweep_path: Path) -> Path:
    """A preset path, relative to the working directory or else to the sweep file."""
    if not isinstance(value, str):
        raise SweepError(f"a variant's config in {sweep_path} must be a path, got {value!r}")
    for candidate in (Path(value), sweep_path.parent / value):
        if candidate.is_file():
            return candidate
    raise SweepError(f"preset {value} named in {sweep_path} not found")


def _start_train(spec: RunSpec, out: Path) -> subprocess.Popen:
    """Start (or resume) one run of ``python -m dqn_stable.train``; output in ``OUT/<name>.log``."""
    run_dir = out / spec.name
    if run_dir.exists() and not (run_dir / CHECKPOINT).is_file():
        shutil.rmtree(run_dir)  # started but never checkpointed: start it again
    # One torch thread per run (the trainer's default); keep BLAS from spawning more.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(out / f"{spec.name}.log", "a") as log:
        # Its own session: a terminal's Ctrl-C reaches the sweep only, which forwards it once.
        return subprocess.Popen(spec.train_command(run_dir), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


class _LocalPool:
    """Runs train commands as child processes, ``workers`` at a time."""

    def __init__(self, out: Path, workers: int) -> None:
        self.out = out
        self.workers = workers
        self.signum: int | None = None
        """The signal that stopped the sweep, if one did."""
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, runs: Sequence[RunSpec], record: Callable[[RunSpec, int], None]) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            for future in [pool.submit(self._one, spec, record) for spec in runs]:
                future.result()

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to the runs in flight (they checkpoint) and start no new run."""
        with self._lock:
            self.signum = signum
            for child in self._children:
                child.send_signal(signum)

    def _one(self, spec: RunSpec, record: Callable[[RunSpec, int], None]) -> None:
        with self._lock:
            if self.signum is not None:
                return
            child = _start_train(spec, self.out)
            self._children.add(child)
        code = child.wait()
        with self._lock:
            self._children.discard(child)
        record(spec, code)


def _ray_task(spec: RunSpec, out: str) -> int:
    """A sweep run as a Ray task: the same train subprocess, on whichever node runs the task."""
    child = _start_train(spec, Path(out))
    try:
        return child.wait()
    except KeyboardInterrupt:  # ray.cancel: let the run write its checkpoint before stopping
        child.send_signal(signal.SIGINT)
        return child.wait()


class _RayPool:
    """Runs the same train commands as Ray tasks (one CPU each) on a local or remote cluster.

    ``out`` must be storage that every node sees: each task writes its run directory there.
    """

    def __init__(self, out: Path, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError(
                "the ray backend needs Ray: pip install 'dqn_stable[ray]'"
            ) from None
        self._ray = ray
        self.out = out
        self.signum: int | None = None
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)

    def run(self, runs: Sequence[RunSpec], record: Callable[[RunSpec, int], None]) -> None:
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        out = str(self.out.resolve())
        # Tasks may start in another working directory (or on another node): absolute presets.
        specs = {task.remote(replace(spec, config=str(Path(spec.config).resolve())), out): spec
                 for spec in runs}
        pending, cancelled = list(specs), False
        while pending:
            if self.signum is not None and not cancelled:
                for ref in pending:  # running tasks get KeyboardInterrupt, queued ones are dropped
                    ray.cancel(ref)
                cancelled = True
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                # a cancelled run stays pending; its checkpoint, if any, is resumed next time
                with contextlib.suppress(ray.exceptions.TaskCancelledError):
                    record(specs[ref], ray.get(ref))

    def stop(self, signum: int) -> None:
        self.signum = signum


def run_sweep(
    sweep: Sweep, out: str | Path, workers: int, *, backend: str = "local",
    address: str | None = None,
) -> tuple[dict, int | None]:
    """Run every run of ``sweep`` that has not ended yet: ``workers`` at a time on this machine
    (``backend="local"``), or as Ray tasks on the cluster at ``address`` (``"ray"``; a local
    instance when ``address`` is None).

    Returns the manifest (also kept up to date in ``OUT/sweep.json``) and the signal that
    interrupted the sweep, if any.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = {spec.name: {"run_dir": spec.name, **asdict(spec), "status": "pending",
                           "exit_code": None} for spec in sweep.runs}
    earlier = {}
    if (out / MANIFEST).is_file():
        earlier = {run["run_dir"]: run for run in json.loads((out / MANIFEST).read_text())["runs"]}
    todo = []
    for spec in sweep.runs:
        summary_path = out / spec.name / SUMMARY_FILE
        if summary_path.is_file():
            entries[spec.name]["status"] = json.loads(summary_path.read_text())["status"]
            entries[spec.name]["exit_code"] = earlier.get(spec.name, {}).get("exit_code")
        else:
            todo.append(spec)
    lock = threading.Lock()

    def write() -> None:
        text = json.dumps({"name": sweep.name, "runs": list(entries.values())}, indent=2)
        atomic_write(out / MANIFEST, lambda f: f.write((text + "\n").encode()))

    def record(spec: RunSpec, code: int) -> None:
        summary_path = out / spec.name / SUMMARY_FILE
        if summary_path.is_file():  # the run's own account of how it ended is the truth
            status = json.loads(summary_path.read_text())["status"]
        else:
            status = _STATUS.get(code, "failed")
        if status == "failed" and pool.signum is not None:
            status = "interrupted"  # stopped during start-up, before train's handler was in place
        with lock:
            entries[spec.name].update(status=status, exit_code=code)
            write()
        logger.info("%s: %s (exit %d)", spec.name, status, code)

    write()
    logger.info("sweep %s: %d runs, %d already ended, %d to run, %d at a time",
                sweep.name, len(sweep.runs), len(sweep.runs) - len(todo), len(todo), workers)
    pool = _LocalPool(out, workers) if backend == "local" else _RayPool(out, address)
    handlers = {sig: signal.signal(sig, lambda signum, _frame: pool.stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pool.run(todo, record)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return {"name": sweep.name, "runs": list(entries.values())}, pool.signum


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m dqn_stable.sweep",
                                     description="Run a sweep of training runs.")
    parser.add_argument("--config", type=Path, required=True, help="sweep YAML file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="runs at a time with the local backend (default: the number of "
                        "cores); with ray, the cluster's CPUs decide")
    parser.add_argument("--out", type=Path, help="output folder (default: sweeps/<name>); with "
                        "--backend ray, storage that every node sees")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--address", help="Ray cluster address (ray backend; default: start a "
                        "local Ray instance)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.address is not None and args.backend != "ray":
        parser.error("--address is for --backend ray")
    try:
        sweep = load_sweep(args.config)
    except (SweepError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("sweeps") / sweep.name
    try:
        manifest, signum = run_sweep(sweep, out, args.workers, backend=args.backend,
                                     address=args.address)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = [run["status"] for run in manifest["runs"]]
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    logger.info("sweep %s in %s: %s", sweep.name, out, counts)
    if signum is not None:
        logger.info("interrupted: run the same command again to continue")
        return 128 + signum
    return 1 if "failed" in statuses else 0


if __name__ == "__main__":
    raise SystemExit(main())
