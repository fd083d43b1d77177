"""Resumable training that no kill can block: one checkpoint folder per (params, data), checkpoints marked
complete only once fully written, and one training run at a time per folder."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from medical_matryoshka.core.atomic import write_json
from medical_matryoshka.core.errors import PipelineError

COMPLETE = "checkpoint_complete.json"  # written into checkpoint-N after the trainer has saved all of it
LOCK = ".training.lock"


def checkpoint_key(params: dict[str, Any], data_file: Path) -> str:
    """Checkpoints are reused only for the same training params and the same data."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(data_file.read_bytes())
    return digest.hexdigest()[:16]


REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")  # what resuming reads besides the model
DAMAGED = "damaged-"  # prefix of a checkpoint set aside: not checkpoint-N, so neither we nor the trainer use it


class MarkCompleteCheckpoints(TrainerCallback):
    """Mark checkpoint-N complete: the trainer calls on_save after it has written the whole checkpoint, so a
    kill while a checkpoint is being written leaves one without the mark, which resuming ignores. The mark
    lists every file with its size, so a checkpoint that loses or truncates one later is known damaged."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and folder.is_dir():
            files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
            write_json(folder / COMPLETE, {"global_step": state.global_step, "files": files})  # atomic


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a complete-marked checkpoint (None if nothing): a file it was saved with is gone or
    has another size, or what resuming reads is missing or unreadable."""
    try:
        mark = json.loads((checkpoint / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{COMPLETE} is unreadable"
    for name, size in mark.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, saved as {size}"
    for name in REQUIRED:
        if not (checkpoint / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError):
        return "trainer_state.json is unreadable"
    return None


def set_aside_damaged(folder: Path) -> list[tuple[Path, Path, str]]:
    """Rename damaged complete checkpoints to damaged-checkpoint-N (kept for a look, never resumed from);
    returns (old, new, why) for each."""
    moved = []
    for path in _checkpoints(folder):
        if not (path / COMPLETE).is_file():
            continue
        why = damage(path)
        if why:
            target = path.with_name(DAMAGED + path.name)
            shutil.rmtree(target, ignore_errors=True)
            path.rename(target)
            moved.append((path, target, why))
    return moved


def checkpoint_bytes(model) -> int:
    """About what one checkpoint takes on disk: the fp32 weights and AdamW's two moments per parameter."""
    return sum(p.numel() for p in model.parameters()) * 4 * 3


def _step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=_step)


def discard_incomplete(folder: Path) -> list[Path]:
    """Remove the checkpoints an interrupted run left half written; returns what was removed."""
    removed = [p for p in _checkpoints(folder) if not (p / COMPLETE).is_file()]
    for path in removed:
        shutil.rmtree(path)
    return removed


def latest_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint-N, if an interrupted run left one."""
    complete = [p for p in _checkpoints(folder) if (p / COMPLETE).is_file()]
    return str(complete[-1]) if complete else None


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold `folder` for one training run: a second run with the same params stops with one line instead of
    writing the same checkpoints. The OS drops the lock when the holder dies, however it dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise PipelineError(
                f"{holder} is training into {folder} with the same params; wait for it to finish or stop it, then rerun"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            if not _checkpoints(folder):  # stopped before its first checkpoint: nothing to resume, no empty folder
                shutil.rmtree(folder, ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


KEY_FILE = "checkpoint_key"  # in the saved model's folder: which checkpoint folder trained it (not a metric)


def discard_finished(root: Path, model: Path) -> Path | None:
    """Remove the checkpoint folder of the model now in place, if any; returns it.

    A successful run removes its own folder. One is left behind when a run was interrupted and DVC later
    restored the same params' model from its run cache without training. A folder a trainer holds stays.
    """
    key_file = model / KEY_FILE
    if not key_file.is_file():
        return None
    key = key_file.read_text(encoding="utf-8").strip()
    folder = root / key if key and "/" not in key else None
    if folder is None or not folder.is_dir():
        return None
    try:
        with exclusive(folder):
            shutil.rmtree(folder)
    except PipelineError:
        return None  # a training run holds it
    return folder
