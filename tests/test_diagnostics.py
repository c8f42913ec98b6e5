"""Stability measurements: running variance, the per-log-window summary, parameter groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dqn_stable.agent import UpdateInfo
from dqn_stable.diagnostics import RunningStats, UpdateWindow, group_norms, parameter_groups
from dqn_stable.networks import QNetwork


def test_running_stats_match_numpy_population_moments():
    values = np.random.default_rng(0).normal(5.0, 3.0, size=1000)
    stats = RunningStats()
    for value in values:
        stats.add(float(value))
    assert stats.count == 1000
    assert stats.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert stats.variance == pytest.approx(np.var(values), rel=1e-12)


def test_running_stats_of_fewer_than_two_values():
    stats = RunningStats()
    assert (stats.count, stats.mean, stats.variance) == (0, 0.0, 0.0)
    stats.add(4.0)
    assert (stats.count, stats.mean, stats.variance) == (1, 4.0, 0.0)
    stats.add(6.0)
    assert (stats.mean, stats.variance) == (5.0, 1.0)


def test_running_stats_state_round_trip_continues_identically():
    values = np.random.default_rng(1).uniform(-1, 1, size=50).tolist()
    stats = RunningStats()
    for value in values[:20]:
        stats.add(value)
    restored = RunningStats()
    restored.load_state_dict(stats.state_dict())
    assert restored.state_dict() == stats.state_dict()
    for value in values[20:]:
        stats.add(value)
        restored.add(value)
    assert (restored.count, restored.mean, restored.variance) == (
        stats.count, stats.mean, stats.variance
    )


def info(td_loss, q_abs_max, output_grad_norm, clipped, param_norm, fc1, head):
    """An UpdateInfo whose per-layer grad norm and update norm are both ``fc1`` and ``head``."""
    return UpdateInfo(
        td_loss=td_loss, q_taken_mean=-td_loss, q_abs_mean=0.5, q_abs_max=q_abs_max,
        output_grad_norm=output_grad_norm, output_clipped=clipped, param_norm=param_norm,
        grad_norms={"torso.fc1": fc1, "head": head},
        update_norms={"torso.fc1": fc1, "head": head},
    )


def test_update_norm_is_the_norm_over_layers():
    assert info(0, 0, 0, False, 0, fc1=3.0, head=4.0).update_norm == 5.0


def test_update_window_summary():
    window = UpdateWindow()
    assert (window.updates, window.summary()) == (0, {})
    window.add(info(1.0, 2.0, 0.5, False, 10.0, fc1=3.0, head=4.0))
    window.add(info(2.0, 7.0, 1.5, True, 11.0, fc1=0.0, head=0.0))
    window.add(info(6.0, 3.0, 4.0, True, 12.0, fc1=6.0, head=8.0))
    assert window.updates == 3
    assert window.summary() == {
        "td_loss": 3.0,
        "q_taken_mean": -3.0,
        "output_grad_norm": 2.0,
        "update_norm": 5.0,  # (5 + 0 + 10) / 3
        "grad_norm/torso.fc1": 3.0,
        "grad_norm/head": 4.0,
        "update_norm/torso.fc1": 3.0,
        "update_norm/head": 4.0,
        "q_abs_max": 7.0,
        "output_clip_fraction": 2 / 3,
        "param_norm": 12.0,  # the last one, not the mean
    }


def test_update_window_reset_and_state_round_trip():
    window = UpdateWindow()
    window.add(info(1.0, 2.0, 0.5, True, 10.0, fc1=3.0, head=4.0))
    restored = UpdateWindow()
    restored.load_state_dict(window.state_dict())
    assert restored.updates == 1
    assert restored.summary() == window.summary()
    window.add(info(3.0, 1.0, 0.5, False, 9.0, fc1=1.0, head=0.0))
    restored.add(info(3.0, 1.0, 0.5, False, 9.0, fc1=1.0, head=0.0))
    assert restored.summary() == window.summary()
    assert window.summary()["output_clip_fraction"] == 0.5
    window.reset()
    assert (window.updates, window.summary()) == (0, {})


def test_parameter_groups_of_a_qnetwork_are_its_layers():
    network = QNetwork((4,), 2, hidden=(16, 8))
    groups = parameter_groups(network)
    assert list(groups) == ["torso.fc1", "torso.fc2", "head"]
    assert [[tuple(p.shape) for p in g] for g in groups.values()] == [
        [(16, 4), (16,)], [(8, 16), (8,)], [(2, 8), (2,)]
    ]


def test_group_norms_take_each_group_as_one_vector():
    norms = group_norms([
        [torch.tensor([3.0]), torch.tensor([[4.0]])],
        [],
        [torch.tensor([1.0, 1.0, 1.0, 1.0])],
    ])
    assert norms.tolist() == [5.0, 0.0, 2.0]
    assert math.isclose(float(group_norms([[torch.ones(9)]])[0]), 3.0)


def test_group_norms_of_equal_sized_groups_equal_one_norm_per_group_to_the_bit():
    # Equal-sized groups (weight and bias per layer) take one reduction over rows; it must give
    # what each group's own norm gives: the output-layer clip uses the head's entry.
    gen = torch.Generator().manual_seed(7)
    groups = [[torch.randn(16, 4, generator=gen) * 10 ** k, torch.randn(16, generator=gen)]
              for k in range(-3, 4)]
    one_by_one = [group_norms([group])[0] for group in groups]
    assert torch.equal(group_norms(groups), torch.stack(one_by_one))
    assert torch.equal(group_norms(groups), torch.stack([
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in group]))
        for group in groups
    ]))


def test_parameter_groups_of_a_convolutional_qnetwork_name_each_layer():
    groups = parameter_groups(QNetwork((4, 84, 84), 6, hidden=(512,)))
    assert list(groups) == ["torso.conv1", "torso.conv2", "torso.conv3", "torso.fc1", "head"]
    assert [len(params) for params in groups.values()] == [2] * 5  # weight and bias
