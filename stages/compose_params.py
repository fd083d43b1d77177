"""Rewrite params.yaml from conf/ exactly as `dvc exp run -S ...` composes it (DVC's own Hydra code).

python -m stages.compose_params                   # after editing conf/, before `dvc repro`
python -m stages.compose_params model=biobert lr=3e-5
"""

from __future__ import annotations

import sys
from pathlib import Path

from stages.config import PARAMS_FILE
from stages.errors import PipelineError, run_stage


def compose(output: str | Path, overrides: list[str], conf_dir: str | Path = "conf") -> None:
    """Compose conf/config.yaml with Hydra `overrides` into `output`, as DVC does."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        compose_and_dump(output, str(Path(conf_dir).resolve()), None, "config", str(Path.cwd()), overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise PipelineError(f"cannot compose conf/ with {overrides}: {str(err).splitlines()[0]}") from None


def main() -> None:
    compose(PARAMS_FILE, sys.argv[1:])
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    run_stage(main)
