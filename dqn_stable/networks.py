"""Q-networks. Nothing here knows about RL: a ``QNetwork`` is a feedforward regressor whose output
layer is exposed as ``.head`` so that the output-layer update rule can find it."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from dqn_stable.activations import make_activation

__all__ = ["CONV_LAYERS", "TORSOS", "QNetwork", "select_torso"]

TORSOS = ("auto", "mlp", "minatar", "nature")
"""Values of ``QNetwork``'s ``torso`` argument (``network.torso`` in a config)."""

CONV_LAYERS: dict[str, tuple[tuple[int, int, int], ...]] = {
    # Young & Tian (2019), MinAtar's DQN: one 3x3 conv, 16 channels, stride 1, no padding.
    "minatar": ((16, 3, 1),),
    # Mnih et al. (2015), Nature DQN: 32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1.
    "nature": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
}
"""(out_channels, kernel size, stride) of each convolution of a convolutional torso."""


def _min_side(layers: Sequence[tuple[int, int, int]]) -> int:
    """The smallest image side that ``layers`` map to at least one pixel (Nature: 36 -> 8 -> 3
    -> 1)."""
    side = 1
    for _, kernel, stride in reversed(layers):
        side = (side - 1) * stride + kernel
    return side


_NATURE_MIN_SIDE = _min_side(CONV_LAYERS["nature"])


def select_torso(obs_shape: Sequence[int], torso: str = "auto") -> str:
    """The torso ``QNetwork`` builds for observations of ``obs_shape``: ``torso`` itself, or for
    'auto' 'mlp' (1-D or 2-D), 'nature' (images with H and W >= 36) or 'minatar' (smaller
    images). Images are (C, H, W), or (k, C, H, W) for k stacked frames of C channels."""
    shape = tuple(obs_shape)
    if torso not in TORSOS:
        raise ValueError(
            f"unknown torso {torso!r} (network.torso); choose one of {', '.join(TORSOS)}"
        )
    if torso == "mlp":
        return torso
    if torso == "auto" and len(shape) in (1, 2):
        return "mlp"
    if len(shape) not in (3, 4):
        raise ValueError(
            f"torso {torso!r} (network.torso) cannot take observations of shape {shape}: "
            "convolutions need images (C, H, W) or stacked ones (k, C, H, W); "
            "use torso 'mlp' to flatten them"
        )
    if torso == "auto":
        return "nature" if min(shape[-2:]) >= _NATURE_MIN_SIDE else "minatar"
    return torso


def _conv_output_side(side: int, layers: Sequence[tuple[int, int, int]]) -> int:
    for _, kernel, stride in layers:
        side = (side - kernel) // stride + 1
    return side


class QNetwork(nn.Module):
    """A torso and a linear output layer ``.head`` with one output per action.

    The torso (``.torso``, an ``nn.Sequential``) is an MLP over flattened observations, layers
    ``fc1, act1, fc2, act2, ...``, or convolutions ``conv1, act_conv1, ...`` (see
    :data:`CONV_LAYERS`), then ``flatten`` and the same fully connected layers; ``torso`` picks it
    (see :func:`select_torso`). Stacked images (k, C, H, W) enter the convolutions as k*C channels
    (layer ``fold``). Observations are cast to float32 when they are integers (e.g. uint8 frames)
    and multiplied by ``obs_scale`` (e.g. 1/255 for 8-bit pixels) before the first layer. Every
    hidden layer, convolutional or not, uses ``activation``.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "tgelu",
        tgelu_range: tuple[float, float] = (-1.0, 1.0),
        *,
        torso: str = "auto",
        obs_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        if any(size < 1 for size in hidden):
            raise ValueError(f"hidden layer sizes must be >= 1, got {tuple(hidden)}")
        if not (math.isfinite(obs_scale) and obs_scale > 0.0):
            raise ValueError(f"obs_scale must be finite and > 0, got {obs_scale}")
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.num_actions = int(num_actions)
        self.torso_kind = select_torso(self.obs_shape, torso)
        """The torso built: 'mlp', 'minatar' or 'nature' ('auto' resolved)."""
        self.obs_scale = float(obs_scale)
        if self.torso_kind == "mlp":
            layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
            in_features = math.prod(self.obs_shape)
        else:
            layers, in_features = self._conv_layers(activation, tgelu_range)
        for i, width in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(in_features, width)
            layers[f"act{i}"] = make_activation(activation, tgelu_range)
            in_features = width
        self.torso = nn.Sequential(layers)
        self.head = nn.Linear(in_features, self.num_actions)

    def _conv_layers(
        self, activation: str, tgelu_range: tuple[float, float]
    ) -> tuple[OrderedDict[str, nn.Module], int]:
        """The convolutional layers and flatten, and the number of features they put out."""
        convs = CONV_LAYERS[self.torso_kind]
        height, width = self.obs_shape[-2:]
        out_height, out_width = (_conv_output_side(side, convs) for side in (height, width))
        if min(out_height, out_width) < 1:
            side = _min_side(convs)
            raise ValueError(
                f"torso {self.torso_kind!r} (network.torso) needs images of at least "
                f"{side}x{side} pixels, got {height}x{width} in observation shape "
                f"{self.obs_shape}; use torso 'minatar' for small images, or 'mlp'"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if len(self.obs_shape) == 4:
            layers["fold"] = nn.Flatten(1, 2)  # (B, k, C, H, W) -> (B, k*C, H, W)
        channels = math.prod(self.obs_shape[:-2])
        for i, (out_channels, kernel, stride) in enumerate(convs, start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, out_channels, kernel, stride)
            layers[f"act_conv{i}"] = make_activation(activation, tgelu_range)
            channels = out_channels
        layers["flatten"] = nn.Flatten()
        return layers, channels * out_height * out_width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values of shape ``(batch, num_actions)`` for observations ``(batch, *obs_shape)``."""
        if not obs.is_floating_point():
            obs = obs.float()
        if self.obs_scale != 1.0:
            obs = obs * self.obs_scale
        return self.head(self.torso(obs))
