"""The training loop: collect -> store -> update -> evaluate -> record -> checkpoint.

Only this module knows the order of those steps. A :class:`Trainer` is built from a
:class:`~dqn_stable.config.Config` alone (everything that can fail on user input fails there,
before any file is written), can be restored from a checkpoint, and runs until its env-step budget
is spent, the loss diverges, or ``should_stop`` says so.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn_stable.agent import DQNAgent, UpdateInfo
from dqn_stable.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dqn_stable.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from dqn_stable.diagnostics import RunningStats, UpdateWindow
from dqn_stable.envs import EnvSpec, make_env, make_vector_env, restore_env, snapshot_env
from dqn_stable.evaluate import evaluate_policy
from dqn_stable.networks import QNetwork
from dqn_stable.recorder import Recorder, Tags, write_summary
from dqn_stable.replay import Batch, FrameStackReplay, ReplayBuffer
from dqn_stable.schedules import LinearSchedule

__all__ = [
    "CHECKPOINT", "CONFIG_FILE", "SUMMARY_FILE", "RunDirError", "RunResult", "Trainer", "load_run"
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT = "checkpoints/latest.pt"
SUMMARY_FILE = "summary.json"


class RunDirError(ValueError):
    """A run directory that is missing, incomplete, or may not be written to."""


@dataclass(frozen=True)
class RunResult:
    status: str
    """'finished', 'diverged' or 'interrupted'."""
    summary: dict[str, Any]


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class Trainer:
    """One run: environments, network, agent and replay buffer built from ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        torch.set_num_threads(config.train.torch_threads)
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        agent_seed, replay_seed = np.random.SeedSequence(config.seed).spawn(2)

        device = resolve_device(config.device)  # before any env: a bad device costs nothing
        self.vector = config.env.num_envs > 1
        """Whether training collects with a vector env (``env.num_envs > 1``)."""
        self.env, spec = make_vector_env(config.env) if self.vector else make_env(config.env)
        try:
            self.eval_env, _ = make_env(config.env, evaluation=True)
        except BaseException:
            self.env.close()  # an async vector env's workers must not outlive a failed start
            raise
        try:
            network = _make_network(config, spec).to(device)  # on CPU first: same init anywhere
            self.agent = DQNAgent(network, config.agent, config.optimizer, seed=agent_seed)
            self.replay = _make_replay(config, spec, replay_seed)
        except BaseException:
            self.close()
            raise
        self.epsilon = LinearSchedule(
            config.exploration.start, config.exploration.end, config.exploration.decay_steps
        )
        # One batch, refilled by every update's sample: no allocation per update.
        self._batch = Batch.empty(config.replay.batch_size, spec.obs_shape, spec.obs_dtype)

        self.obs, _ = self.env.reset(seed=config.seed)  # a vector env seeds copy i with seed + i
        self.env.action_space.seed(config.seed)
        self.env_step = 0
        """Env steps taken so far (with a vector env, num_envs per vector step)."""
        self.episodes = 0
        """Training episodes finished so far."""
        self.episode_return, self.episode_length = self._new_episode_counters()
        self.window = UpdateWindow()
        self.update_norm_stats = RunningStats()
        self.q_abs_max = 0.0
        """Largest |Q| seen in any training batch of the run."""
        self.last_episode: tuple[float, int] | None = None
        """(return, length) of the last finished training episode."""
        self.eval_curve: list[dict[str, Any]] = []
        self._wall_before = 0.0  # wall seconds spent by earlier processes of this run
        self._peak_rss_before = 0.0
        self._started = time.perf_counter()
        self._sps_mark = (0, self._started)  # (env step, time) of the last SPS point
        self._env_warned = False

    # --- the loop ---------------------------------------------------------------------------

    def run(
        self,
        run_dir: str | Path,
        recorder: Recorder | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> RunResult:
        """Train until ``train.total_steps`` env steps; on divergence stop without checkpointing;
        when ``should_stop()`` turns true, checkpoint and return 'interrupted'."""
        cfg = self.config
        run_dir = Path(run_dir)
        recorder = recorder if recorder is not None else Recorder()
        self._started = time.perf_counter()
        self._sps_mark = (self.env_step, self._started)
        progress = _Progress(self.env_step, cfg.train.total_steps)
        try:
            while self.env_step < cfg.train.total_steps:
                before = self.env_step
                if self.vector:
                    self._collect_vector(recorder)
                else:
                    self._collect(recorder)
                rounds = self._update_rounds(before, self.env_step)
                if rounds and not self._train(rounds):
                    logger.error(
                        "diverged at env step %d: non-finite loss or Q-value; stopping without "
                        "a checkpoint (the last good one, if any, is kept)", self.env_step,
                    )
                    return self._finish(run_dir, recorder, "diverged")
                step = self.env_step
                last = step == cfg.train.total_steps
                if _crossed(before, step, cfg.train.log_every) or last:
                    self._log(recorder)
                if _crossed(before, step, cfg.eval.every) or last:
                    self._evaluate(recorder)
                    progress.evaluated(step, self.eval_curve[-1], self.last_episode)
                progress.advance(step)
                saved = _crossed(before, step, cfg.checkpoint.every) or last
                if saved:
                    self.save(run_dir / CHECKPOINT)
                if should_stop():
                    if not saved:
                        self.save(run_dir / CHECKPOINT)
                    recorder.flush()
                    return RunResult("interrupted", self.summary("interrupted"))
        finally:
            progress.close()
        return self._finish(run_dir, recorder, "finished")

    def _collect(self, recorder: Recorder) -> None:
        """One env step with the behaviour policy; store it; handle the episode's end."""
        if self.env_step < self.config.replay.learning_starts:
            epsilon = 1.0  # uniform-random warm-up
        else:
            epsilon = self.epsilon(self.env_step)
        action = self.agent.act(self.obs, epsilon)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        # next_obs is the true successor even on truncation (single envs do not autoreset), so a
        # time-limited step bootstraps from its real final observation.
        self.replay.add(self.obs, action, reward, next_obs, terminated)
        self.env_step += 1
        self.episode_return += float(reward)
        self.episode_length += 1
        if terminated or truncated:
            recorder.episode(self.env_step, self.episode_return, self.episode_length)
            self.last_episode = (self.episode_return, self.episode_length)
            self.episodes += 1
            self.episode_return, self.episode_length = 0.0, 0
            next_obs, _ = self.env.reset()
        self.obs = next_obs

    def _collect_vector(self, recorder: Recorder) -> None:
        """One vector step: num_envs env steps, each copy with its own epsilon-greedy draw."""
        if self.env_step < self.config.replay.learning_starts:
            epsilon = 1.0
        else:
            epsilon = self.epsilon(self.env_step)
        actions = self.agent.act_batch(self.obs, epsilon)
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        # A copy whose episode ended was reset in this same step: next_obs holds the new episode's
        # first observation, and the transition's true successor is in info["final_obs"].
        successors = next_obs
        if len(ended):
            successors = next_obs.copy()
            for i in ended:
                successors[i] = info["final_obs"][i]
        self.replay.add_batch(self.obs, actions, rewards, successors, terminated)
        self.env_step += len(actions)
        self.episode_return += rewards
        self.episode_length += 1
        for i in ended:
            episode = (float(self.episode_return[i]), int(self.episode_length[i]))
            recorder.episode(self.env_step, *episode)
            self.last_episode = episode
            self.episodes += 1
            self.episode_return[i], self.episode_length[i] = 0.0, 0
        self.obs = next_obs

    def _new_episode_counters(self) -> tuple[Any, Any]:
        """(return, length) of the episode(s) in progress at their start: one pair of numbers,
        or with a vector env one array per counter."""
        if self.vector:
            n = self.config.env.num_envs
            return np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)
        return 0.0, 0

    def _update_rounds(self, before: int, after: int) -> int:
        """Update rounds due for the env steps ``before + 1 .. after``: one per multiple of
        ``train.train_every`` among them that is at least ``replay.learning_starts``."""
        every = self.config.train.train_every
        first = max(before, self.config.replay.learning_starts - 1)
        return max(0, after // every - first // every)

    def _train(self, rounds: int = 1) -> bool:
        """``rounds`` times ``train.gradient_steps`` gradient updates; False as soon as one is
        non-finite."""
        for _ in range(rounds * self.config.train.gradient_steps):
            batch = self.replay.sample(self.config.replay.batch_size, out=self._batch)
            info = self.agent.update(batch)
            if not _is_finite(info):
                return False
            self.window.add(info)
            self.update_norm_stats.add(info.update_norm)
            self.q_abs_max = max(self.q_abs_max, info.q_abs_max)
        return True

    def _log(self, recorder: Recorder) -> None:
        step, now = self.env_step, time.perf_counter()
        mark_step, mark_time = self._sps_mark
        recorder.scalar(Tags.SPS, (step - mark_step) / max(now - mark_time, 1e-9), step)
        self._sps_mark = (step, now)
        recorder.scalar(Tags.EPSILON, self.epsilon(step), step)
        if self.window.updates:
            recorder.updates(step, self.window.summary())
            recorder.scalar(Tags.UPDATE_NORM_VAR, self.update_norm_stats.variance, step)
            self.window.reset()

    def _evaluate(self, recorder: Recorder) -> None:
        cfg = self.config
        returns = evaluate_policy(
            self.agent, self.eval_env, cfg.eval.episodes,
            seed=cfg.seed + cfg.eval.seed_offset + self.env_step, epsilon=cfg.eval.epsilon,
        )
        point = {
            "env_step": self.env_step,
            "gradient_updates": self.agent.num_updates,
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "returns": returns,
            "wall_seconds": self.wall_seconds(),
        }
        self.eval_curve.append(point)
        recorder.evaluation(self.env_step, point["return_mean"], point["return_std"])

    def _finish(self, run_dir: Path, recorder: Recorder, status: str) -> RunResult:
        summary = self.summary(status)
        metrics = {}
        if self.eval_curve:
            metrics[Tags.EVAL_FINAL_RETURN] = summary["final_eval_return_mean"]
            metrics[Tags.EVAL_FINAL_RETURN_STD] = summary["final_eval_return_std"]
        recorder.hparams(_flat_hparams(config_to_dict(self.config)), metrics, self.env_step)
        recorder.flush()
        write_summary(summary, run_dir / SUMMARY_FILE)
        return RunResult(status, summary)

    def close(self) -> None:
        """Close the training and evaluation envs (an async vector env's worker processes too)."""
        self.env.close()
        self.eval_env.close()

    # --- reporting --------------------------------------------------------------------------

    def wall_seconds(self) -> float:
        """Wall-clock seconds of this run, summed over every process that worked on it."""
        return self._wall_before + (time.perf_counter() - self._started)

    def summary(self, status: str) -> dict[str, Any]:
        wall = self.wall_seconds()
        final = self.eval_curve[-1] if self.eval_curve else None
        return {
            "name": self.config.name,
            "env_id": self.config.env.id,
            "seed": self.config.seed,
            "status": status,
            "diverged": status == "diverged",
            "env_steps": self.env_step,
            "gradient_updates": self.agent.num_updates,
            "episodes": self.episodes,
            "final_eval_return_mean": final["return_mean"] if final else None,
            "final_eval_return_std": final["return_std"] if final else None,
            "wall_seconds": wall,
            "steps_per_second": self.env_step / wall if wall > 0 else 0.0,
            "peak_rss_mb": max(self._peak_rss_before, _peak_rss_mb()),
            "network_parameters": self.agent.num_parameters(),
            "q_abs_max": self.q_abs_max,
            "update_norm_var": self.update_norm_stats.variance,
            "eval_curve": self.eval_curve,
        }

    # --- checkpoints ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.state_dict(), path)

    def state_dict(self) -> dict[str, Any]:
        """The whole training state: enough to continue exactly as if never stopped."""
        env_snapshot = None if self.vector else snapshot_env(self.env)
        if env_snapshot is None and not self._env_warned:
            self._env_warned = True
            if self.vector:
                why = (f"runs as {self.config.env.num_envs} vector envs, which are not saved; a "
                       "resumed run restarts their episodes in progress")
            else:
                why = ("cannot be saved (its state does not pickle); a resumed run restarts the "
                       "episode in progress")
            warnings.warn(f"env {self.config.env.id} {why}, so resume is not exact for it",
                          stacklevel=2)
        return {
            "config": config_to_dict(self.config),
            "env_step": self.env_step,
            "episodes": self.episodes,
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "last_episode": self.last_episode,
            "obs": self.obs,
            "env": env_snapshot,
            "agent": self.agent.state_dict(),
            "replay": self.replay.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            "window": self.window.state_dict(),
            "update_norm_stats": self.update_norm_stats.state_dict(),
            "q_abs_max": self.q_abs_max,
            "eval_curve": self.eval_curve,
            "wall_seconds": self.wall_seconds(),
            "peak_rss_mb": max(self._peak_rss_before, _peak_rss_mb()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Filled with today's defaults, so that a key added since the checkpoint was written
        # (at its default) does not count as a different config. The device is not part of the
        # run: a run may continue on another machine (checkpoints load to CPU memory first).
        saved = config_to_dict(config_from_dict(state["config"]))
        current = config_to_dict(self.config)
        saved.pop("device")
        current.pop("device")
        if saved != current:
            raise ValueError("it was written with a different config")
        self.env_step = state["env_step"]
        self.episodes = state["episodes"]
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        self.window.load_state_dict(state["window"])
        self.update_norm_stats.load_state_dict(state["update_norm_stats"])
        self.q_abs_max = state["q_abs_max"]
        self.eval_curve = list(state["eval_curve"])
        self._wall_before = state["wall_seconds"]
        self._peak_rss_before = state["peak_rss_mb"]
        self.last_episode = state["last_episode"]
        restored = restore_env(state["env"]) if state["env"] is not None else None
        if restored is not None:
            self.env.close()
            self.env = restored
            self.obs = state["obs"]
            self.episode_return = state["episode_return"]
            self.episode_length = state["episode_length"]
        else:
            if self.vector:
                message = (f"the {self.config.env.num_envs} vector envs are not saved; restarting "
                           f"the episodes that were in progress at env step {self.env_step}")
            else:
                message = (f"env {self.config.env.id} could not be saved; restarting the episode "
                           f"that was in progress at env step {self.env_step}")
            warnings.warn(message, stacklevel=2)
            self.obs, _ = self.env.reset(seed=self.config.seed + self.env_step)
            self.episode_return, self.episode_length = self._new_episode_counters()


def _make_network(config: Config, spec: EnvSpec) -> QNetwork:
    """The online Q-network for ``spec``'s observations; a torso that cannot take them is a
    :class:`ConfigError`."""
    net = config.network
    try:
        return QNetwork(
            spec.obs_shape, spec.num_actions, net.hidden, net.activation, net.tgelu_range,
            torso=net.torso, obs_scale=spec.obs_scale,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot build the Q-network for env {config.env.id}: {exc}") from None


def _make_replay(
    config: Config, spec: EnvSpec, seed: np.random.SeedSequence
) -> ReplayBuffer | FrameStackReplay:
    """A frame-stack replay (each frame stored once, one stream per env copy) for stacked
    observations, else the plain buffer; a capacity too small for one stacked transition per
    stream is a :class:`ConfigError`."""
    if config.env.frame_stack > 1:
        try:
            return FrameStackReplay(
                config.replay.capacity, spec.obs_shape, spec.obs_dtype, seed=seed,
                num_streams=config.env.num_envs,
            )
        except ValueError as exc:
            raise ConfigError(f"replay.capacity = {config.replay.capacity}: {exc}") from None
    return ReplayBuffer(config.replay.capacity, spec.obs_shape, spec.obs_dtype, seed=seed)


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``before + 1 .. after`` (for one env step: whether
    ``after`` is a multiple)."""
    return after // every > before // every


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's ``device``: ``auto`` is CUDA when available, else CPU;
    ``ConfigError`` if CUDA is asked for and this machine has none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device = {name!r}: this machine has no CUDA device (torch {torch.__version__}); "
                "use device=cpu, or device=auto to take CUDA only where there is one"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device = {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                "use device=cuda or an index below that"
            )
    return device


def load_run(run_dir: str | Path, device: str | None = None) -> Trainer:
    """A :class:`Trainer` restored from ``run_dir``'s config and latest checkpoint; ``device``
    (a config ``device`` value) replaces the run's, e.g. to evaluate a CUDA run on a CPU."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    overrides = [] if device is None else [f"device={device}"]
    trainer = Trainer(load_config(run_dir / CONFIG_FILE, overrides))
    try:
        state = load_checkpoint(run_dir / CHECKPOINT)
        trainer.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        trainer.close()
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {run_dir / CHECKPOINT} does not fit {run_dir / CONFIG_FILE}: {exc}"
        ) from None
    except BaseException:
        trainer.close()
        raise
    return trainer


def _is_finite(info: UpdateInfo) -> bool:
    return all(map(math.isfinite, (info.td_loss, info.q_abs_max, info.param_norm)))


def _flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Config as TensorBoard hparams: dotted keys, lists as strings, nulls as 'null'."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{dotted}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[dotted] = value
        else:
            flat[dotted] = "null" if value is None else str(value)
    return flat


class _Progress:
    """A tqdm bar when stdout is a terminal; otherwise one log line per evaluation."""

    def __init__(self, start: int, total: int) -> None:
        self._bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self._shown = start
        self._total = total
        self._mark = (start, time.perf_counter())

    def advance(self, step: int) -> None:
        if self._bar is not None and step - self._shown >= 100:
            self._bar.update(step - self._shown)
            self._shown = step

    def evaluated(
        self, step: int, point: dict[str, Any], episode: tuple[float, int] | None
    ) -> None:
        now = time.perf_counter()
        sps = (step - self._mark[0]) / max(now - self._mark[1], 1e-9)
        self._mark = (step, now)
        train_return = "n/a" if episode is None else f"{episode[0]:.1f}"
        if self._bar is not None:
            self._bar.set_postfix(
                eval=f"{point['return_mean']:.1f}", ret=train_return, sps=f"{sps:.0f}"
            )
        else:
            logger.info(
                "env step %d/%d | eval return %.1f +- %.1f | last episode return %s | %.0f SPS",
                step, self._total, point["return_mean"], point["return_std"], train_return, sps,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
