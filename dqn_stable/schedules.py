"""Schedules as pure functions of the absolute env step, so a resumed run continues its schedule."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinearSchedule"]


@dataclass(frozen=True)
class LinearSchedule:
    """Linear from ``start`` at env step 0 to ``end`` at env step ``duration``, then constant."""

    start: float
    end: float
    duration: int
    """Env steps from ``start`` to ``end``."""

    def __post_init__(self) -> None:
        if self.duration < 1:
            raise ValueError(f"duration must be >= 1 env step, got {self.duration}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"env step must be >= 0, got {step}")
        fraction = min(step / self.duration, 1.0)
        return self.start + fraction * (self.end - self.start)
