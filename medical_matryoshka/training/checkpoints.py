"""Resumable training: one checkpoint folder per (params, data), the newest checkpoint to resume from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def checkpoint_key(params: dict[str, Any], data_file: Path) -> str:
    """Checkpoints are reused only for the same training params and the same data."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(data_file.read_bytes())
    return digest.hexdigest()[:16]


def latest_checkpoint(folder: Path) -> str | None:
    """The trainer's newest checkpoint-N folder, if an interrupted run left one."""
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None
