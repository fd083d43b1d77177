"""The model card's numbers against this run's.

    python -m commands.card diff                   # the card beside this run: the primary metric (NDCG@10);
                                                   # on your own data, each model's own gain side by side
    python -m commands.card diff --metric mrr@10   # another (or several: --metric ndcg@10 --metric mrr@10)
    python -m commands.card diff --all             # every metric the card published (15 x the dims)
    python -m commands.card                        # (re)create the `model-card` ref (setup.sh runs it)
    python -m commands.card --from-card README.md  # first regenerate paths.card from a card's README

The ref is HEAD's tree with the card's numbers at the pipeline's metrics paths, for DVC:
`dvc metrics diff model-card --targets metrics/summary.json` (NDCG@10 by dimension). Re-run it after changing
dvc.yaml's metrics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medical_matryoshka.card import CARD_STAND_IN, REF, card_diff, card_views, parse_card, write_card_ref
from medical_matryoshka.core.atomic import write_json
from medical_matryoshka.core.errors import require_input, run_main
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import EvalConfig, PathsConfig, read_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=("ref", "diff"), default="ref")
    parser.add_argument("--from-card", type=Path, help="regenerate the card's metrics file from this card README")
    parser.add_argument(
        "--metric", action="append", default=[], help="diff: metrics containing this (default: eval's primary)"
    )
    parser.add_argument("--all", action="store_true", help="diff: every metric the card published")
    args = parser.parse_args()
    params = load_params()
    paths = read_section(PathsConfig, params, "paths")
    if args.from_card:
        write_json(paths.card, parse_card(args.from_card.read_text(encoding="utf-8")))
        print(f"wrote {paths.card}")
    card = json.loads(Path(paths.card).read_text(encoding="utf-8"))
    if args.action == "diff":
        run = json.loads(require_input(paths.eval_metrics, "evaluate").read_text(encoding="utf-8"))
        measures = () if args.all else tuple(args.metric) or (read_section(EvalConfig, params, "eval").primary_measure,)
        data, model = params["data"], params["model"]["name"]
        own = data["source"] != CARD_STAND_IN
        if own:
            print(
                f"the card ({paths.card}) is another model on other data: its base model fine-tuned on the card's "
                f"own pairs; this run is {model} on {data['path']}. Their numbers are not comparable: read each "
                "model's own gain (fine-tuned - base)"
            )
        else:
            print(f"the card ({paths.card}) and this run ({paths.eval_metrics}): test retrieval")
        print("\n".join(card_diff(card, run, measures, own_gains=own)))
        if not args.all:
            print("(--all: every metric the card published; --metric NAME: another one)")
        return
    metric = read_section(EvalConfig, params, "eval").primary_metric
    commit = write_card_ref(card_views(card, paths, metric))
    print(f"{REF} -> {commit[:12]}; compare with: python -m commands.card diff")


if __name__ == "__main__":
    run_main(main)
