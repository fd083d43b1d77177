"""Put the raw data files in place (data.path), verified against their published sha256.

    python -m commands.fetch_raw                  # download from the public sources in conf/data/*.yaml
    python -m commands.fetch_raw --from DIR       # offline: copy a local copy (e.g. ../shared/datasets/pubmedqa)
    python -m commands.fetch_raw data=scifact --from ../shared/datasets/scifact   # another data profile

Not a DVC stage: it is how the DVC-tracked input (data/raw/*.dvc) gets into a workspace without a DVC
remote. Once in place, DVC checks the files against the md5s in the .dvc file and the prepare stage
against the sha256s in params.yaml.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from medical_matryoshka.compose import compose
from medical_matryoshka.core.errors import PipelineError, run_main
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import DataConfig, read_section
from medical_matryoshka.data.fetch import fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="local_copy", type=Path, help="folder holding a local copy of the raw files")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides naming the data (data=scifact); else params.yaml")
    args = parser.parse_args()
    if args.overrides:  # compose conf/ as `dvc exp run -S ...` would, without touching params.yaml
        with tempfile.TemporaryDirectory() as tmp:
            compose(Path(tmp) / "params.yaml", args.overrides)
            cfg = read_section(DataConfig, load_params(Path(tmp) / "params.yaml"), "data")
    else:
        cfg = read_section(DataConfig, load_params(), "data")
    if not cfg.files:
        raise PipelineError(f"data source '{cfg.source}' lists no raw files to fetch (data.files is empty)")
    for path in fetch(cfg, args.local_copy):
        print(f"ok  {path}")


if __name__ == "__main__":
    run_main(main)
