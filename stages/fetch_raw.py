"""Put the raw data files in place (data.path), verified against their published sha256.

    python -m stages.fetch_raw                    # download from the public sources in conf/data/*.yaml
    python -m stages.fetch_raw --from DIR         # offline: copy a local copy (e.g. ../shared/datasets/pubmedqa)

Not a DVC stage: it is how the DVC-tracked input (data/raw/*.dvc) gets into a workspace without a DVC
remote. Once in place, DVC checks the files against the md5s in the .dvc file and the prepare stage
against the sha256s in params.yaml.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import urllib.request
from pathlib import Path

from stages import config
from stages.config import DataConfig
from stages.data_sources import sha256_of
from stages.errors import PipelineError, run_stage


def fetch(cfg: DataConfig, local_copy: Path | None) -> list[Path]:
    """Copy or download every file of data.files into data.path; a bad checksum leaves nothing behind."""
    target = Path(cfg.path)
    target.mkdir(parents=True, exist_ok=True)
    placed = []
    for name, spec in cfg.files.items():
        dest = target / name
        if dest.is_file() and sha256_of(dest) == spec["sha256"]:
            placed.append(dest)
            continue
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with open(fd, "wb") as out:
                if local_copy is not None:
                    src = local_copy / name
                    if not src.is_file():
                        raise PipelineError(f"{src} does not exist; --from must be a folder holding {name}")
                    with src.open("rb") as f:
                        shutil.copyfileobj(f, out)
                else:
                    try:
                        with urllib.request.urlopen(spec["url"], timeout=60) as resp:
                            shutil.copyfileobj(resp, out)
                    except OSError as err:
                        raise PipelineError(
                            f"cannot download {spec['url']} ({err}); offline, pass a local copy: "
                            "python -m stages.fetch_raw --from DIR"
                        ) from None
            actual = sha256_of(tmp)
            if actual != spec["sha256"]:
                raise PipelineError(f"{name} has sha256 {actual}, expected {spec['sha256']}: not the published file")
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        placed.append(dest)
    return placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="local_copy", type=Path, help="folder holding a local copy of the raw files")
    args = parser.parse_args()
    cfg = config.section(DataConfig, config.load_params(), "data")
    if not cfg.files:
        raise PipelineError(f"data source '{cfg.source}' lists no raw files to fetch (data.files is empty)")
    for path in fetch(cfg, args.local_copy):
        print(f"ok  {path}")


if __name__ == "__main__":
    run_stage(main)
