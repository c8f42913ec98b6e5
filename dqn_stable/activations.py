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

On float32 CPU tensors that pass can instead run in a compiled AVX2 kernel (``csrc/tgelu.cpp``,
with its autograd function in C++ too), opt-in through :func:`use_tgelu_kernel` or
``DQN_STABLE_TGELU_KERNEL=1``: the same function to within 3e-7 for the paper's range, in about a
third of the time of the torch operations for a forward and backward pass
(``scripts/bench_tgelu.py``). It is off by default so that a seeded run computes exactly what it
always has, and reproduces the committed results.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["ACTIVATIONS", "KERNEL_ENV", "TGELU", "make_activation", "tgelu", "use_tgelu_kernel"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TAIL_CLAMP = 40.0  # |z| beyond which the normal tail underflows float64

ACTIVATIONS: tuple[str, ...] = ("tgelu", "gelu", "relu", "tanh", "sigmoid")
"""Names accepted by :func:`make_activation` (and by ``network.activation`` in a config)."""


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x * _INV_SQRT2)


@functools.lru_cache(maxsize=64)
def _offsets(tl: float, tr: float) -> tuple[float, float]:
    """tGELU's values at tr and at tl: the offsets of its right and left pieces."""
    return tr * _normal_cdf(tr), tl * _normal_cdf(-tl)


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
    right_offset, left_offset = _offsets(tl, tr)
    # right_offset where side = +1, left_offset where side = -1, 0 where side = 0
    offset = torch.mul(side, 0.5 * (right_offset - left_offset))
    offset.add_(outside, alpha=0.5 * (right_offset + left_offset))
    y = offset.addcmul_(z, weight)
    if not with_slope:
        return y, None
    # d/dz [z Phi(|z|)] = Phi(|z|) + |z| phi(z)
    # d/dz [z (1 - Phi(|z|))] = 1 - Phi(|z|) - |z| phi(z)
    # a * a, not torch.square(a): the same values (square is pow(a, 2), computed as a * a), without
    # pow's dispatch, which costs several times the multiply on CPU.
    a_pdf = torch.mul(a, a).mul_(-0.5).exp_().mul_(a).mul_(_INV_SQRT_2PI)
    slope = weight.addcmul_(a_pdf, sign, value=-1.0)
    return y, slope


KERNEL_ENV = "DQN_STABLE_TGELU_KERNEL"
"""Set to ``1`` to compute tGELU of float32 CPU tensors with the compiled kernel (see
:func:`use_tgelu_kernel`); unset or ``0``, the torch operations above are used."""

_KERNEL_SOURCE = Path(__file__).parent / "csrc" / "tgelu.cpp"
_kernel_module = None  # the built extension, once loaded
_use_kernel: bool | None = None  # None until the first tgelu call reads KERNEL_ENV


def use_tgelu_kernel(enabled: bool = True) -> None:
    """Compute tGELU of float32 CPU tensors with a compiled kernel (``enabled``) or with torch
    operations (the default), for every later :func:`tgelu` call in this process.

    The kernel computes the value and the slope in one AVX2+FMA pass; it agrees with the torch path
    to within 3e-7 for the paper's range (about 1e-6 for ranges as wide as (-10, 10)), not bit for
    bit, so a run with it does not reproduce one without it. The
    first call builds it (about 30 s; torch caches the build), which needs a C++ compiler,
    ``ninja`` and an AVX2 CPU; ``RuntimeError`` names what is missing. ``DQN_STABLE_TGELU_KERNEL=1``
    in the environment does the same for a process that cannot call this (a CLI run).
    """
    global _kernel_module, _use_kernel
    if enabled and _kernel_module is None:
        if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
            raise RuntimeError("the tGELU kernel needs a CPU with AVX2 and FMA")
        from torch.utils import cpp_extension

        try:
            cpp_extension.verify_ninja_availability()
        except RuntimeError as err:
            raise RuntimeError("the tGELU kernel is built with ninja: pip install ninja") from err
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            raise RuntimeError(f"the tGELU kernel needs a C++ compiler, and {compiler!r} is not "
                               "on PATH (set CXX to one)")
        try:
            _kernel_module = cpp_extension.load(
                name="dqn_stable_tgelu", sources=[str(_KERNEL_SOURCE)],
                extra_cflags=["-O3", "-mavx2", "-mfma"], verbose=False,
            )
        except Exception as err:  # the compiler's whole output: keep its last line
            lines = [line for line in str(err).splitlines() if line.strip()] or [repr(err)]
            raise RuntimeError(f"could not build the tGELU kernel ({lines[-1].strip()})") from err
    _use_kernel = enabled


def _kernel_for(x: torch.Tensor):
    """The kernel module if it is on and ``x`` is a float32 CPU tensor, else None."""
    if _use_kernel is None:  # first call: honour KERNEL_ENV, once
        value = os.environ.get(KERNEL_ENV, "").strip().lower()
        wanted = value in ("1", "true", "yes", "on")
        if not wanted and value not in ("", "0", "false", "no", "off"):
            warnings.warn(f"{KERNEL_ENV}={value!r} is neither 1 nor 0; using torch operations",
                          stacklevel=3)
        try:
            use_tgelu_kernel(wanted)
        except (RuntimeError, OSError, ImportError) as err:
            warnings.warn(f"{KERNEL_ENV} is set but {err}; using torch operations", stacklevel=3)
            use_tgelu_kernel(False)
    if _use_kernel and x.dtype == torch.float32 and x.device.type == "cpu":
        return _kernel_module
    return None


class _TGELUFunction(torch.autograd.Function):
    """The torch-operations path with autograd (the kernel has its own, in C++)."""

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
    return _tgelu(x, tl, tr)


def _tgelu(x: torch.Tensor, tl: float, tr: float) -> torch.Tensor:
    """:func:`tgelu` for thresholds already checked (the module's, on every forward)."""
    kernel = _kernel_for(x)
    if kernel is not None:
        if torch.is_grad_enabled() and x.requires_grad:
            return kernel.tgelu(x, tl, tr, *_offsets(tl, tr))
        return kernel.value_and_slope(x, tl, tr, *_offsets(tl, tr), False)[0]
    if torch.is_grad_enabled() and x.requires_grad:
        return _TGELUFunction.apply(x, tl, tr)
    return _tgelu_value_and_slope(x, tl, tr, with_slope=False)[0]


class TGELU(nn.Module):
    """Truncated GELU as a module: ``TGELU(tl=-1.0, tr=1.0)(x) == tgelu(x, tl, tr)``."""

    def __init__(self, tl: float = -1.0, tr: float = 1.0) -> None:
        super().__init__()
        self.tl, self.tr = check_tgelu_range(tl, tr)
        # Settle the kernel question (KERNEL_ENV, and loading a built kernel) now, when the network
        # is made, rather than inside the first forward pass of a training loop.
        _kernel_for(torch.empty(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tgelu(x, self.tl, self.tr)

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
