import pytest
import torch
from torch import nn

from dqn_stable.clipping import clip_global_grad_, clip_output_grad_


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
