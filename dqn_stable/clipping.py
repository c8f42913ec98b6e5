"""Gradient clipping: the paper's output-layer rule, and global-norm clipping for baselines.

The rule is not specific to RL: :class:`OutputGradClip` applies it before every step of any torch
optimizer, so a plain supervised training loop needs one extra line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dqn_stable.diagnostics import group_norms

__all__ = ["OutputGradClip", "clip_global_grad_", "clip_output_grad_", "rescale_to_norm_"]


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
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or len({(g.device, g.dtype) for g in grads}) > 1:
        return float(nn.utils.clip_grad_norm_(parameters, max_norm))
    # clip_grad_norm_'s own arithmetic, op for op (the same result to the bit), without its
    # grouping of tensors by device and dtype: on CPU that costs more than the clipping itself.
    with torch.no_grad():
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(float(max_norm) / (total + 1e-6), max=1.0))
    return float(total)


class OutputGradClip:
    """The output-layer rule on every step of ``optimizer``: before each ``optimizer.step()``,
    ``layer``'s gradient (weight and bias as one vector) is rescaled to L2 norm at most
    ``max_norm``; every other parameter keeps its plain gradient. Works with any optimizer::

        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        OutputGradClip(optimizer, model.get_submodule("head"), max_norm=1.0)
        # ... the usual loop: zero_grad(), loss.backward(), optimizer.step()

    It is an optimizer step pre-hook; :meth:`remove` takes it off. ``last_norm`` is the norm
    before clipping at the latest step (None before the first), ``steps`` and ``clipped_steps``
    count optimizer steps seen and those that rescaled.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, layer: nn.Module, max_norm: float) -> None:
        if (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float))
                or not (math.isfinite(max_norm) and max_norm > 0)):
            raise ValueError(f"max_norm must be a finite number > 0, got {max_norm!r}")
        params = list(layer.parameters())
        if not params:
            raise ValueError(f"{type(layer).__name__} has no parameters to clip; pass the output "
                             "layer (an nn.Linear, say)")
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not all(id(p) in optimized for p in params):
            raise ValueError("the layer's parameters are not (all) in this optimizer; pass the "
                             "output layer of the model whose parameters the optimizer updates")
        self.layer = layer
        self.max_norm = float(max_norm)
        self.last_norm: float | None = None
        self.steps = 0
        self.clipped_steps = 0
        self._handle = optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer, args, kwargs) -> None:
        self.last_norm = clip_output_grad_(self.layer, self.max_norm)
        self.steps += 1
        self.clipped_steps += self.last_norm > self.max_norm

    def remove(self) -> None:
        """Stop clipping: later steps use the plain gradient everywhere."""
        self._handle.remove()
