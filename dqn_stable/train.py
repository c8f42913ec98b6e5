"""Command line for training.

    python -m dqn_stable.train --config FILE [--run-dir DIR] [key=value ...]
    python -m dqn_stable.train --resume RUN_DIR

Exit status: 0 finished; 2 bad input (config, override, env id, path, checkpoint), reported in one
line before anything is written; 3 the run diverged (non-finite loss or Q-value; see summary.json);
130 after SIGINT and 143 after SIGTERM, each after writing a checkpoint that --resume continues.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dqn_stable.checkpoint import CheckpointError
from dqn_stable.config import ConfigError, dump_config, load_config
from dqn_stable.envs import EnvError
from dqn_stable.recorder import Tags, TensorBoardRecorder
from dqn_stable.replay import InsufficientMemoryError
from dqn_stable.trainer import CONFIG_FILE, SUMMARY_FILE, RunDirError, Trainer, load_run

__all__ = ["main"]

logger = logging.getLogger("dqn_stable")

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
_USER_ERRORS = (ConfigError, EnvError, CheckpointError, RunDirError, InsufficientMemoryError)


class _StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to checkpoint and stop; a second one aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()

    def __call__(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked async env worker: the run's own process stops it
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("%s received: writing a checkpoint, then stopping",
                       signal.Signals(signum).name)

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)

    def ignore_further(self) -> None:
        """Ignore SIGINT/SIGTERM from now on. Once the run has ended and its files are written,
        a signal must not kill the process while it shuts down: Python restores the default
        handlers as it finalizes, and dying of SIGINT then (exit -2) looks like a crash."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dqn_stable.train",
        description="Train a DQN agent (by default the target-free method of arXiv:2305.12125).",
        epilog="Overrides are dotted config keys with YAML values, e.g. train.total_steps=5e4 "
        "network.hidden=[64,64] agent.output_clip=null",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML preset, e.g. configs/cartpole.yaml")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run from its latest checkpoint")
    parser.add_argument("--run-dir", type=Path,
                        help="where to write the run (default runs/<name>__seed<seed>__<time>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _default_run_dir(name: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}__seed{seed}__{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _prepare(args: argparse.Namespace) -> tuple[Trainer, Path, bool]:
    """Build (or restore) the trainer and choose the run dir; writes nothing."""
    if args.resume is not None:
        if args.run_dir is not None or args.overrides:
            raise RunDirError(
                "--resume takes no --run-dir or overrides: a run continues with its saved config"
            )
        if (args.resume / SUMMARY_FILE).is_file():
            raise RunDirError(
                f"run {args.resume} has already ended (see its {SUMMARY_FILE}); nothing to resume"
            )
        return load_run(args.resume), args.resume, True
    config = load_config(args.config, args.overrides)
    run_dir = args.run_dir or _default_run_dir(config.name, config.seed)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RunDirError(
            f"run directory {run_dir} already exists and is not empty; choose another "
            f"--run-dir, or continue it with --resume {run_dir}"
        )
    return Trainer(config), run_dir, False


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(arguments)
    # From here on a SIGINT/SIGTERM only raises a flag: the run stops at its next env step with a
    # checkpoint, so no run directory is ever left half set up.
    stop = _StopRequest()
    stop.install()
    try:
        trainer, run_dir, resumed = _prepare(args)
    except _USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resumed:
        dump_config(trainer.config, run_dir / CONFIG_FILE)
    command = shlex.join([sys.executable, "-m", "dqn_stable.train", *arguments])
    with open(run_dir / "command.txt", "a") as f:
        f.write(command + "\n")
    # On resume, TensorBoard drops whatever an interrupted process wrote after the checkpoint.
    recorder = TensorBoardRecorder(run_dir, purge_step=trainer.env_step + 1 if resumed else None)
    if not resumed:
        recorder.text(Tags.CONFIG, f"```yaml\n{(run_dir / CONFIG_FILE).read_text()}```", 0)
    logger.info("%s run in %s (view it with: tensorboard --logdir %s)",
                "resuming" if resumed else "starting", run_dir, run_dir)

    try:
        result = trainer.run(run_dir, recorder, should_stop=lambda: stop.signum is not None)
    finally:
        recorder.close()
        trainer.close()
        stop.ignore_further()
    if result.status == "interrupted":
        logger.info("checkpoint written at env step %d; continue with: "
                    "python -m dqn_stable.train --resume %s", trainer.env_step, run_dir)
        return 128 + stop.signum
    summary = result.summary
    if result.status == "diverged":
        logger.error("run diverged at env step %d; see %s", summary["env_steps"],
                     run_dir / SUMMARY_FILE)
        return EXIT_DIVERGED
    logger.info(
        "done: %d env steps, %d gradient updates in %.0f s; final eval return %.1f +- %.1f",
        summary["env_steps"], summary["gradient_updates"], summary["wall_seconds"],
        summary["final_eval_return_mean"], summary["final_eval_return_std"],
    )
    logger.info("run directory: %s", run_dir)
    logger.info("open TensorBoard with: tensorboard --logdir %s", run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
