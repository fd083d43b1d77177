"""Rewrite params.yaml from conf/ exactly as `dvc exp run -S ...` composes it.

python -m commands.compose_params                   # after editing conf/, before `dvc repro`
python -m commands.compose_params model=biobert lr=3e-5
"""

from __future__ import annotations

import sys

from medical_matryoshka.compose import compose
from medical_matryoshka.core.errors import run_main
from medical_matryoshka.core.params import PARAMS_FILE


def main() -> None:
    compose(PARAMS_FILE, sys.argv[1:])
    print(f"wrote {PARAMS_FILE}")
    if sys.argv[1:]:
        print(
            f"note: `dvc repro` runs with these overrides, but every `dvc exp run` composes {PARAMS_FILE} from conf/ "
            "again and drops them: put lasting changes in conf/ (README: Where persistent changes belong)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run_main(main)
