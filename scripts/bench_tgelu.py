"""Time tGELU's forward+backward against nn.GELU (and ReLU, and a naive four-branch tGELU).

Usage: python scripts/bench_tgelu.py [--batch 256] [--width 128] [--repeats 2000] [--threads 1]

"TGELU" is the default torch-operations path, "TGELU kernel" the compiled one
(``use_tgelu_kernel``; built on first use, about 30 s, when a compiler and ninja are present).

Prints the median time per forward+backward in microseconds and the ratio to nn.GELU. This is a
benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from dqn_stable import TGELU
from dqn_stable.activations import use_tgelu_kernel


class NaiveTGELU(nn.Module):
    """The obvious implementation: four masked branches, autograd through each (for comparison)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(0.0, 1.0)
        tl, tr = -1.0, 1.0
        right = (tr * normal.cdf(torch.tensor(tr)) + (x - tr) * (1 - normal.cdf(x - tr)))
        middle_pos = x * normal.cdf(x)
        middle_neg = x * (1 - normal.cdf(x))
        left = tl * (1 - normal.cdf(torch.tensor(tl))) + (x - tl) * normal.cdf(x - tl)
        return (
            (x >= tr) * right + ((x >= 0) & (x < tr)) * middle_pos
            + ((x >= tl) & (x < 0)) * middle_neg + (x < tl) * left
        )


class KernelTGELU(TGELU):
    """TGELU through the compiled kernel (``use_tgelu_kernel``), switched on only for its call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_tgelu_kernel(True)
        try:
            return super().forward(x)
        finally:
            use_tgelu_kernel(False)


def time_forward_backward(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``module(x)`` then backward of its sum, after a warm-up."""
    grad = torch.ones_like(x)
    samples = []
    for i in range(repeats + repeats // 10):
        x.grad = None
        start = time.perf_counter()
        module(x).backward(grad)
        elapsed = time.perf_counter() - start
        if i >= repeats // 10:
            samples.append(elapsed)
    return statistics.median(samples)


def median_times(
    modules: dict[str, nn.Module], x: torch.Tensor, repeats: int, rounds: int = 5
) -> dict[str, float]:
    """Median seconds per forward+backward for each module, over ``repeats`` calls in all.

    The calls run in ``rounds`` interleaved rounds so that drift in machine load affects every
    module alike; the result is the median of the rounds' medians.
    """
    samples: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds):
        for name, module in modules.items():
            samples[name].append(time_forward_backward(module, x, repeats // rounds))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = (torch.randn(args.batch, args.width) * 2.0).requires_grad_()
    modules = {"nn.GELU": nn.GELU(), "nn.ReLU": nn.ReLU(), "TGELU": TGELU(),
               "naive tGELU": NaiveTGELU()}
    try:
        use_tgelu_kernel(True)  # builds it on first use
        use_tgelu_kernel(False)
        modules["TGELU kernel"] = KernelTGELU()
    except RuntimeError as err:
        print(f"(no kernel row: {err})")
    medians = median_times(modules, x, args.repeats)
    gelu = medians["nn.GELU"]
    print(f"forward+backward on a ({args.batch}, {args.width}) float32 batch, "
          f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} calls")
    print(f"{'module':<12} {'us/call':>9} {'x nn.GELU':>10}")
    for name, median in medians.items():
        print(f"{name:<12} {median * 1e6:>9.1f} {median / gelu:>10.2f}")


if __name__ == "__main__":
    main()
