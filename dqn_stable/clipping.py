"""Gradient clipping: the paper's output-layer rule, and global-norm clipping for baselines."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["clip_global_grad_", "clip_output_grad_"]


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
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    norm_value = norm.item()
    if norm_value > max_norm:
        scale = max_norm / norm_value
        for g in grads:
            g.mul_(scale)
    return norm_value


def clip_global_grad_(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the joint gradient norm of ``parameters`` to ``max_norm`` the way Stable-Baselines3
    does (``torch.nn.utils.clip_grad_norm_``); returns the norm before clipping."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    return float(nn.utils.clip_grad_norm_(parameters, max_norm))
