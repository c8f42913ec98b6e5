"""Q-networks. Nothing here knows about RL: a ``QNetwork`` is a feedforward regressor whose output
layer is exposed as ``.head`` so that the output-layer update rule can find it."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from dqn_stable.activations import make_activation

__all__ = ["QNetwork"]


class QNetwork(nn.Module):
    """An MLP over flattened observations: ``hidden`` layers with ``activation``, then ``.head``.

    Hidden layers are named ``fc1, fc2, ...`` inside ``.torso``; integer observations (e.g. uint8)
    are cast to float32 before the first layer.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "tgelu",
        tgelu_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        if any(size < 1 for size in hidden):
            raise ValueError(f"hidden layer sizes must be >= 1, got {tuple(hidden)}")
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.num_actions = int(num_actions)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        in_features = math.prod(self.obs_shape)
        for i, width in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(in_features, width)
            layers[f"act{i}"] = make_activation(activation, tgelu_range)
            in_features = width
        self.torso = nn.Sequential(layers)
        self.head = nn.Linear(in_features, self.num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values of shape ``(batch, num_actions)`` for observations ``(batch, *obs_shape)``."""
        if not obs.is_floating_point():
            obs = obs.float()
        return self.head(self.torso(obs))
