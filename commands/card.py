"""Write the `model-card` git ref that `dvc metrics diff model-card --all` compares this workspace with.

    python -m commands.card                       # (re)create the ref (setup.sh runs it)
    python -m commands.card --from-card README.md # first regenerate paths.card from a card's README

Re-run it after changing dvc.yaml's metrics: the ref holds HEAD's tree plus the card's numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medical_matryoshka.atomic import write_json
from medical_matryoshka.card import REF, card_views, parse_card, write_card_ref
from medical_matryoshka.config.params import load_params, section
from medical_matryoshka.config.sections import PathsConfig
from medical_matryoshka.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-card", type=Path, help="regenerate the card's metrics file from this card README")
    args = parser.parse_args()
    paths = section(PathsConfig, load_params(), "paths")
    if args.from_card:
        write_json(paths.card, parse_card(args.from_card.read_text(encoding="utf-8")))
        print(f"wrote {paths.card}")
    card = json.loads(Path(paths.card).read_text(encoding="utf-8"))
    commit = write_card_ref(card_views(card, paths))
    print(f"{REF} -> {commit[:12]}; compare with: dvc metrics diff model-card --all")


if __name__ == "__main__":
    run_main(main)
