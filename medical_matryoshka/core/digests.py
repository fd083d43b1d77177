"""sha256 of files: raw data checked against its published digest, installed weights, a trained model's tag."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _feed(digest, path: Path) -> None:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def folder_digest(folder: Path, pattern: str) -> str:
    """sha256 over the files matching `pattern` under `folder` (relative names and bytes, in name order): the
    same wherever the folder is copied."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _feed(digest, path)
    return digest.hexdigest()
