"""Evaluation: playing episodes with a fixed policy, and the ``evaluate`` command line.

    python -m dqn_stable.evaluate RUN_DIR [--episodes N] [--seed S] [--epsilon E]

loads the run's latest checkpoint, plays ``N`` episodes and prints one JSON line with the returns,
their mean and std. Exit status 2 on a bad run directory or checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np

from dqn_stable.agent import DQNAgent

__all__ = ["evaluate_policy", "main"]


def evaluate_policy(
    agent: DQNAgent, env: gym.Env, episodes: int, *, seed: int, epsilon: float = 0.0
) -> list[float]:
    """Undiscounted returns of ``episodes`` epsilon-greedy episodes on ``env``.

    The env is reset with ``seed`` before the first episode, and exploration draws from its own
    generator seeded with ``seed``: the result depends on nothing but the arguments, and the
    agent's training RNG is left untouched.
    """
    rng = np.random.default_rng(seed)
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        total, done = 0.0, False
        while not done:
            if epsilon > 0.0 and rng.random() < epsilon:
                action = int(rng.integers(agent.num_actions))
            else:
                action = agent.greedy_action(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    return returns


def main(argv: Sequence[str] | None = None) -> int:
    from dqn_stable.checkpoint import CheckpointError
    from dqn_stable.config import ConfigError
    from dqn_stable.envs import EnvError
    from dqn_stable.trainer import RunDirError, load_run

    parser = argparse.ArgumentParser(
        prog="python -m dqn_stable.evaluate",
        description="Play episodes with a run's latest checkpoint and print their returns as JSON.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory written by dqn_stable.train")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help="env and exploration seed (default: the run's evaluation seed)")
    parser.add_argument("--epsilon", type=float, default=0.0, help="exploration (default 0)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or auto (default: the run's own device)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if not 0.0 <= args.epsilon <= 1.0:
        parser.error(f"--epsilon must be in [0, 1], got {args.epsilon}")
    try:
        trainer = load_run(args.run_dir, device=args.device)
    except (RunDirError, ConfigError, CheckpointError, EnvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = trainer.config
    seed = args.seed if args.seed is not None else cfg.seed + cfg.eval.seed_offset
    try:
        returns = evaluate_policy(
            trainer.agent, trainer.eval_env, args.episodes, seed=seed, epsilon=args.epsilon
        )
    finally:
        trainer.close()
    print(json.dumps({
        "run_dir": str(args.run_dir),
        "env_id": cfg.env.id,
        "env_steps": trainer.env_step,
        "episodes": args.episodes,
        "seed": seed,
        "returns": returns,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
