"""The frontier's int8 against a real faiss index on this run's test set: does `metrics/frontier.json`'s int8
column say what an `IndexScalarQuantizer` (QT_8bit, inner product) holding the test corpus would retrieve?

Encodes the test set and the training split's texts (int8's calibration, as the frontier does) with the
fine-tuned model once, then at every dim: the frontier's int8 NDCG@10, faiss' (an index trained on the
calibration embeddings, the corpus added, each query's top 10 searched) and the float32 NDCG@10 beside them.
Needs faiss-cpu (`pip install -e ".[dev]"`).

    python -m benchmarks.int8_faiss                        # after `dvc repro`: models/finetuned
    python -m benchmarks.int8_faiss --model other/folder
"""

from __future__ import annotations

import argparse

import faiss
import torch

from benchmarks.common import banner, eval_setup
from medical_matryoshka.core.models import load_model
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import FrontierConfig, read_section
from medical_matryoshka.retrieval.frontier import calibration_embeddings, frontier
from medical_matryoshka.retrieval.scoring import encode_set, load_calibration_texts


def faiss_sq8_ndcg(encoded, calibration: torch.Tensor, dim: int, metric: str) -> float:
    """`metric` of the hits an IndexScalarQuantizer over the test corpus returns at `dim`."""
    k = int(metric.rsplit("@", 1)[1])
    unit = [torch.nn.functional.normalize(x[:, :dim].float(), dim=1).numpy() for x in (encoded.queries,
            encoded.corpus, calibration)]  # fmt: skip
    index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index.train(unit[2])
    index.add(unit[1])
    scores, rows = index.search(unit[0], min(k, len(encoded.evaluator.corpus_ids)))
    ids = encoded.evaluator.corpus_ids
    hits = [[{"corpus_id": ids[r], "score": float(s)} for r, s in zip(rs, ss, strict=True)]
            for rs, ss in zip(rows, scores, strict=True)]  # fmt: skip
    return encoded.metrics(hits)[metric]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: paths.model)")
    args = parser.parse_args()
    banner()
    model_cfg, eval_cfg, paths, rs = eval_setup()
    cfg = read_section(FrontierConfig, load_params(), "frontier")
    model = load_model(model_cfg.at(args.model or paths.model))
    encoded = encode_set(model, rs, eval_cfg)
    calibration = calibration_embeddings(model, load_calibration_texts(paths.prepared_train), eval_cfg.batch_size)
    ours = frontier(encoded, calibration, model_cfg.dims, cfg, eval_cfg.primary_metric)
    print(f"{len(rs.queries)} test queries, {len(rs.corpus)} passages; {eval_cfg.primary_measure}")
    print(f"{'dim':>5} {'float32':>8} {'int8 (frontier)':>16} {'faiss SQ8':>10} {'difference':>11}")
    for dim in sorted(model_cfg.dims, reverse=True):
        row = ours[f"d{dim:04d}"]
        theirs = faiss_sq8_ndcg(encoded, calibration, dim, eval_cfg.primary_metric)
        print(f"{dim:>5} {row['float32']:8.4f} {row['int8']:16.4f} {theirs:10.4f} {row['int8'] - theirs:+11.4f}")


if __name__ == "__main__":
    main()
