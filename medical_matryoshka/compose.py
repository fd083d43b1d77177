"""conf/ -> params.yaml exactly as `dvc exp run -S ...` composes it: with DVC's own Hydra code."""

from __future__ import annotations

from pathlib import Path

from medical_matryoshka.core.errors import PipelineError


def compose(output: str | Path, overrides: list[str], conf_dir: str | Path = "conf") -> None:
    """Compose conf/config.yaml with Hydra `overrides` into `output`, as DVC does."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        compose_and_dump(output, str(Path(conf_dir).resolve()), None, "config", str(Path.cwd()), overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise PipelineError(f"cannot compose conf/ with {overrides}: {str(err).splitlines()[0]}") from None
