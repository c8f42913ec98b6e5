"""Gradient clipping: the paper's output-layer rule, and global-norm clipping for baselines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dqn_stable.diagnostics import group_norms

__all__ = ["clip_global_grad_", "clip_output_grad_", "rescale_to_norm_"]


def clip_output_grad_(layer: nn.Module, max_norm: float) -> float:
    """Clip the gradient of one layer (the output layer, in the paper) in place.

    The gradients of all of ``layer``'s parameters (weight and bias) are taken together as one
    vector ``g``; if ``||g||_2 > max_norm`` they are scaled by ``max_norm / ||g||_2``, which is the
    paper's division by ``max(1, ||g|| / lambda)`` (arXiv:2305.12125, Sec. 3). Nothing outside
    ``layer`` is touched. Returns ``||g||_2`` before clipping (0.0 if no parameter has a gradient).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = group_norms([grads])[0].item()
    rescale_to_norm_(grads, norm, max_norm)
    return norm


def rescale_to_norm_(grads: Sequence[torch.Tensor], norm: float, max_norm: float) -> bool:
    """Scale ``grads``, whose joint L2 norm is ``norm``, by ``max_norm / norm`` if ``norm``
    exceeds ``max_norm``; True if it did. For callers that already know the norm."""
    if norm <= max_norm:
        return False
    scale = max_norm / norm
    for g in grads:
        g.mul_(scale)
    return True


def clip_global_grad_(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the joint gradient norm of ``parameters`` to ``max_norm`` the way Stable-Baselines3
    does (``torch.nn.utils.clip_grad_norm_``); returns the norm before clipping."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    return float(nn.utils.clip_grad_norm_(parameters, max_norm))
