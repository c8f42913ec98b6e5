"""The compiled tGELU kernel (opt-in) against the torch path and the float64 formula.

Building the kernel takes about 30 s the first time on a machine (torch caches the build).
"""

import math
import warnings

import pytest
import torch

from dqn_stable import activations
from dqn_stable.activations import tgelu, use_tgelu_kernel


@pytest.fixture(scope="module")
def kernel():
    try:
        use_tgelu_kernel(True)
    except RuntimeError as err:  # no compiler, no ninja, no AVX2: say which
        pytest.skip(f"tGELU kernel unavailable: {err}")
    use_tgelu_kernel(False)
    yield
    use_tgelu_kernel(False)


def both(x, tl=-1.0, tr=1.0):
    """tgelu(x) with the kernel and without it, each with the gradient of sum(tgelu(x))."""
    out = []
    for on in (True, False):
        use_tgelu_kernel(on)
        t = x.clone().requires_grad_(True)
        y = tgelu(t, tl, tr)
        y.sum().backward()
        out.append((y.detach(), t.grad))
    use_tgelu_kernel(False)
    return out


@pytest.mark.parametrize(("tl", "tr"), [(-1.0, 1.0), (-0.5, 2.0), (-3.0, 0.25)])
def test_kernel_matches_float64_formula(kernel, tl, tr):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.randn(4099, generator=gen) * 5.0,  # not a multiple of 8: the padded tail block runs
        torch.tensor([tl, 0.0, tr, 40.0, -40.0, 1e30, -1e30]),
    ])
    (y, grad), _ = both(x, tl, tr)
    x64 = x.double().requires_grad_(True)
    want = tgelu(x64, tl, tr)
    want.sum().backward()
    torch.testing.assert_close(y.double(), want.detach(), rtol=0.0, atol=3e-7)
    torch.testing.assert_close(grad.double(), x64.grad, rtol=0.0, atol=3e-7)


def test_kernel_special_values(kernel):
    x = torch.tensor([math.inf, -math.inf, math.nan, 3e38, -3e38, 0.0, -0.0, 1.0, -1.0])
    (y, grad), (y_torch, grad_torch) = both(x)
    right, left = activations._offsets(-1.0, 1.0)
    assert y[0].item() == pytest.approx(right, abs=1e-7)
    assert y[1].item() == pytest.approx(left, abs=1e-7)
    assert math.isnan(y[2].item()) and math.isnan(grad[2].item())
    assert grad[[0, 1, 3, 4]].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert y[5].item() == 0.0 and y[6].item() == 0.0
    finite = ~torch.isnan(y_torch)
    torch.testing.assert_close(y[finite], y_torch[finite], rtol=0.0, atol=3e-7)
    torch.testing.assert_close(grad[finite], grad_torch[finite], rtol=0.0, atol=3e-7)


def test_kernel_only_takes_float32_cpu_and_stays_once_differentiable(kernel):
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    use_tgelu_kernel(True)
    try:
        assert activations._kernel_for(x) is not None
        assert activations._kernel_for(x.double()) is None  # float64 keeps the exact torch path
        assert torch.equal(tgelu(x.double()), activations._tgelu_value_and_slope(
            x.double(), -1.0, 1.0, with_slope=False)[0])
        with torch.no_grad():  # the no-grad path gives the same values as the autograd one
            plain = tgelu(x)
        assert torch.equal(plain, tgelu(x.clone().requires_grad_(True)).detach())
        tracked = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(tgelu(tracked).sum(), tracked, create_graph=True)
        assert not grad.requires_grad  # still once differentiable, never silently wrong
    finally:
        use_tgelu_kernel(False)


def test_env_variable_without_a_usable_kernel_warns_once_and_falls_back(monkeypatch):
    # No build here: the kernel is made unavailable before the first tgelu call reads the variable.
    monkeypatch.setattr(activations, "_kernel_module", None)
    monkeypatch.setattr(activations, "_use_kernel", None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    monkeypatch.setenv(activations.KERNEL_ENV, "1")
    x = torch.randn(32, generator=torch.Generator().manual_seed(4))
    with pytest.warns(UserWarning, match="DQN_STABLE_TGELU_KERNEL is set but .*AVX2"):
        y = tgelu(x)
    assert activations._use_kernel is False
    assert torch.equal(y, activations._tgelu_value_and_slope(x, -1.0, 1.0, with_slope=False)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tgelu(x)  # decided once: no second warning


@pytest.mark.parametrize("value", [None, "", "0", "false", "No", "off"])
def test_kernel_is_off_unless_the_env_variable_turns_it_on(monkeypatch, value):
    monkeypatch.setattr(activations, "_use_kernel", None)
    if value is None:
        monkeypatch.delenv(activations.KERNEL_ENV, raising=False)
    else:
        monkeypatch.setenv(activations.KERNEL_ENV, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tgelu(torch.zeros(3))
    assert activations._use_kernel is False


def test_env_variable_neither_on_nor_off_warns_and_stays_off(monkeypatch):
    monkeypatch.setattr(activations, "_use_kernel", None)
    monkeypatch.setenv(activations.KERNEL_ENV, "maybe")
    with pytest.warns(UserWarning, match="DQN_STABLE_TGELU_KERNEL='maybe' is neither 1 nor 0"):
        tgelu(torch.zeros(3))
    assert activations._use_kernel is False


def test_build_failure_is_one_line(monkeypatch):
    from torch.utils import cpp_extension

    def fail(**_kwargs):
        raise RuntimeError("Error building extension 'dqn_stable_tgelu':\n[1/2] c++ ...\n"
                           "tgelu.cpp:1:10: fatal error: immintrin.h: No such file\n")

    monkeypatch.setattr(activations, "_kernel_module", None)
    monkeypatch.setattr(activations, "_use_kernel", False)
    monkeypatch.setattr(cpp_extension, "load", fail)
    with pytest.raises(RuntimeError) as info:
        use_tgelu_kernel(True)
    assert str(info.value) == ("could not build the tGELU kernel (tgelu.cpp:1:10: fatal error: "
                               "immintrin.h: No such file)")
    assert activations._use_kernel is False


def test_the_module_settles_the_kernel_question_when_it_is_made(monkeypatch):
    # So that a built kernel is loaded with the network, not inside a training loop's first step.
    monkeypatch.setattr(activations, "_use_kernel", None)
    monkeypatch.setenv(activations.KERNEL_ENV, "0")
    activations.TGELU()
    assert activations._use_kernel is False
