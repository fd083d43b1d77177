"""An exported model as an MLflow pyfunc: `mlflow models serve` answers embedding requests with it.

`commands.register --exported` logs the exported folder as this model's artifact, with its dimension in the
model config; MLflow's server then calls `predict` with the request's texts:

    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": ["Metformin lowers HbA1c."], "params": {"task": "query"}}'
    -> {"predictions": [[0.031, ...]]}  # one unit vector of the registered dim per text

task: encode (default) | query | document, as SentenceTransformer.encode / encode_query / encode_document
(they differ only for a model with prompts). $EXPORT_THREADS caps the runtime's threads.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

from medical_matryoshka.serving.encoder import ExportedEncoder, default_threads

TASKS = ("encode", "query", "document")
ARTIFACT = "exported"  # the artifact key of the exported folder


def texts_of(model_input: Any) -> list[str]:
    """The request's texts: a list, a Series or a one-column DataFrame of strings (MLflow passes any)."""
    if hasattr(model_input, "columns"):
        model_input = model_input.iloc[:, 0]
    texts = list(model_input)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("inputs must be strings, one text each")
    return texts


class ExportedEmbeddings(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        config = context.model_config or {}
        self.encoder = ExportedEncoder(
            context.artifacts[ARTIFACT], truncate_dim=config.get("truncate_dim"), threads=default_threads()
        )

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        task = (params or {}).get("task", "encode")
        if task not in TASKS:
            raise ValueError(f"params.task must be one of {', '.join(TASKS)}, got {task!r}")
        method = {"encode": self.encoder.encode, "query": self.encoder.encode_query}.get(
            task, self.encoder.encode_document
        )
        return method(texts_of(model_input))
