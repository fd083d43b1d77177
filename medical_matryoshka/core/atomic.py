"""Atomic output writing: an interrupted stage never leaves a half-written output for DVC to cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medical_matryoshka.core.errors import disk_full


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(err, path.parent)
        if full is not None:
            raise full from err
        raise


@contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces `path`, on error it is removed (a full disk: one line
    naming the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary folders
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except Exception as err:
        full = disk_full(err, path.parent)
        if full is not None:
            raise full from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
