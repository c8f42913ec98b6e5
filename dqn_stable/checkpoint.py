"""Atomic save and load of a whole training state.

A checkpoint is one ``torch.save`` file. It is written to a temporary file in the same directory,
flushed to disk, then moved over the old one with ``os.replace``: a crash mid-write leaves the
previous checkpoint intact. Loading unpickles arbitrary objects (RNG states, a pickled env), so load
only checkpoints you trust, as with any pickle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["CheckpointError", "atomic_write", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not one of ours."""


FORMAT_VERSION = 1


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, sync it, then move it over ``path``.

    Readers see the old file or the new one, never a part; on any failure the temporary file is
    removed and the old file is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (the old file survives any failure mid-write)."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, **state}, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path``; :class:`CheckpointError` naming the file if it is missing,
    truncated, corrupt or of another format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is not a dqn_stable checkpoint of format {FORMAT_VERSION}"
        )
    return state
