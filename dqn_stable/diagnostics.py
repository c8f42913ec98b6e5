"""Stability measurements: per-layer gradient and update norms, parameter norms.

The paper's claims are about bounded iterates and low-variance updates; these helpers measure
exactly those quantities, layer by layer, without knowing anything about RL.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["RunningStats", "UpdateWindow", "group_norms", "parameter_groups"]


def parameter_groups(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by the submodule that owns them directly, keyed by its dotted path
    (for a ``QNetwork``: ``torso.fc1``, ``torso.fc2``, ..., ``head``, after ``torso.conv1``, ...
    for a convolutional torso)."""
    groups = {}
    for name, sub in module.named_modules():
        params = list(sub.parameters(recurse=False))
        if params:
            groups[name] = params
    return groups


def group_norms(groups: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """The L2 norm of each group of tensors taken as one vector, as a 1-D tensor (one entry per
    group, 0.0 for an empty group): the norm of the group's per-tensor norms."""
    flat = [t for group in groups for t in group]
    if not flat:
        return torch.zeros(len(groups))
    # One call for every tensor (same values as vector_norm of each), then one stack.
    norms = torch.stack(torch._foreach_norm(flat))
    sizes = [len(group) for group in groups]
    if min(sizes) == max(sizes):  # e.g. (weight, bias) per layer: one reduction over the rows
        return torch.linalg.vector_norm(norms.view(len(groups), sizes[0]), dim=1)
    out, start = [], 0
    for size in sizes:
        if size:
            out.append(torch.linalg.vector_norm(norms[start:start + size]))
            start += size
        else:
            out.append(torch.zeros((), device=norms.device))
    return torch.stack(out)


class RunningStats:
    """Count, mean and variance of a stream of numbers (Welford's algorithm), checkpointable."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)

    @property
    def variance(self) -> float:
        """Population variance of the values seen so far (0.0 for fewer than two)."""
        return self._m2 / self.count if self.count > 1 else 0.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self._m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self._m2 = int(state["count"]), state["mean"], state["m2"]


class UpdateWindow:
    """Aggregates the :class:`~dqn_stable.agent.UpdateInfo` of the gradient updates between two
    log points: means of losses and norms, max of |Q|, fraction of clipped output gradients."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.updates = 0
        self._sums: dict[str, float] = {}
        self._q_abs_max = 0.0
        self._clipped = 0
        self._param_norm = 0.0

    def add(self, info) -> None:
        self.updates += 1
        values = {
            "td_loss": info.td_loss,
            "q_taken_mean": info.q_taken_mean,
            "output_grad_norm": info.output_grad_norm,
            "update_norm": info.update_norm,
            **{f"grad_norm/{k}": v for k, v in info.grad_norms.items()},
            **{f"update_norm/{k}": v for k, v in info.update_norms.items()},
        }
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._q_abs_max = max(self._q_abs_max, info.q_abs_max)
        self._clipped += int(info.output_clipped)
        self._param_norm = info.param_norm

    def summary(self) -> dict[str, float]:
        """Means over the window (keys as in ``add``), plus ``q_abs_max``,
        ``output_clip_fraction`` and the last ``param_norm``; empty if no update happened."""
        if not self.updates:
            return {}
        out = {key: total / self.updates for key, total in self._sums.items()}
        out["q_abs_max"] = self._q_abs_max
        out["output_clip_fraction"] = self._clipped / self.updates
        out["param_norm"] = self._param_norm
        return out

    def state_dict(self) -> dict:
        return {
            "updates": self.updates, "sums": dict(self._sums), "q_abs_max": self._q_abs_max,
            "clipped": self._clipped, "param_norm": self._param_norm,
        }

    def load_state_dict(self, state: dict) -> None:
        self.updates, self._sums = state["updates"], dict(state["sums"])
        self._q_abs_max, self._clipped = state["q_abs_max"], state["clipped"]
        self._param_norm = state["param_norm"]
