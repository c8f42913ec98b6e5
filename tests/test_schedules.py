import pytest

from dqn_stable.schedules import LinearSchedule


def test_linear_in_absolute_env_steps():
    eps = LinearSchedule(1.0, 0.1, 100_000)
    assert eps(0) == 1.0
    assert eps(50_000) == pytest.approx(0.55, abs=1e-15)
    assert eps(100_000) == pytest.approx(0.1, abs=1e-15)
    assert eps(10**9) == pytest.approx(0.1, abs=1e-15)
    # a resumed run asks for the same step and gets the same value: no per-call state
    assert eps(30_000) == eps(30_000) == pytest.approx(0.73, abs=1e-15)


def test_bad_inputs():
    with pytest.raises(ValueError, match="duration must be >= 1 env step"):
        LinearSchedule(1.0, 0.1, 0)
    with pytest.raises(ValueError, match="env step must be >= 0"):
        LinearSchedule(1.0, 0.1, 10)(-1)
