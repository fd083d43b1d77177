"""Leakage and duplicate checks between splits: test data must never be trained on."""

from __future__ import annotations

import pandas as pd

from medical_matryoshka.errors import PipelineError


def normalise(text: str) -> str:
    """Lower case, single spaces: what counts as the same text for leakage and duplicate checks."""
    return " ".join(str(text).lower().split())


def check_leakage(records: pd.DataFrame, boilerplate_max_words: int) -> set[str]:
    """Stop when a test query or test passage appears in the train or dev data (after normalising).

    Boilerplate texts of at most `boilerplate_max_words` words ("None.", "Case series.") are not
    information leaks: they are returned (normalised) so the training pairs holding one can be dropped.
    """
    test = records["split"] == "test"
    test_texts = set(records.loc[test, "anchor"].map(normalise)) | set(records.loc[test, "positive"].map(normalise))
    rest = records[~test]
    leaked = {
        column: sorted(set(rest.loc[rest[column].map(normalise).isin(test_texts), column]))
        for column in ("anchor", "positive")
    }
    real = {c: [t for t in texts if len(t.split()) > boilerplate_max_words] for c, texts in leaked.items()}
    if real["anchor"] or real["positive"]:
        examples = "; ".join(f"{c} {t[:80]!r}" for c, texts in real.items() for t in texts[:3])
        raise PipelineError(
            f"test data leaks into train/dev: {len(real['anchor'])} anchor(s) and {len(real['positive'])} "
            f"passage(s) also in the test split, e.g. {examples}; remove them from the source data"
        )
    return {normalise(t) for texts in leaked.values() for t in texts}


def duplicate_report(records: pd.DataFrame) -> dict[str, int]:
    """Duplicates inside train+dev: repeated pairs, and passages shared by several documents."""
    rest = records[records["split"] != "test"]
    norm = rest["positive"].map(normalise)
    return {
        "duplicate_pairs": int(rest.duplicated(["anchor", "positive"]).sum()),
        "passages_in_several_documents": int((rest.assign(n=norm).groupby("n")["doc_id"].nunique() > 1).sum()),
    }
