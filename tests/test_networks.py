import pytest
import torch
from torch import nn

from dqn_stable.activations import TGELU
from dqn_stable.networks import QNetwork


def test_shapes_names_and_head():
    net = QNetwork((4,), 2)
    assert net(torch.zeros(5, 4)).shape == (5, 2)
    assert isinstance(net.head, nn.Linear)
    assert (net.head.in_features, net.head.out_features) == (128, 2)
    assert [name for name, _ in net.torso.named_children()] == [
        "flatten", "fc1", "act1", "fc2", "act2"
    ]
    assert isinstance(net.torso.act1, TGELU)
    assert sum(p.numel() for p in net.parameters()) == 4 * 128 + 128 + 128 * 128 + 128 + 128 * 2 + 2


def test_flattens_and_casts_integer_observations():
    net = QNetwork((2, 3), 4, hidden=(8,), activation="relu")
    assert net.torso.fc1.in_features == 6
    obs = torch.randint(0, 255, (7, 2, 3), dtype=torch.uint8)
    torch.testing.assert_close(net(obs), net(obs.float()))


@pytest.mark.parametrize(
    ("name", "cls"),
    [("gelu", nn.GELU), ("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)],
)
def test_activation_choice(name, cls):
    net = QNetwork((3,), 2, hidden=(4, 4, 4), activation=name)
    assert [type(m) for m in net.torso if not isinstance(m, (nn.Linear, nn.Flatten))] == [cls] * 3


def test_tgelu_range_reaches_the_activation():
    net = QNetwork((3,), 2, hidden=(4,), tgelu_range=(-0.5, 2.0))
    assert (net.torso.act1.tl, net.torso.act1.tr) == (-0.5, 2.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'elu'; choose one of tgelu, gelu"):
        QNetwork((3,), 2, activation="elu")
    with pytest.raises(ValueError, match="num_actions must be >= 1"):
        QNetwork((3,), 0)
    with pytest.raises(ValueError, match=r"hidden layer sizes must be >= 1, got \(64, 0\)"):
        QNetwork((3,), 2, hidden=(64, 0))
    with pytest.raises(ValueError, match="tl < 0 < tr"):
        QNetwork((3,), 2, tgelu_range=(0.5, 1.0))
