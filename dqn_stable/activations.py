"""Truncated GELU (tGELU) and the registry of hidden activations.

tGELU (Ramaswamy, Bhatnagar & Saxena, arXiv:2305.12125) is GELU inside a window ``[tl, tr]`` and a
mirrored, shifted GELU outside it, so its range is bounded: a *squashing* activation, which is what
the paper's stability proof needs from every hidden layer.

Written with ``z`` the distance into the active piece and ``Phi`` the standard normal CDF:

* inside the window (``tl <= x <= tr``, ``z = x``):  ``z * Phi(|z|)``; for ``x >= 0`` this is GELU
  and for ``x < 0`` it is ``x * (1 - Phi(x))``;
* right of it (``x > tr``, ``z = x - tr``): ``tr * Phi(tr) + z * (1 - Phi(|z|))``;
* left of it (``x < tl``, ``z = x - tl``): ``tl * (1 - Phi(tl)) + z * (1 - Phi(|z|))``.

PAPER.md's table puts ``x = tr`` in the right piece; the value there is the same, and only the slope
at that kink differs (we return the inner piece's). Every piece needs only ``Phi(|z|)`` and the
density at ``|z|``, so one evaluation per element gives both the value and the derivative: the
custom autograd function computes the derivative during the forward pass, and its backward is a
single multiply.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["ACTIVATIONS", "TGELU", "make_activation", "tgelu"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TAIL_CLAMP = 40.0  # |z| beyond which the normal tail underflows float64

ACTIVATIONS: tuple[str, ...] = ("tgelu", "gelu", "relu", "tanh", "sigmoid")
"""Names accepted by :func:`make_activation` (and by ``network.activation`` in a config)."""


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x * _INV_SQRT2)


def check_tgelu_range(tl: float, tr: float) -> tuple[float, float]:
    """``(tl, tr)`` as floats; ``ValueError`` unless both are finite and tl < 0 < tr."""
    tl, tr = float(tl), float(tr)
    if not (math.isfinite(tl) and math.isfinite(tr) and tl < 0.0 < tr):
        raise ValueError(
            f"tGELU thresholds must be finite with tl < 0 < tr, got tl={tl}, tr={tr}; "
            "the paper uses tl=-1.0, tr=1.0"
        )
    return tl, tr


def _tgelu_value_and_slope(
    x: torch.Tensor, tl: float, tr: float, with_slope: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    # Branch-free on purpose: on CPU, torch.where and comparisons cost several times an arithmetic
    # op, so the piece an element is in is encoded in floats. ``excess`` is how far x lies outside
    # [tl, tr] (0 inside); ``side`` is its sign and ``outside`` its magnitude (1.0 or 0.0). The
    # thresholds themselves fall in the inner piece: same value, and the slope there is a convention
    # at a kink. Clamping keeps +-inf away from ``inf * 0``: past |z| = 40 the normal tail
    # underflows float64, so no finite result changes. NaN propagates through every op.
    window = x.clamp(tl, tr)
    excess = torch.sub(x, window).clamp_(-_TAIL_CLAMP, _TAIL_CLAMP)
    side = torch.sign(excess)
    outside = side.abs()
    inside = torch.rsub(outside, 1.0)
    sign = torch.sub(outside, inside)  # +1 outside the window, -1 inside
    z = torch.addcmul(excess, inside, window)  # x inside the window, the excess outside it
    a = z.abs()
    tail = torch.mul(a, _INV_SQRT2).erfc_().mul_(0.5)  # 1 - Phi(|z|), accurate far into the tail
    weight = torch.addcmul(inside, tail, sign)  # Phi(|z|) inside, 1 - Phi(|z|) outside
    right_offset, left_offset = tr * _normal_cdf(tr), tl * _normal_cdf(-tl)
    # right_offset where side = +1, left_offset where side = -1, 0 where side = 0
    offset = torch.mul(side, 0.5 * (right_offset - left_offset))
    offset.add_(outside, alpha=0.5 * (right_offset + left_offset))
    y = offset.addcmul_(z, weight)
    if not with_slope:
        return y, None
    # d/dz [z Phi(|z|)] = Phi(|z|) + |z| phi(z)
    # d/dz [z (1 - Phi(|z|))] = 1 - Phi(|z|) - |z| phi(z)
    a_pdf = torch.square(a).mul_(-0.5).exp_().mul_(a).mul_(_INV_SQRT_2PI)
    slope = weight.addcmul_(a_pdf, sign, value=-1.0)
    return y, slope


class _TGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, tl: float, tr: float) -> torch.Tensor:
        y, slope = _tgelu_value_and_slope(x, tl, tr, with_slope=True)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    @once_differentiable  # the saved slope carries no graph: refuse double backward loudly
    def backward(ctx, grad_output: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad_output * slope, None, None


def tgelu(x: torch.Tensor, tl: float = -1.0, tr: float = 1.0) -> torch.Tensor:
    """Truncated GELU of ``x`` with thresholds ``tl < 0 < tr`` (see the module docstring).

    Bounded in ``(tl*(1-Phi(tl)) - 0.17, tr*Phi(tr) + 0.17)``; for (-1, 1) that is about
    (-1.0113, 1.0113), with asymptotes -0.8413 and 0.8413. NaN in gives NaN out.
    """
    tl, tr = check_tgelu_range(tl, tr)
    if torch.is_grad_enabled() and x.requires_grad:
        return _TGELUFunction.apply(x, tl, tr)
    return _tgelu_value_and_slope(x, tl, tr, with_slope=False)[0]


class TGELU(nn.Module):
    """Truncated GELU as a module: ``TGELU(tl=-1.0, tr=1.0)(x) == tgelu(x, tl, tr)``."""

    def __init__(self, tl: float = -1.0, tr: float = 1.0) -> None:
        super().__init__()
        self.tl, self.tr = check_tgelu_range(tl, tr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tgelu(x, self.tl, self.tr)

    def extra_repr(self) -> str:
        return f"tl={self.tl}, tr={self.tr}"


def make_activation(name: str, tgelu_range: tuple[float, float] = (-1.0, 1.0)) -> nn.Module:
    """A fresh activation module by name; ``tgelu_range`` is used only by ``"tgelu"``."""
    if name == "tgelu":
        return TGELU(*tgelu_range)
    factories = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return factories[name]()
