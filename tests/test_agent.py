"""Agent tests on a network whose Q-values are known by hand.

``identity_net`` is a QNetwork with obs (2,), one ReLU layer and 2 actions, set so that
``Q(s) = s`` for non-negative ``s``: the TD targets below are then plain arithmetic.
"""

import copy

import numpy as np
import pytest
import torch

from dqn_stable.agent import DQNAgent, td_loss, td_target
from dqn_stable.config import AgentConfig, OptimizerConfig
from dqn_stable.networks import QNetwork
from dqn_stable.replay import Batch

GAMMA = 0.5


def identity_net() -> QNetwork:
    net = QNetwork((2,), 2, hidden=(2,), activation="relu")
    with torch.no_grad():
        for layer in (net.torso.fc1, net.head):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    return net


def fixed_batch() -> Batch:
    # transition 0 is an ordinary step, 1 is terminated, 2 is truncated (it bootstraps)
    return Batch(
        obs=torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.5, 0.5]]),
        actions=torch.tensor([1, 0, 0]),
        rewards=torch.tensor([1.0, -1.0, 2.0]),
        next_obs=torch.tensor([[4.0, 6.0], [5.0, 7.0], [8.0, 2.0]]),
        terminated=torch.tensor([0.0, 1.0, 0.0]),
    )


def make_agent(target="none", *, double=False, output_clip=None, every=1, tau=0.25, lr=0.1):
    config = AgentConfig(
        target=target, target_update_every=every, polyak_tau=tau, double=double,
        gamma=GAMMA, output_clip=output_clip,
    )
    return DQNAgent(identity_net(), config, OptimizerConfig(name="sgd", lr=lr), seed=0)


def scale_target_head(agent: DQNAgent, matrix) -> None:
    with torch.no_grad():
        agent.target_network.head.weight.copy_(torch.tensor(matrix))


def test_target_none_bootstraps_from_the_online_network_and_has_no_target():
    agent = make_agent("none")
    assert agent.target_network is None
    assert agent.num_parameters() == sum(p.numel() for p in agent.network.parameters()) == 12
    y = td_target(agent.network, fixed_batch(), GAMMA)
    # 1 + 0.5 * max(4, 6);  -1 (terminal);  2 + 0.5 * max(8, 2) (truncated: bootstraps)
    assert y.tolist() == [4.0, -1.0, 6.0]


@pytest.mark.parametrize("mode", ["hard", "polyak"])
def test_target_modes_bootstrap_from_the_target_network(mode):
    agent = make_agent(mode)
    assert agent.num_parameters() == 24
    scale_target_head(agent, [[2.0, 0.0], [0.0, 2.0]])  # Q_target(s) = 2 s
    y = td_target(agent.network, fixed_batch(), GAMMA, target_network=agent.target_network)
    assert y.tolist() == [7.0, -1.0, 10.0]


def test_double_dqn_selects_online_and_evaluates_target():
    agent = make_agent("hard", double=True)
    scale_target_head(agent, [[0.0, 1.0], [1.0, 0.0]])  # Q_target swaps the two actions
    batch = fixed_batch()
    plain = td_target(agent.network, batch, GAMMA, target_network=agent.target_network)
    double = td_target(
        agent.network, batch, GAMMA, target_network=agent.target_network, double=True
    )
    assert plain.tolist() == [4.0, -1.0, 6.0]  # max over the swapped values
    assert double.tolist() == [3.0, -1.0, 3.0]  # online argmax, then the target's value
    # without a target network, double DQN is the plain max
    assert td_target(agent.network, batch, GAMMA, double=True).tolist() == [4.0, -1.0, 6.0]


def test_losses():
    net, batch = identity_net(), fixed_batch()
    # Q(s, a) = [2, 3, 0.5] against y = [4, -1, 6]: errors [-2, 4, -5.5]
    mse = td_loss(net, batch, GAMMA, kind="mse")
    assert mse.loss.item() == pytest.approx((4 + 16 + 30.25) / 3)
    assert mse.td_target.tolist() == [4.0, -1.0, 6.0]
    assert mse.q_values.tolist() == [[1.0, 2.0], [3.0, 1.0], [0.5, 0.5]]
    huber = td_loss(net, batch, GAMMA, kind="huber")
    assert huber.loss.item() == pytest.approx((1.5 + 3.5 + 5.0) / 3)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        td_loss(net, batch, GAMMA, kind="l1")


def test_update_reports_hand_computed_numbers_without_clipping():
    agent = make_agent("none", lr=0.1)
    head_before = agent.network.head.weight.detach().clone()
    info = agent.update(fixed_batch())
    assert info.td_loss == pytest.approx(50.25 / 3)
    assert info.q_taken_mean == pytest.approx(5.5 / 3)
    assert info.q_abs_mean == pytest.approx(8.0 / 6)
    assert info.q_abs_max == 3.0
    # dL/dW_head[a, :] = 2/3 * sum over rows with action a of (Q - y) * h(s), h(s) = s
    grad_w = torch.tensor([[2 / 3 * (4 * 3 + -5.5 * 0.5), 2 / 3 * (4 * 1 + -5.5 * 0.5)],
                           [2 / 3 * (-2 * 1), 2 / 3 * (-2 * 2)]])
    grad_b = torch.tensor([2 / 3 * (4 - 5.5), 2 / 3 * -2])
    expected_norm = torch.cat([grad_w.flatten(), grad_b]).norm().item()
    assert info.output_grad_norm == pytest.approx(expected_norm, rel=1e-6)
    assert info.grad_norms["head"] == pytest.approx(expected_norm, rel=1e-6)
    assert not info.output_clipped
    torch.testing.assert_close(agent.network.head.weight.detach(), head_before - 0.1 * grad_w)
    # plain SGD: every layer's update is lr times its gradient
    for name, grad_norm in info.grad_norms.items():
        assert info.update_norms[name] == pytest.approx(0.1 * grad_norm, rel=1e-5)
    assert set(info.grad_norms) == {"torso.fc1", "head"}
    assert agent.num_updates == 1


def test_update_clips_only_the_output_layer():
    agent = make_agent("none", output_clip=1.0, lr=0.1)
    reference = make_agent("none", output_clip=None, lr=0.1)
    info = agent.update(fixed_batch())
    free = reference.update(fixed_batch())
    assert info.output_clipped and info.output_grad_norm > 1.0
    assert info.output_grad_norm == pytest.approx(free.output_grad_norm, rel=1e-6)
    assert info.update_norms["head"] == pytest.approx(0.1 * 1.0, rel=1e-5)
    # the hidden layer took exactly the step it takes without clipping
    torch.testing.assert_close(agent.network.torso.fc1.weight, reference.network.torso.fc1.weight)
    assert info.update_norms["torso.fc1"] == free.update_norms["torso.fc1"]


def test_hard_target_copies_every_n_updates():
    agent = make_agent("hard", every=2)
    start = copy.deepcopy(agent.target_network.state_dict())
    agent.update(fixed_batch())
    for name, value in agent.target_network.state_dict().items():
        assert torch.equal(value, start[name])
    agent.update(fixed_batch())
    for name, value in agent.target_network.state_dict().items():
        assert torch.equal(value, agent.network.state_dict()[name])
        assert not torch.equal(value, start[name]) or name == "torso.fc1.bias"


def test_polyak_target_blends_every_update():
    agent = make_agent("polyak", tau=0.25)
    old = copy.deepcopy(agent.target_network.state_dict())
    agent.update(fixed_batch())
    online = agent.network.state_dict()
    for name, value in agent.target_network.state_dict().items():
        torch.testing.assert_close(value, 0.75 * old[name] + 0.25 * online[name])
    assert not any(p.requires_grad for p in agent.target_network.parameters())


def test_act_is_epsilon_greedy_and_seeded():
    agent = make_agent()
    obs = np.array([1.0, 3.0], dtype=np.float32)
    assert agent.act(obs, epsilon=0.0) == 1
    first = [make_agent().act(obs, epsilon=1.0) for _ in range(1)]
    a, b = make_agent(), make_agent()
    draws_a = [a.act(obs, epsilon=1.0) for _ in range(50)]
    assert draws_a == [b.act(obs, epsilon=1.0) for _ in range(50)]
    assert set(draws_a) == {0, 1} and first[0] == draws_a[0]


def test_state_dict_round_trip_continues_identically():
    a = make_agent("polyak", output_clip=1.0)
    a.update(fixed_batch())
    b = make_agent("polyak", output_clip=1.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    info_a, info_b = a.update(fixed_batch()), b.update(fixed_batch())
    assert info_a == info_b
    assert a.act(np.zeros(2, np.float32), 1.0) == b.act(np.zeros(2, np.float32), 1.0)
    with pytest.raises(ValueError, match="state has a target network but this agent's target mode"):
        make_agent("none").load_state_dict(a.state_dict())


def test_centered_rmsprop_first_step_by_hand():
    """The MinAtar paper's optimizer. After one gradient g, centered RMSprop has v = (1 - a) g^2
    and mean m = (1 - a) g, so each weight moves by lr * g / (sqrt(v - m^2) + eps)."""
    lr, alpha, eps = 2.5e-4, 0.95, 0.01
    agent = DQNAgent(
        identity_net(), AgentConfig(target="none", gamma=GAMMA, output_clip=None),
        OptimizerConfig(name="rmsprop", lr=lr, alpha=alpha, eps=eps, centered=True), seed=0,
    )
    assert isinstance(agent.optimizer, torch.optim.RMSprop)
    group = agent.optimizer.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["centered"]) == (lr, alpha, eps, True)
    head_before = agent.network.head.weight.detach().clone()
    agent.update(fixed_batch())
    # the head's gradient of test_update_reports_hand_computed_numbers_without_clipping
    g = torch.tensor([[2 / 3 * (4 * 3 + -5.5 * 0.5), 2 / 3 * (4 * 1 + -5.5 * 0.5)],
                      [2 / 3 * (-2 * 1), 2 / 3 * (-2 * 2)]])
    v, m = (1 - alpha) * g**2, (1 - alpha) * g
    expected = head_before - lr * g / ((v - m**2).sqrt() + eps)
    torch.testing.assert_close(agent.network.head.weight.detach(), expected)


def test_adam_takes_the_configured_eps():
    agent = DQNAgent(identity_net(), AgentConfig(), OptimizerConfig(name="adam", eps=1e-4))
    assert agent.optimizer.param_groups[0]["eps"] == 1e-4
