"""A plain sentence-transformers training script with the train stage's settings, for benchmarks.train_speed.

What a user of the model card would write: the same data, loss, arguments and seed as the stage (read
from params.yaml), the stock SequentialEvaluator of one InformationRetrievalEvaluator per dimension on the
dev split each epoch, no MLflow, no checkpoint bookkeeping. It imports nothing from this project, except
to find an offline model install (model=mpnet: `model.install`).

    python benchmarks/plain_st_train.py --out /tmp/plain-model [--epochs 1] [--precision bf16]

--test also scores the trained model on the prepared test set with the stock evaluator, one
InformationRetrievalEvaluator per dimension fed the corpus encoded once (NDCG@10 by dim in <out>/train.json):
the plain fine-tune a user would compare the pipeline with (docs/own-data.md).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch
import yaml
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator, SequentialEvaluator
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)

from medical_matryoshka.core.dims import dim_key


def per_dim_evaluators(path: str, dims: list[int]) -> list[InformationRetrievalEvaluator]:
    """One stock evaluator per Matryoshka dimension on a prepared retrieval set (queries, corpus, relevant)."""
    with open(path, encoding="utf-8") as f:
        rs = json.load(f)
    relevant = {q: set(d) for q, d in rs["relevant"].items()}
    return [
        InformationRetrievalEvaluator(rs["queries"], rs["corpus"], relevant, name=dim_key(d), truncate_dim=d)
        for d in dims
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--mini-batch-size", type=int, default=None)
    parser.add_argument("--train-file", default=None, help="pairs parquet (default: <pairs>/<train_file>)")
    parser.add_argument("--test", action="store_true", help="score the trained model on <prepared>/<test_file>")
    args = parser.parse_args()

    with open(args.params, encoding="utf-8") as f:
        p = yaml.safe_load(f)
    t, m, paths = p["train"], p["model"], p["paths"]
    if t.get("pca_rotation") or t.get("passage_pairs"):
        raise SystemExit(
            "error: this script trains plain pairs from the base model; set pca_rotation and passage_pairs false"
        )
    epochs = args.epochs or p["epochs"]
    dims = m["dims"]

    if m.get("install"):  # model=mpnet: the offline copy of commands.install_model
        from medical_matryoshka.core.offline_models import installed_path

        name = str(installed_path(m["install"]))
    elif m.get("embedded_package"):
        import importlib

        name = str(importlib.import_module(m["embedded_package"]).get_model_path())
    else:
        name = m["name"]
    model = SentenceTransformer(name)
    with open(f"{paths['prepared']}/{paths['lengths_file']}", encoding="utf-8") as f:
        model.max_seq_length = json.load(f)["max_seq_length"]  # the length prepare chose, as the stage reads texts

    rows = pd.read_parquet(args.train_file or f"{paths['pairs']}/{paths['train_file']}")
    rows = rows[[c for c in rows.columns if c in ("anchor", "positive") or c.startswith("negative_")]]
    train = Dataset.from_pandas(rows, preserve_index=False)
    evaluator = SequentialEvaluator(per_dim_evaluators(f"{paths['prepared']}/{paths['dev_file']}", dims))

    directions = tuple(t["directions"])
    common = {"directions": directions, "scale": t["scale"], "hardness_mode": t["hardness_mode"]}
    common["hardness_strength"] = t["hardness_strength"]
    if t["loss"] == "cached_mnrl":
        mini = args.mini_batch_size or t["mini_batch_size"]
        inner = CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini, **common)
    else:
        inner = MultipleNegativesRankingLoss(model, **common)
    loss = MatryoshkaLoss(model, inner, matryoshka_dims=dims, matryoshka_weights=t["matryoshka_weights"])

    targs = SentenceTransformerTrainingArguments(
        output_dir=f"{args.out}/checkpoints",
        num_train_epochs=epochs,
        per_device_train_batch_size=p["batch_size"],
        gradient_accumulation_steps=p["grad_accum"],
        learning_rate=float(p["lr"]),
        lr_scheduler_type=p["scheduler"],
        warmup_steps=p["warmup_ratio"],
        # the stock sampler: relevance-aware batches are this project's, not the library's
        batch_sampler="no_duplicates" if t["batch_sampler"] == "relevance_aware" else t["batch_sampler"],
        seed=p["seed"],
        bf16=args.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_dim_{dims[0]}_cosine_ndcg@10",
        logging_steps=1,
        report_to="none",
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train, loss=loss, evaluator=evaluator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    eval_seconds = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)
    model.save(args.out)
    summary = {
        "train_pairs": len(train),
        "optimizer_steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "dev_eval_seconds": round(eval_seconds, 1),
        "pairs_per_second": round(len(train) * epochs / (seconds - eval_seconds), 2),
    }
    if args.test:  # the corpus encoded once, each dim's stock evaluator fed its truncation (its own API)
        evaluators = per_dim_evaluators(f"{paths['prepared']}/{paths['test_file']}", dims)
        corpus = model.encode_document(evaluators[0].corpus, convert_to_tensor=True, batch_size=64)
        summary["test_ndcg@10"] = {
            dim_key(d): round(ev(model, corpus_embeddings=corpus[:, :d])[f"{dim_key(d)}_cosine_ndcg@10"], 4)
            for d, ev in zip(dims, evaluators, strict=True)
        }
    with open(f"{args.out}/train.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
