"""CPU encoding speed of the fine-tuned model: torch against each exported route (stage export), side by side.

    python -m benchmarks.export_speed                        # models/finetuned, the prepared test set
    python -m benchmarks.export_speed --passages 64 --rounds 1 --threads 1   # a quick look

Every route encodes the same texts: `--passages` test passages and `--queries` test claims in batches of
`--batch-size` (longest first, as sentence-transformers batches), then `--single` claims one at a time (the
latency a search box sees: median and p95). Each measurement is a fresh process (its peak resident memory is
the route's), and the routes take turns in each of `--rounds` rounds, so a noisy neighbour slows all of them
alike; medians over rounds are reported, with each route's speed-up over torch float32 taken round by round.
Routes: torch float32; torch bfloat16 (the model cast, as `SentenceTransformer(..., model_kwargs={"dtype":
torch.bfloat16})`); OpenVINO float under the CPU's default precision (bf16 where the CPU has AMX / AVX-512
BF16) and under f32 (what a CPU without bf16 runs); OpenVINO int8 weights under both; ONNX Runtime float and
int8. Quality: 1 - cos of each route's vectors against torch float32's on the same texts (the stage's test
NDCG@10 per route comes from `dvc exp run -S export.runtime=... -S export.weights=...`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import banner

# route: (exported runtime, weights, OpenVINO inference precision) or None for torch
ROUTES = {
    "torch fp32": None,
    "torch bf16": None,
    "openvino float": ("openvino", "float", "auto"),
    "openvino float f32": ("openvino", "float", "f32"),
    "openvino int8": ("openvino", "int8", "auto"),
    "openvino int8 f32": ("openvino", "int8", "f32"),
    "onnx float": ("onnx", "float", "auto"),
    "onnx int8": ("onnx", "int8", "auto"),
}
CPU_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_features() -> list[str]:
    info = Path("/proc/cpuinfo")
    flags = set()
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return [f for f in CPU_FLAGS if f in flags]


def texts(test_file: Path, passages: int, queries: int, single: int) -> tuple[list[str], list[str], list[str]]:
    data = json.loads(test_file.read_text(encoding="utf-8"))
    corpus = [data["corpus"][k] for k in sorted(data["corpus"])][:passages]
    claims = [data["queries"][k] for k in sorted(data["queries"])]
    return corpus, claims[:queries], claims[-single:]


def child(args) -> None:
    """One measurement of one route: prints a JSON line."""
    import numpy as np

    corpus, claims, singles = texts(Path(args.data), args.passages, args.queries, args.single)
    if args.route.startswith("torch"):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)

        model = SentenceTransformer(args.model, device="cpu")
        if args.route == "torch bf16":
            model = model.to(torch.bfloat16)

        def encode(batch, size):
            return model.encode(batch, batch_size=size, normalize_embeddings=True, convert_to_numpy=True)
    else:  # no torch in the process: the memory is the runtime's
        from medical_matryoshka.serving.encoder import ExportedEncoder

        precision = ROUTES[args.route][2]
        encoder = ExportedEncoder(args.folder, threads=args.threads, inference_precision=precision)

        def encode(batch, size):
            return encoder.encode(batch, batch_size=size)

    encode(corpus[:4], args.batch_size)  # warm-up: first-call compilation and allocation
    start = time.perf_counter()
    passage_vectors = encode(corpus, args.batch_size)
    passages_s = time.perf_counter() - start
    start = time.perf_counter()
    encode(claims, args.batch_size)
    queries_s = time.perf_counter() - start
    latencies = []
    for claim in singles:
        start = time.perf_counter()
        encode([claim], 1)
        latencies.append((time.perf_counter() - start) * 1000)
    np.save(args.vectors, np.asarray(passage_vectors, dtype=np.float32))
    print(json.dumps({"passages_s": passages_s, "queries_s": queries_s, "latency_ms": latencies, "peak_gib": peak()}))


def peak() -> float:
    """This process's peak resident memory in GiB: VmHWM, which starts afresh at exec (ru_maxrss keeps the
    high-water mark of the parent the process was forked from, the benchmark itself)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def export_all(model_dir: str, out: Path) -> dict[str, Path]:
    from sentence_transformers import SentenceTransformer

    from medical_matryoshka.serving.export import export_model

    model = SentenceTransformer(model_dir, device="cpu")
    folders = {}
    for route, spec in ROUTES.items():
        if spec is None:
            continue
        runtime, weights, _ = spec
        folder = out / f"{runtime}-{weights}"
        if not (folder / "export.json").is_file():
            export_model(model, folder, runtime, weights, dims=(model.get_embedding_dimension(),))
        folders[route] = folder
    return folders


def size_mb(route: str, model_dir: str, folders: dict[str, Path]) -> float:
    from medical_matryoshka.serving.export import model_bytes

    if route in folders:
        return model_bytes(folders[route]) / 2**20
    weights = sum(p.stat().st_size for p in Path(model_dir).rglob("*.safetensors")) / 2**20
    return weights / 2 if route == "torch bf16" else weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved sentence-transformers model folder (default: params.yaml paths.model)")
    parser.add_argument("--data", help="a prepared retrieval set (default: the test set params.yaml's paths name)")
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--single", type=int, default=50, help="claims encoded one at a time (latency)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--exports", help="folder for the exported routes (default: a temporary one)")
    parser.add_argument("--json", help="also write the table as JSON here")
    parser.add_argument("--child", dest="route", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None or args.data is None:
        from medical_matryoshka.core.params import load_params
        from medical_matryoshka.core.sections import PathsConfig, read_section

        paths = read_section(PathsConfig, load_params(), "paths")
        args.model, args.data = args.model or str(paths.model), args.data or str(paths.prepared_test)
    if args.route:
        args.threads = args.threads[0]
        child(args)
        return
    banner()
    print(f"CPU features that decide it: {', '.join(cpu_features()) or 'none of ' + ', '.join(CPU_FLAGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        exports = Path(args.exports) if args.exports else Path(tmp) / "exports"
        folders = export_all(args.model, exports)
        results: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for threads in args.threads:
                for route in args.routes:
                    vectors = Path(tmp) / f"{route.replace(' ', '_')}-{threads}.npy"
                    cmd = [sys.executable, "-m", "benchmarks.export_speed", "--child", route, "--model", args.model]
                    cmd += ["--data", args.data, "--passages", str(args.passages), "--queries", str(args.queries)]
                    cmd += ["--single", str(args.single), "--batch-size", str(args.batch_size)]
                    cmd += ["--threads", str(threads), "--vectors", str(vectors)]
                    if route in folders:
                        cmd += ["--folder", str(folders[route])]
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
                    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                    if out.returncode != 0:
                        sys.exit(f"error: route {route!r} failed:\n{out.stderr[-2000:]}")
                    measured = json.loads(out.stdout.strip().splitlines()[-1])
                    measured["vectors"] = str(vectors)
                    results.setdefault((route, threads), []).append(measured)
        report(args, results, folders)


def report(args, results, folders) -> None:
    import numpy as np

    from medical_matryoshka.serving.verify import cosine_distance

    rows = []
    print(
        f"\n{args.passages} passages and {args.queries} claims batched by {args.batch_size}, {args.single} claims "
        f"one at a time; medians of {args.rounds} rounds (speed-up: round by round against torch fp32)"
    )
    header = "threads  route               passages/s  claims/s  speed-up  single ms (p95)  peak GiB  file MB  1-cos"
    print(header)
    for threads in args.threads:
        base = results.get(("torch fp32", threads))
        reference = np.load(base[-1]["vectors"]) if base else None
        for route in args.routes:
            runs = results[route, threads]
            passages = statistics.median(args.passages / r["passages_s"] for r in runs)
            claims = statistics.median(args.queries / r["queries_s"] for r in runs)
            speedup = (
                statistics.median(b["passages_s"] / r["passages_s"] for b, r in zip(base, runs, strict=True))
                if base
                else float("nan")
            )
            latency = [ms for r in runs for ms in r["latency_ms"]]
            single, p95 = statistics.median(latency), float(np.percentile(latency, 95))
            peak = statistics.median(r["peak_gib"] for r in runs)
            distance = (
                float(cosine_distance(np.load(runs[-1]["vectors"]), reference).max())
                if reference is not None
                else float("nan")
            )
            size = size_mb(route, args.model, folders)
            print(
                f"{threads:>7}  {route:<18} {passages:>11.1f} {claims:>9.1f} {speedup:>8.2f}x "
                f"{single:>8.1f} ({p95:.1f}) {peak:>9.2f} {size:>8.0f}  {distance:.1e}"
            )
            rows.append(
                {"threads": threads, "route": route, "passages_per_s": passages, "claims_per_s": claims,
                 "speedup": speedup, "single_ms": single, "single_p95_ms": p95, "peak_gib": peak,
                 "file_mb": size, "max_cosine_distance": distance}
            )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_features": cpu_features(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
