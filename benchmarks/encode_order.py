"""Evaluation encoding: time per text of the encode-once route, length-sorted (what it does) vs in data order.

`SentenceTransformer.encode` sorts its inputs by length before batching, so each batch is padded only to
texts of about its own length; the evaluation passes every query (and every passage) in one call. This
measures what that sort is worth and what is left: the same texts encoded in one call (sorted inside) and
in calls of one batch each in data order (no sort across batches), with padded / real tokens for both.

    python -m benchmarks.encode_order                   # base model, the prepared test set, median of 3
    python -m benchmarks.encode_order --model models/finetuned
"""

from __future__ import annotations

import argparse

from benchmarks.common import banner, eval_setup, median, timed
from medical_matryoshka.core.models import load_model


def token_counts(model, texts: list[str]) -> list[int]:
    tokens = model.preprocess(texts)["attention_mask"]
    return tokens.sum(dim=1).tolist()


def padding(lengths: list[int], batch: int, by_length: bool) -> float:
    """Padded / real tokens when `lengths` are batched `batch` at a time (sorted first when by_length)."""
    order = sorted(lengths, reverse=True) if by_length else lengths
    padded = sum(max(order[i : i + batch]) * len(order[i : i + batch]) for i in range(0, len(order), batch))
    return padded / sum(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model folder (default: the base model of params.yaml)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    banner()
    model_cfg, eval_cfg, _, rs = eval_setup()
    model = load_model(model_cfg.at(args.model) if args.model else model_cfg)
    batch = eval_cfg.batch_size
    sets = {"queries": list(rs.queries.values()), "passages": list(rs.corpus.values())}
    model.encode_query(sets["queries"][:32])  # warm-up: first-call allocations off the clock
    print(f"model: {model_cfg.name}; batch {batch}; median of {args.repeats}")
    print(f"{'texts':>18}  {'sorted (one call)':>24}  {'data order':>24}  {'ratio':>6}")
    for name, texts in sets.items():
        encode = model.encode_query if name == "queries" else model.encode_document
        one_call, _ = timed(lambda t=texts, e=encode: e(t, batch_size=batch), args.repeats)
        in_order, _ = timed(
            lambda t=texts, e=encode: [e(t[i : i + batch], batch_size=batch) for i in range(0, len(t), batch)],
            args.repeats,
        )
        lengths = token_counts(model, texts)
        sorted_ms, order_ms = (1000 * median(s) / len(texts) for s in (one_call, in_order))
        print(
            f"{name + f' ({len(texts)})':>18}  {sorted_ms:8.2f} ms/text pad {padding(lengths, batch, True):.2f}x"
            f"  {order_ms:8.2f} ms/text pad {padding(lengths, batch, False):.2f}x  {order_ms / sorted_ms:5.2f}x"
        )


if __name__ == "__main__":
    main()
