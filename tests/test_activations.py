import math

import pytest
import torch

from dqn_stable.activations import ACTIVATIONS, TGELU, make_activation, tgelu


def phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def reference(x: float, tl: float, tr: float) -> float:
    """PAPER.md section 2, branch by branch, in double precision."""
    if x >= tr:
        return tr * phi_cdf(tr) + (x - tr) * (1.0 - phi_cdf(x - tr))
    if x >= 0.0:
        return x * phi_cdf(x)
    if x >= tl:
        return x * (1.0 - phi_cdf(x))
    return tl * (1.0 - phi_cdf(tl)) + (x - tl) * phi_cdf(x - tl)


@pytest.mark.parametrize(("tl", "tr"), [(-1.0, 1.0), (-0.5, 2.0), (-3.0, 0.25)])
def test_matches_formula_in_float64(tl, tr):
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2000, generator=gen, dtype=torch.float64) * 4.0
    thresholds = torch.tensor([tl, 0.0, tr, tl - 1e-12, tr - 1e-12, 8.0, -8.0], dtype=torch.float64)
    x = torch.cat([points, thresholds])
    got = tgelu(x, tl, tr)
    want = torch.tensor([reference(v, tl, tr) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0.0, atol=4e-15)


def test_float32_agrees_with_float64():
    x = torch.linspace(-10.0, 10.0, 4001, dtype=torch.float64)
    got = tgelu(x.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), tgelu(x), rtol=0.0, atol=5e-7)


@pytest.mark.parametrize("point", [-1.0, 0.0, 1.0])
def test_continuous_at_thresholds_and_zero(point):
    x = torch.tensor([point - 1e-10, point, point + 1e-10], dtype=torch.float64)
    y = tgelu(x)
    assert abs(y[0] - y[1]) < 1e-9
    assert abs(y[2] - y[1]) < 1e-9


def test_limits_and_huge_inputs_are_finite_and_exact():
    right, left = 1.0 * phi_cdf(1.0), -1.0 * (1.0 - phi_cdf(-1.0))
    for dtype, huge in [(torch.float64, 1e300), (torch.float32, 3e38)]:
        values = [math.inf, huge, 1e6, -math.inf, -huge, -1e6]
        x = torch.tensor(values, dtype=dtype, requires_grad=True)
        y = tgelu(x)
        want = torch.tensor([right] * 3 + [left] * 3, dtype=dtype)
        torch.testing.assert_close(y.detach(), want, rtol=0.0, atol=1e-7)
        y.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
    assert right == pytest.approx(0.8413447460685429, abs=1e-15)


def test_nan_in_nan_out_for_value_and_gradient():
    x = torch.tensor([math.nan, 0.3], dtype=torch.float64, requires_grad=True)
    y = tgelu(x)
    y.sum().backward()
    assert math.isnan(y[0].item()) and not math.isnan(y[1].item())
    assert math.isnan(x.grad[0].item()) and not math.isnan(x.grad[1].item())


def test_bounded_with_the_documented_maximum():
    x = torch.linspace(-20.0, 20.0, 400_001, dtype=torch.float64)
    y = tgelu(x)
    bump = max(v * (1.0 - phi_cdf(v)) for v in [i * 1e-4 for i in range(20_000)])
    assert bump == pytest.approx(0.16997, abs=1e-5)
    assert y.max().item() == pytest.approx(phi_cdf(1.0) + bump, abs=1e-9)
    assert y.max().item() == pytest.approx(1.0113, abs=1e-4)
    assert y.min().item() == pytest.approx(-1.0113, abs=1e-4)
    assert x[y.argmax()].item() == pytest.approx(1.752, abs=1e-3)


@pytest.mark.parametrize("tr", [1.0, 2.5])
def test_odd_when_thresholds_are_symmetric(tr):
    x = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 5
    torch.testing.assert_close(tgelu(-x, -tr, tr), -tgelu(x, -tr, tr), rtol=0.0, atol=1e-15)


def test_gradient_values():
    x = torch.tensor([0.0, 50.0, -50.0], dtype=torch.float64, requires_grad=True)
    tgelu(x).sum().backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.0]


def test_one_sided_slopes_at_the_thresholds():
    inner_at_edge = phi_cdf(1.0) + math.exp(-0.5) / math.sqrt(2 * math.pi)  # ~1.0833
    eps = 1e-9
    x = torch.tensor([1 - eps, 1 + eps, -1 + eps, -1 - eps, 1.0, -1.0], dtype=torch.float64)
    x.requires_grad_(True)
    tgelu(x).sum().backward()
    # the outer pieces start with slope 0.5; the kinks themselves take the inner piece's slope
    want = [inner_at_edge, 0.5, inner_at_edge, 0.5, inner_at_edge, inner_at_edge]
    torch.testing.assert_close(x.grad, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-8)


def test_gradcheck_and_single_backward_only():
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: tgelu(t, -1.0, 1.0), (x,))
    assert torch.autograd.gradcheck(lambda t: tgelu(t, -0.5, 2.0), (x,))
    (grad,) = torch.autograd.grad(tgelu(x).sum(), x, create_graph=True)
    assert not grad.requires_grad  # no silent, wrong second derivative
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad.sum().backward()


def test_no_grad_path_equals_autograd_path():
    x = torch.randn(256, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = tgelu(x)
    tracked = tgelu(x.clone().requires_grad_(True))
    assert torch.equal(plain, tracked.detach())


@pytest.mark.parametrize(
    ("tl", "tr"), [(0.0, 1.0), (-1.0, 0.0), (1.0, 2.0), (-math.inf, 1.0), (-1.0, math.nan)]
)
def test_invalid_thresholds_raise(tl, tr):
    with pytest.raises(ValueError, match="tl < 0 < tr"):
        tgelu(torch.zeros(3), tl, tr)
    with pytest.raises(ValueError, match="tl < 0 < tr"):
        TGELU(tl, tr)


def test_module_and_registry():
    module = TGELU(-0.5, 2.0)
    x = torch.randn(10)
    assert torch.equal(module(x), tgelu(x, -0.5, 2.0))
    assert repr(module) == "TGELU(tl=-0.5, tr=2.0)"
    assert ACTIVATIONS == ("tgelu", "gelu", "relu", "tanh", "sigmoid")
    assert [type(make_activation(n)).__name__ for n in ACTIVATIONS] == [
        "TGELU", "GELU", "ReLU", "Tanh", "Sigmoid"
    ]
    assert make_activation("tgelu", (-2.0, 3.0)).tr == 3.0
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of tgelu, gelu"):
        make_activation("swish")
