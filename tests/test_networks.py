import pytest
import torch
from torch import nn

from dqn_stable.activations import TGELU
from dqn_stable.networks import QNetwork, select_torso


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


# --- Convolutional torsos (issue 6) ---------------------------------------------------------------


def test_nature_torso_on_stacked_atari_frames():
    """Mnih et al. (2015): 84 -> 20 (8x8/4) -> 9 (4x4/2) -> 7 (3x3/1); 64 * 7 * 7 = 3136."""
    net = QNetwork((4, 84, 84), 6, hidden=(512,), activation="relu")
    assert net.torso_kind == "nature"
    assert [name for name, _ in net.torso.named_children()] == [
        "conv1", "act_conv1", "conv2", "act_conv2", "conv3", "act_conv3", "flatten", "fc1", "act1"
    ]
    convs = [(c.in_channels, c.out_channels, c.kernel_size, c.stride)
             for c in (net.torso.conv1, net.torso.conv2, net.torso.conv3)]
    assert convs == [(4, 32, (8, 8), (4, 4)), (32, 64, (4, 4), (2, 2)), (64, 64, (3, 3), (1, 1))]
    assert (net.torso.fc1.in_features, net.torso.fc1.out_features) == (3136, 512)
    assert (net.head.in_features, net.head.out_features) == (512, 6)
    features = net.torso[:7](torch.zeros(2, 4, 84, 84))
    assert features.shape == (2, 3136)
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)
    # conv weights and biases, fc, head: the Nature DQN has 1,687,206 parameters for 6 actions
    assert sum(p.numel() for p in net.parameters()) == (
        (4 * 64 * 32 + 32) + (32 * 16 * 64 + 64) + (64 * 9 * 64 + 64) + (3136 * 512 + 512)
        + (512 * 6 + 6)
    ) == 1_687_206


def test_minatar_torso_on_10x10_planes():
    """Young & Tian (2019): one 3x3 conv, 16 channels, no padding: 16 * 8 * 8 = 1024 features."""
    net = QNetwork((4, 10, 10), 3, hidden=(128,))
    assert net.torso_kind == "minatar"
    assert [name for name, _ in net.torso.named_children()] == [
        "conv1", "act_conv1", "flatten", "fc1", "act1"
    ]
    conv = net.torso.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (
        4, 16, (3, 3), (1, 1)
    )
    assert isinstance(net.torso.act_conv1, TGELU)  # the hidden activation on the conv layer too
    assert net.torso[:3](torch.zeros(5, 4, 10, 10)).shape == (5, 1024)
    assert (net.torso.fc1.in_features, net.head.in_features) == (1024, 128)
    assert net(torch.zeros(5, 4, 10, 10, dtype=torch.uint8)).shape == (5, 3)


def test_stacked_multichannel_frames_enter_as_k_times_c_channels():
    net = QNetwork((3, 4, 10, 10), 2, hidden=(8,))
    assert net.torso_kind == "minatar"
    assert net.torso.conv1.in_channels == 12
    obs = torch.rand(2, 3, 4, 10, 10)
    torch.testing.assert_close(net(obs), net.head(net.torso[1:](obs.reshape(2, 12, 10, 10))))


@pytest.mark.parametrize(("shape", "torso"), [
    ((4,), "mlp"), ((2, 3), "mlp"),                     # vectors and matrices are flattened
    ((4, 84, 84), "nature"), ((1, 36, 36), "nature"),   # 36: the smallest side Nature maps to 1
    ((4, 35, 84), "minatar"), ((6, 10, 10), "minatar"), ((4, 2, 10, 10), "minatar"),
])
def test_auto_picks_the_torso_from_the_observation_shape(shape, torso):
    assert select_torso(shape) == torso
    assert QNetwork(shape, 2, hidden=(4,)).torso_kind == torso


@pytest.mark.parametrize(("shape", "torso", "message"), [
    ((2, 2, 2, 2, 2), "auto", r"torso 'auto' \(network.torso\) cannot take observations of shape "
                              r"\(2, 2, 2, 2, 2\): convolutions need images \(C, H, W\) or stacked "
                              r"ones \(k, C, H, W\); use torso 'mlp' to flatten them"),
    ((4,), "nature", r"torso 'nature' \(network.torso\) cannot take observations of shape \(4,\)"),
    ((4, 10, 10), "nature", r"torso 'nature' \(network.torso\) needs images of at least 36x36 "
                            r"pixels, got 10x10 in observation shape \(4, 10, 10\); use torso "
                            r"'minatar' for small images, or 'mlp'"),
    ((1, 2, 2), "minatar", "needs images of at least 3x3 pixels, got 2x2"),
    ((4,), "cnn", r"unknown torso 'cnn' \(network.torso\); choose one of auto, mlp, minatar, "
                  "nature"),
])
def test_bad_torso_or_observation_shape_is_a_one_line_error(shape, torso, message):
    with pytest.raises(ValueError, match=message) as info:
        QNetwork(shape, 2, torso=torso)
    assert "\n" not in str(info.value)


def test_explicit_mlp_torso_flattens_images():
    net = QNetwork((4, 10, 10), 3, hidden=(8,), torso="mlp")
    assert [name for name, _ in net.torso.named_children()] == ["flatten", "fc1", "act1"]
    assert net.torso.fc1.in_features == 400


def test_obs_scale_multiplies_the_float_cast_observation():
    net = QNetwork((1, 36, 36), 2, hidden=(4,), obs_scale=1 / 255)
    frames = torch.randint(0, 256, (3, 1, 36, 36), dtype=torch.uint8)
    unscaled = QNetwork((1, 36, 36), 2, hidden=(4,))
    unscaled.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(frames), unscaled(frames.float() / 255))
    with pytest.raises(ValueError, match=r"obs_scale must be finite and > 0, got 0\.0$"):
        QNetwork((4,), 2, obs_scale=0.0)


def test_mlp_is_unchanged_by_the_torso_argument():
    """The default (auto) MLP draws the same initial weights as before torsos existed, so a seed
    still gives the same network: compare with the pre-torso construction by hand."""
    torch.manual_seed(0)
    net = QNetwork((4,), 2, hidden=(16, 16))
    torch.manual_seed(0)
    fc1, fc2, head = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 2)
    for mine, theirs in zip(
        [net.torso.fc1, net.torso.fc2, net.head], [fc1, fc2, head], strict=True
    ):
        assert torch.equal(mine.weight, theirs.weight)
        assert torch.equal(mine.bias, theirs.bias)
    assert net.torso_kind == "mlp"
