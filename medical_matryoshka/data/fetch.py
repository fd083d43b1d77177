"""Put the raw data files in place (data.path), verified against their published sha256."""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from medical_matryoshka.core.digests import sha256_of
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import DataConfig


def _copy_into(out, name: str, spec: dict[str, Any], local_copy: Path | None) -> None:
    """Write one raw file into the open file `out`, from the local copy or its public URL."""
    if local_copy is not None:
        src = local_copy / name
        if not src.is_file():
            raise PipelineError(f"{src} does not exist; --from must be a folder holding {name}")
        with src.open("rb") as f:
            shutil.copyfileobj(f, out)
        return
    if not spec.get("url"):
        raise PipelineError(
            f"{name} has no public source that serves these exact bytes (data.files lists no url); copy it from a "
            "folder holding it: python -m commands.fetch_raw --from DIR"
        )
    try:
        with urllib.request.urlopen(spec["url"], timeout=60) as resp:
            shutil.copyfileobj(resp, out)
    except OSError as err:
        raise PipelineError(
            f"cannot download {spec['url']} ({err}); offline, pass a local copy: "
            "python -m commands.fetch_raw --from DIR"
        ) from None


def fetch(cfg: DataConfig, local_copy: Path | None) -> list[Path]:
    """Copy or download every file of data.files into data.path; a bad checksum leaves nothing behind."""
    target = Path(cfg.path)
    target.mkdir(parents=True, exist_ok=True)
    placed = []
    for name, spec in cfg.files.items():
        dest = target / name  # a name may hold a subfolder (qrels/test.tsv)
        if not (dest.is_file() and sha256_of(dest) == spec["sha256"]):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            tmp = Path(tmp_name)
            try:
                with open(fd, "wb") as out:
                    _copy_into(out, name, spec, local_copy)
                actual = sha256_of(tmp)
                if actual != spec["sha256"]:
                    raise PipelineError(
                        f"{name} has sha256 {actual}, expected {spec['sha256']}: not the published file"
                    )
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
        placed.append(dest)
    return placed
