"""What a run records: every TensorBoard tag (defined here and nowhere else), the recorders that
write them, and ``summary.json``.

Tags follow CleanRL's names where RL users know them (``charts/``, ``losses/``, ``eval/``); our
stability measurements live under ``stability/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dqn_stable.checkpoint import atomic_write

__all__ = [
    "NullRecorder", "Recorder", "Tags", "TensorBoardRecorder", "read_scalars", "write_summary"
]


class Tags:
    """TensorBoard tag names; ``GRAD_NORM`` and ``UPDATE_NORM`` also prefix ``/<layer>`` tags."""

    EPISODIC_RETURN = "charts/episodic_return"
    EPISODIC_LENGTH = "charts/episodic_length"
    SPS = "charts/SPS"
    """Env steps per wall-clock second over the last log window."""
    EPSILON = "charts/epsilon"
    TD_LOSS = "losses/td_loss"
    Q_VALUES = "losses/q_values"
    """Mean Q(s, a) of the actions taken, over the window's batches."""
    EVAL_RETURN = "eval/episodic_return"
    EVAL_RETURN_STD = "eval/episodic_return_std"
    OUTPUT_GRAD_NORM = "stability/output_grad_norm"
    """Mean norm of the output layer's gradient before clipping."""
    OUTPUT_CLIP_FRACTION = "stability/output_clip_fraction"
    """Fraction of the window's gradient updates whose output-layer gradient was clipped."""
    Q_ABS_MAX = "stability/q_abs_max"
    PARAM_NORM = "stability/param_norm"
    GRAD_NORM = "stability/grad_norm"
    UPDATE_NORM = "stability/update_norm"
    """Mean L2 norm of the whole parameter change per gradient update (per layer under /<layer>)."""
    EVAL_FINAL_RETURN = "eval/final_return_mean"
    """The last evaluation's mean return, also the HParams view's metric."""
    EVAL_FINAL_RETURN_STD = "eval/final_return_std"
    UPDATE_NORM_VAR = "stability/update_norm_var"
    """Variance of that norm over all gradient updates of the run so far."""
    CONFIG = "config"


# UpdateWindow.summary() key -> tag
_WINDOW_TAGS = {
    "td_loss": Tags.TD_LOSS,
    "q_taken_mean": Tags.Q_VALUES,
    "output_grad_norm": Tags.OUTPUT_GRAD_NORM,
    "output_clip_fraction": Tags.OUTPUT_CLIP_FRACTION,
    "q_abs_max": Tags.Q_ABS_MAX,
    "param_norm": Tags.PARAM_NORM,
    "update_norm": Tags.UPDATE_NORM,
}


class Recorder:
    """Writes nothing. Subclasses override the four primitives; the helpers compose them."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """Record the run's hyperparameters, and ``metrics`` ({tag: value}) at ``step``."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def episode(self, step: int, episodic_return: float, length: int) -> None:
        self.scalar(Tags.EPISODIC_RETURN, episodic_return, step)
        self.scalar(Tags.EPISODIC_LENGTH, length, step)

    def updates(self, step: int, window: Mapping[str, float]) -> None:
        """Record an ``UpdateWindow.summary()``."""
        for key, value in window.items():
            if key in _WINDOW_TAGS:
                self.scalar(_WINDOW_TAGS[key], value, step)
            else:  # "grad_norm/<layer>" or "update_norm/<layer>"
                self.scalar(f"stability/{key}", value, step)

    def evaluation(self, step: int, mean: float, std: float) -> None:
        self.scalar(Tags.EVAL_RETURN, mean, step)
        self.scalar(Tags.EVAL_RETURN_STD, std, step)


NullRecorder = Recorder
"""The recorder that records nothing (the base class itself)."""


class TensorBoardRecorder(Recorder):
    """Writes TensorBoard event files into ``log_dir``.

    ``purge_step``: when resuming, events that an interrupted run wrote at this step or later are
    dropped by TensorBoard, so no point appears twice.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _wait_to_sort_after_existing_event_files(Path(log_dir))
        self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        # Written into this run's own event file, not the subdirectory add_hparams would create.
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        writer = self._writer.file_writer
        for summary in hparams_summaries(dict(hparams), dict(metrics)):
            writer.add_summary(summary)
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _wait_to_sort_after_existing_event_files(log_dir: Path) -> None:
    """Wait (at most about a second) until a new event file's name sorts after every one in
    ``log_dir``. TensorBoard reads a run's event files in name order, and a name starts with the
    second the file was made in, then the host and the process id: a resumed process starting
    within the second of the interrupted one's file would sort by process id, and its purge of the
    steps after the checkpoint would then come first and drop nothing."""
    seconds = [0]
    for path in log_dir.glob("events.out.tfevents.*"):
        field = path.name.split(".")[3]
        if field.isdigit():
            seconds.append(int(field))
    newest = max(seconds)
    if newest > time.time() + 2:  # a file from a clock ahead of ours: waiting would not help
        return
    while int(time.time()) <= newest:
        time.sleep(0.05)


def write_summary(summary: Mapping[str, Any], path: str | Path) -> None:
    """Write ``summary`` as indented JSON, atomically."""
    text = json.dumps(summary, indent=2) + "\n"  # serialise first: a failure writes nothing
    atomic_write(path, lambda f: f.write(text.encode()))


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``log_dir``'s event files, as ``{tag: [(step, value), ...]}``,
    read with TensorBoard's own reader (which honours ``purge_step``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
