"""Register the fine-tuned model in MLflow's model registry, truncated to the dimension you deploy.

    python -m commands.register --dim 256                          # models/finetuned as "medical-matryoshka"
    python -m commands.register --dim 64 --name claims-retriever   # another registered name

The model is logged with the sentence-transformers flavour (its signature: a string in, a float vector of
--dim components out; `truncate_dim` saved with it) to the pipeline run that evaluated exactly these
weights (`evaluate` tags its parent run with their sha256), and registered as a new version of --name.
Load it anywhere the tracking server is reachable:

    mlflow.sentence_transformers.load_model("models:/medical-matryoshka/1").encode(["a claim"])

The exported model (stage `export`: OpenVINO or ONNX Runtime, no torch at serving time) instead, as an MLflow
pyfunc that `mlflow models serve` answers embedding requests with (docs/deployment.md):

    python -m commands.register --dim 256 --exported               # models/exported, tagged runtime / weights
    mlflow models serve -m models:/medical-matryoshka/2 --env-manager local -h 127.0.0.1 -p 5001

Which --dim: metrics/frontier.json and plots/frontier.png (docs/deployment.md).
The tracking store is $MLFLOW_TRACKING_URI or the repository's sqlite:///mlflow.db, as for the stages.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError, require_input, run_main
from medical_matryoshka.core.models import MODEL_TAG, weights_digest
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import ModelConfig, PathsConfig, TrackingConfig, read_section
from medical_matryoshka.core.tracking.store import tracking_uri
from medical_matryoshka.serving.encoder import ExportError, read_manifest

# What the logged model needs to load: pinned like pyproject.toml, so MLflow does not infer them (slow).
REQUIREMENTS = ("sentence-transformers", "transformers", "torch")


def producing_run(client, experiment: str, digest: str):
    """The latest finished pipeline run whose `evaluate` evaluated weights with this digest."""
    exp = client.get_experiment_by_name(experiment)
    runs = []
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{MODEL_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    if not runs:
        raise PipelineError(
            f"no finished run in experiment '{experiment}' at {tracking_uri()} evaluated this model "
            f"({MODEL_TAG} {digest[:12]}); run `dvc repro` with this tracking store, then register"
        )
    return runs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, required=True, help="the Matryoshka dimension to deploy (truncate_dim)")
    parser.add_argument("--name", default="medical-matryoshka", help="registered model name")
    parser.add_argument("--model", help="the model folder (default: paths.model)")
    parser.add_argument(
        "--exported",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="register the exported model (default folder: paths.exported) as a pyfunc for `mlflow models serve`",
    )
    args = parser.parse_args()

    params = load_params()
    model_cfg, paths = read_section(ModelConfig, params, "model"), read_section(PathsConfig, params, "paths")
    experiment = read_section(TrackingConfig, params, "tracking").experiment
    if args.dim not in model_cfg.dims:
        raise PipelineError(
            f"--dim {args.dim} is not one of the model's Matryoshka dims {list(model_cfg.dims)}; pick one "
            f"(metrics/frontier.json: what each costs)"
        )
    if not args.name.strip():
        raise PipelineError("--name must not be empty")
    if args.exported is not None:
        register_exported(Path(args.exported or paths.exported), args.dim, args.name, experiment)
        return
    folder = require_input(args.model or paths.model, "train", what="fine-tuned model ")
    if not (folder / "modules.json").is_file():
        raise PipelineError(f"{folder} is not a saved sentence-transformers model (no modules.json)")

    import mlflow
    import mlflow.sentence_transformers
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient
    from sentence_transformers import SentenceTransformer

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    run = producing_run(MlflowClient(uri), experiment, weights_digest(folder))
    model = SentenceTransformer(str(Path(folder)), device="cpu", truncate_dim=args.dim)
    example = ["Metformin lowers HbA1c in adults with type 2 diabetes."]
    signature = infer_signature(example, model.encode(example))
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.sentence_transformers.log_model(
            model,
            name="model",
            signature=signature,
            registered_model_name=args.name,
            pip_requirements=[f"{package}=={version(package)}" for package in REQUIREMENTS],
            metadata={"truncate_dim": args.dim, "matryoshka_dims": list(model_cfg.dims)},
        )
    number = info.registered_model_version
    print(f"registered models:/{args.name}/{number}: {folder} at {args.dim} dims, logged to run '{run.info.run_name}'")
    print(f'load: mlflow.sentence_transformers.load_model("models:/{args.name}/{number}")')


def register_exported(folder: Path, dim: int, name: str, experiment: str) -> None:
    """The exported folder as a pyfunc (serving/pyfunc.py) at `dim`, logged to the run that evaluated the
    weights it was exported from, its version tagged with runtime, weights and dim."""
    require_input(folder, "export", what="exported model ")
    try:
        manifest = read_manifest(folder)
    except ExportError as err:
        raise PipelineError(str(err)) from None
    if dim not in manifest["matryoshka_dims"]:
        raise PipelineError(f"--dim {dim} is not one of the exported model's dims {manifest['matryoshka_dims']}")

    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from medical_matryoshka.serving.encoder import ExportedEncoder
    from medical_matryoshka.serving.export import RUNTIME_PACKAGE
    from medical_matryoshka.serving.pyfunc import ARTIFACT, ExportedEmbeddings

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = producing_run(client, experiment, manifest["source"].get("sha256", "?"))
    example = ["Metformin lowers HbA1c in adults with type 2 diabetes."]
    vectors = ExportedEncoder(folder, truncate_dim=dim).encode(example)
    signature = infer_signature(example, vectors, params={"task": "encode"})
    runtime = RUNTIME_PACKAGE[manifest["runtime"]]
    route = {"runtime": manifest["runtime"], "weights": manifest["weights"], "dim": dim}
    package = Path(__file__).resolve().parents[1] / "medical_matryoshka"
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.pyfunc.log_model(
            name=f"exported-{manifest['runtime']}-{manifest['weights']}-d{dim}",
            python_model=ExportedEmbeddings(),
            artifacts={ARTIFACT: str(folder)},
            model_config={"truncate_dim": dim},
            code_paths=[str(package)],  # the loader travels with the model: serving needs no checkout
            signature=signature,
            registered_model_name=name,
            pip_requirements=[f"{p}=={version(p)}" for p in (runtime, "transformers", "numpy", "mlflow")],
            metadata={**route, "matryoshka_dims": manifest["matryoshka_dims"]},
        )
    number = info.registered_model_version
    for key, value in route.items():
        client.set_model_version_tag(name, number, key, str(value))
    print(
        f"registered models:/{name}/{number}: {folder} ({manifest['runtime']} {manifest['weights']}) at {dim} dims, "
        f"logged to run '{run.info.run_name}'"
    )
    print(f"serve: mlflow models serve -m models:/{name}/{number} --env-manager local -h 127.0.0.1 -p 5001")


if __name__ == "__main__":
    run_main(main)
