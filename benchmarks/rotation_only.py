"""How much of the fine-tuned model's gain the PCA rotation gives on its own, with no training.

Scores the base model and the base model plus the train stage's PCA rotation layer (`train.pca_rotation`,
fitted on the prepared training split exactly as the stage does) on the prepared test set at every
Matryoshka dimension. The rotation leaves the full dimension unchanged (checked to 1e-4 before printing).

    python -m benchmarks.rotation_only          # after `dvc repro` (needs data/prepared)
"""

from __future__ import annotations

import pandas as pd

from benchmarks.common import banner, eval_setup
from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.models import load_model
from medical_matryoshka.retrieval.scoring import score_all_dims
from medical_matryoshka.training.data import training_texts
from medical_matryoshka.training.rotation import add_pca_rotation


def main() -> None:
    banner()
    model_cfg, eval_cfg, paths, rs = eval_setup()
    dims = model_cfg.dims
    prepared = pd.read_parquet(paths.prepared_train)
    texts = training_texts(prepared)

    base = score_all_dims(load_model(model_cfg), rs, dims, eval_cfg)
    rotated_model = load_model(model_cfg)
    share = add_pca_rotation(rotated_model, texts, dims, eval_cfg.batch_size)
    rotated = score_all_dims(rotated_model, rs, dims, eval_cfg)
    full = dim_key(dims[0])
    if abs(base[full]["cosine_ndcg@10"] - rotated[full]["cosine_ndcg@10"]) > 1e-4:
        raise SystemExit("the rotation changed the full-dimension NDCG@10: it is not orthogonal")

    print(f"PCA fitted on {len(texts)} training texts; test NDCG@10 ({len(rs.queries)} queries):")
    print("| dim | base | base + rotation | change | variance kept |")
    print("|----:|-----:|----------------:|-------:|--------------:|")
    for dim in dims:
        b, r = base[dim_key(dim)]["cosine_ndcg@10"], rotated[dim_key(dim)]["cosine_ndcg@10"]
        variance = share[f"pca_variance_{dim_key(dim)}"]
        print(f"| {dim} | {b:.4f} | {r:.4f} | {r - b:+.4f} | {variance:.3f} |")


if __name__ == "__main__":
    main()
