"""Stability measurements: per-layer gradient and update norms, parameter norms.

The paper's claims are about bounded iterates and low-variance updates; these helpers measure
exactly those quantities, layer by layer, without knowing anything about RL.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["group_norms", "parameter_groups"]


def parameter_groups(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by the submodule that owns them directly, keyed by its dotted path
    (for a ``QNetwork``: ``torso.fc1``, ``torso.fc2``, ..., ``head``)."""
    groups = {}
    for name, sub in module.named_modules():
        params = list(sub.parameters(recurse=False))
        if params:
            groups[name] = params
    return groups


def group_norms(groups: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """The L2 norm of each group of tensors taken as one vector, as a 1-D tensor (one entry per
    group, 0.0 for an empty group)."""
    return torch.stack([
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in group]))
        if group
        else torch.zeros(())
        for group in groups
    ])
