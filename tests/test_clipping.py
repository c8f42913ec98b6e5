import math

import pytest
import torch
from torch import nn

from dqn_stable.clipping import OutputGradClip, clip_global_grad_, clip_output_grad_


def net_with_grads(head_weight_grad, head_bias_grad):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2))
    net(torch.randn(4, 3)).pow(2).sum().backward()
    head = net[2]
    head.weight.grad = torch.tensor(head_weight_grad)
    head.bias.grad = torch.tensor(head_bias_grad)
    return net, head


def test_clips_weight_and_bias_jointly_to_exactly_max_norm():
    net, head = net_with_grads([[3.0, 0.0], [0.0, 0.0]], [4.0, 0.0])  # joint norm 5
    hidden_before = [p.grad.clone() for p in net[0].parameters()]
    norm = clip_output_grad_(head, 1.0)
    assert norm == 5.0
    assert torch.equal(head.weight.grad, torch.tensor([[0.6, 0.0], [0.0, 0.0]]))
    assert torch.equal(head.bias.grad, torch.tensor([0.8, 0.0]))
    for before, p in zip(hidden_before, net[0].parameters(), strict=True):
        assert torch.equal(before, p.grad)


@pytest.mark.parametrize("max_norm", [0.5, 2.0])
def test_leaves_small_or_equal_gradients_alone(max_norm):
    _, head = net_with_grads([[0.3, 0.0], [0.0, 0.0]], [0.4, 0.0])  # joint norm 0.5
    weight, bias = head.weight.grad.clone(), head.bias.grad.clone()
    assert clip_output_grad_(head, max_norm) == pytest.approx(0.5, abs=1e-7)
    assert torch.equal(head.weight.grad, weight) and torch.equal(head.bias.grad, bias)


def test_no_gradient_and_bad_max_norm():
    assert clip_output_grad_(nn.Linear(2, 2), 1.0) == 0.0
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_norm must be > 0"):
            clip_output_grad_(nn.Linear(2, 2), bad)


def test_global_clip_returns_norm_before_clipping():
    net, _ = net_with_grads([[3.0, 0.0], [0.0, 0.0]], [4.0, 0.0])
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert clip_global_grad_(net.parameters(), 1.0) == pytest.approx(total.item(), rel=1e-6)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert after.item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # clips, and leaves alone (a scale of 1.0)
def test_global_clip_equals_torch_clip_grad_norm_to_the_bit(max_norm):
    gen = torch.Generator().manual_seed(5)
    nets = [nn.Sequential(nn.Linear(4, 32), nn.Linear(32, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    grads = [torch.randn(p.shape, generator=gen) for p in nets[0].parameters()]
    for net in nets:
        for p, g in zip(net.parameters(), grads, strict=True):
            p.grad = g.clone()
    ours = clip_global_grad_(nets[0].parameters(), max_norm)
    theirs = nn.utils.clip_grad_norm_(nets[1].parameters(), max_norm)
    assert ours == theirs.item()
    for mine, torchs in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(mine.grad, torchs.grad)


def test_global_clip_of_mixed_dtypes_falls_back_to_torch():
    params = [nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(4, dtype=torch.float64))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    assert clip_global_grad_(iter(params), 1.0) == pytest.approx(math.sqrt(7 * 4.0))
    assert params[1].grad.dtype == torch.float64
    after = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert after == pytest.approx(1.0, rel=1e-5)


# OutputGradClip: the rule as an optimizer step pre-hook, for any training loop.


def mlp(seed=0):
    from dqn_stable import TGELU

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), TGELU(), nn.Linear(8, 8), TGELU(), nn.Linear(8, 3))


def backward_big_loss(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 3, generator=gen) * 50.0
    model.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()  # targets far off: a head gradient norm >> 1


def test_sgd_step_clips_the_output_layer_and_leaves_the_others_plain():
    model, lr, max_norm = mlp(), 0.1, 1.0
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    hook = OutputGradClip(optimizer, model[4], max_norm)
    backward_big_loss(model)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    head_norm = torch.linalg.vector_norm(torch.cat([grads["4.weight"].flatten(), grads["4.bias"]]))
    assert head_norm > 10.0
    optimizer.step()

    scale = max_norm / head_norm.item()
    for name, p in model.named_parameters():
        g = grads[name].mul_(scale) if name.startswith("4.") else grads[name]
        assert torch.equal(p.detach(), before[name].add(g, alpha=-lr)), name
    assert hook.last_norm == pytest.approx(head_norm.item(), rel=1e-6)
    assert (hook.steps, hook.clipped_steps) == (1, 1)
    clipped = torch.cat([model[4].weight.grad.flatten(), model[4].bias.grad])
    assert torch.linalg.vector_norm(clipped).item() == pytest.approx(max_norm, rel=1e-6)


def test_adam_with_the_hook_equals_adam_after_manual_clipping():
    hooked, manual, plain = mlp(), mlp(), mlp()  # plain: Adam without the rule
    opt_hooked = torch.optim.Adam(hooked.parameters(), lr=1e-2)
    opt_manual = torch.optim.Adam(manual.parameters(), lr=1e-2)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-2)
    hook = OutputGradClip(opt_hooked, hooked[4], 1.0)
    for step in range(5):
        backward_big_loss(hooked, seed=step)
        backward_big_loss(manual, seed=step)
        backward_big_loss(plain, seed=step)
        raw = [p.grad.clone() for p in hooked.parameters()]
        clip_output_grad_(manual[4], 1.0)
        opt_hooked.step()
        opt_manual.step()
        opt_plain.step()
        # Adam stepped on the clipped head gradient and on every other gradient as it was.
        for (name, p), g, m in zip(hooked.named_parameters(), raw, manual.parameters(),
                                   strict=True):
            assert torch.equal(p.grad, m.grad)
            assert torch.equal(p.grad, g) != name.startswith("4."), name
    for p, q, r in zip(hooked.parameters(), manual.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)
        assert not torch.equal(p, r)  # the rule changed the run
    assert (hook.steps, hook.clipped_steps) == (5, 5)


def test_small_gradients_pass_untouched_and_remove_stops_the_hook():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = OutputGradClip(optimizer, model[4], 1e6)
    backward_big_loss(model)
    grad = model[4].weight.grad.clone()
    optimizer.step()
    assert torch.equal(model[4].weight.grad, grad)
    assert (hook.steps, hook.clipped_steps) == (1, 0)
    hook.remove()
    optimizer.step()
    assert hook.steps == 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_output_grad_clip_refuses_a_bad_max_norm(bad):
    model = mlp()
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        OutputGradClip(torch.optim.SGD(model.parameters(), lr=0.1), model[4], bad)


def test_output_grad_clip_refuses_a_layer_the_optimizer_does_not_update():
    model, other = mlp(), mlp(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not \\(all\\) in this optimizer"):
        OutputGradClip(optimizer, other[4], 1.0)
    with pytest.raises(ValueError, match="TGELU has no parameters"):
        OutputGradClip(optimizer, model[1], 1.0)
