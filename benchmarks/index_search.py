"""Search at scale: memory, build time, queries/s and recall of a real vector index at every dim and precision.

For each Matryoshka dim and stored precision (float32, int8, binary) this builds two faiss indexes over N
vectors: exact search (IndexFlatIP / IndexScalarQuantizer 8-bit / IndexBinaryFlat) and one approximate type,
an inverted file (IndexIVFFlat / IndexIVFScalarQuantizer / IndexBinaryIVF; nlist lists, nprobe probed). It
reports the index's size (faiss's serialised bytes: what it holds in memory), build time (training +
adding), queries/s on all cores (a batch of queries, median of --repeats searches), and recall@k of the
approximate index (at each nprobe) against exact search at the same dim and precision. binary_rescore
searches the binary index; its re-ranking of rescore_multiplier x k candidates by the float query is not
timed here.

The vectors are SYNTHETIC: drawn per component from a normal distribution with the mean and standard
deviation of the fine-tuned model's embeddings of the training split (dimension-wise statistics, no
correlations), then truncated and renormalised as the frontier does. Real embeddings cluster, which helps an
inverted file; independent components are close to its worst case, so recall here is a lower bound. Quality
per (dim, precision) comes from metrics/frontier.json (the real test set), not from this benchmark.

    python -m benchmarks.index_search                       # 1M vectors, the dims of params.yaml
    python -m benchmarks.index_search --n 100000 --dims 384 64 --precisions float32 binary
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import banner
from medical_matryoshka.core.errors import PipelineError, run_main
from medical_matryoshka.core.models import with_prepared_length
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import ModelConfig, PathsConfig, read_section

STORED = ("float32", "int8", "binary")  # what an index stores; binary_rescore stores binary
CHUNK = 100_000  # vectors drawn at a time (float64 temporaries stay small)


def component_stats(model_dir: str, train_file: Path, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each component of the model's embeddings of the training split."""
    from medical_matryoshka.core.models import load_model
    from medical_matryoshka.retrieval.frontier import calibration_embeddings
    from medical_matryoshka.retrieval.scoring import load_calibration_texts

    params = load_params()
    paths = read_section(PathsConfig, params, "paths")
    model_cfg = with_prepared_length(read_section(ModelConfig, params, "model"), paths)
    model = load_model(model_cfg.at(model_dir))
    emb = calibration_embeddings(model, load_calibration_texts(train_file), batch_size).float().cpu().numpy()
    return emb.mean(axis=0), emb.std(axis=0)


def synthetic(rng: np.random.Generator, n: int, mean: np.ndarray, std: np.ndarray, dim: int) -> np.ndarray:
    """n unit vectors: the first `dim` components drawn from the per-component normals, then renormalised."""
    x = (rng.standard_normal((n, dim), dtype=np.float32) * std[:dim] + mean[:dim]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_indexes(dim: int, precision: str, nlist: int):
    """(exact, approximate) faiss indexes storing `precision`; inner product (cosine on unit vectors)."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if precision == "float32":
        return faiss.IndexFlatIP(dim), faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
    if precision == "int8":
        sq8 = faiss.ScalarQuantizer.QT_8bit  # per-component min/max ranges learnt by train(), 1 byte a component
        return (
            faiss.IndexScalarQuantizer(dim, sq8, ip),
            faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, sq8, ip),
        )
    bits = math.ceil(dim / 8) * 8
    return faiss.IndexBinaryFlat(bits), faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)


def stored(x: np.ndarray, precision: str) -> np.ndarray:
    """What the index is given: float vectors (the 8-bit quantizer codes them itself) or packed sign bits."""
    return np.packbits(x > 0, axis=1) if precision == "binary" else x


def index_bytes(index) -> int:
    import faiss

    binary = isinstance(index, faiss.IndexBinary)
    return len(faiss.serialize_index_binary(index) if binary else faiss.serialize_index(index))


def measure(args, mean: np.ndarray, std: np.ndarray, dim: int, precision: str) -> list[dict]:
    """Both index types at one (dim, precision): a row each."""
    rng = np.random.default_rng(args.seed)
    train = stored(synthetic(rng, min(args.n, args.train_size), mean, std, dim), precision)
    queries = stored(synthetic(rng, args.queries, mean, std, dim), precision)
    corpus = np.concatenate(
        [
            stored(synthetic(rng, min(CHUNK, args.n - first), mean, std, dim), precision)
            for first in range(0, args.n, CHUNK)
        ]
    )
    rows, exact_ids = [], None
    for kind, index in zip(("exact", "ivf"), make_indexes(dim, precision, args.nlist), strict=True):
        start = time.perf_counter()
        if not index.is_trained:
            index.train(train)
        index.add(corpus)
        build = time.perf_counter() - start
        size = index_bytes(index) / 2**20
        for nprobe in [None] if kind == "exact" else args.nprobe:  # an inverted file: searched at each nprobe
            if nprobe:
                index.nprobe = nprobe
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                _, ids = index.search(queries, args.k)
                seconds.append(time.perf_counter() - start)
            seconds = statistics.median(seconds)
            if kind == "exact":
                exact_ids = ids
            recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids, strict=True)]))
            rows.append(
                {
                    "dim": dim,
                    "precision": precision,
                    "index": kind if kind == "exact" else f"ivf{args.nlist},nprobe{nprobe}",
                    "vectors": args.n,
                    "index_mib": size,
                    "build_s": build,
                    "queries_per_s": args.queries / seconds,
                    f"recall@{args.k}": recall,
                }
            )
            print(
                f"{dim:>5} {precision:>8} {rows[-1]['index']:>18} {size:>10.1f} {build:>9.1f} "
                f"{rows[-1]['queries_per_s']:>10.0f} {recall:>9.3f}",
                flush=True,
            )
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in each index (default 1M)")
    parser.add_argument("--dims", type=int, nargs="+", help="Matryoshka dims (default: model.dims of params.yaml)")
    parser.add_argument("--precisions", nargs="+", default=list(STORED), help=f"of {', '.join(STORED)}")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries searched")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query; recall@k against exact search")
    parser.add_argument("--nlist", type=int, default=1024, help="inverted lists of the approximate index")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="lists searched per query (each)")
    parser.add_argument("--train-size", type=int, default=65_536, help="vectors the IVF / 8-bit quantizer learn on")
    parser.add_argument("--model", help="the model whose statistics the vectors copy (default: paths.model)")
    parser.add_argument("--repeats", type=int, default=3, help="searches of the query batch (median queries/s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    params = load_params()
    model_cfg, paths = read_section(ModelConfig, params, "model"), read_section(PathsConfig, params, "paths")
    dims = tuple(args.dims or model_cfg.dims)
    if bad := [d for d in dims if d not in model_cfg.dims]:
        raise PipelineError(f"--dims {bad[0]} is not one of the model's Matryoshka dims {list(model_cfg.dims)}")
    if bad := [p for p in args.precisions if p not in STORED]:
        raise PipelineError(f"--precisions {bad[0]!r} is not a stored precision; use {', '.join(STORED)}")
    if args.n < max(args.nlist * 39, args.k):  # faiss's k-means wants >= 39 points per list
        raise PipelineError(f"--n {args.n} is too small for --nlist {args.nlist}; use --n >= {args.nlist * 39}")
    model_dir = args.model or paths.model
    from medical_matryoshka.core.errors import require_input

    require_input(model_dir, "train", what="fine-tuned model ")
    banner()
    mean, std = component_stats(model_dir, paths.prepared_train)
    print(f"{args.n:,} synthetic vectors per index (per-component statistics of {model_dir}), {args.queries} queries")
    print(f"{'dim':>5} {'stored':>8} {'index':>18} {'MiB':>10} {'build s':>9} {'queries/s':>10} recall@{args.k}")
    rows = [row for dim in dims for precision in args.precisions for row in measure(args, mean, std, dim, precision)]
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
