"""Read a retrieval set in BEIR layout, the format of BEIR, MTEB and most published medical retrieval sets.

    corpus.jsonl    {"_id", "title", "text"}   one passage a line; its text is title + " " + text
    queries.jsonl   {"_id", "text"}            one query a line
    qrels/<split>.tsv  query-id, corpus-id, score (tab-separated; header line optional), split in
                       train, dev, test; score > 0 is relevant (the grade is kept), 0 or less judged not

Every bad line is one error naming the file and line. A qrels line naming a query or passage id that the
other files do not hold stops, as does a query judged in both the train (or dev) and the test qrels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medical_matryoshka.core.errors import PipelineError

SPLITS = ("train", "dev", "test")


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number from 1, parsed value) of each non-empty line of a jsonl file; a line that is not JSON is
    one error naming it (pyarrow's own message counts rows within a block, from 0)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as err:
                raise PipelineError(
                    f"{path} line {number} is not valid JSON ({err.msg} at column {err.colno}); fix or remove "
                    "that line (one JSON object a line)"
                ) from None


def _jsonl(path: Path, fields: tuple[str, ...]) -> dict[str, dict]:
    """{_id: row} of a jsonl file; each row must be an object holding `fields`."""
    if not path.is_file():
        raise PipelineError(f"BEIR folder {path.parent} has no {path.name}; a BEIR set holds {_layout()}")
    rows: dict[str, dict] = {}
    for number, row in json_lines(path):
        missing = [k for k in ("_id", *fields) if not isinstance(row, dict) or k not in row]
        if missing:
            raise PipelineError(f"{path} line {number} lacks {missing}; every line needs _id and {list(fields)}")
        rows[str(row["_id"])] = row
    if not rows:
        raise PipelineError(f"{path} holds no rows")
    return rows


def _layout() -> str:
    return "corpus.jsonl, queries.jsonl and qrels/train.tsv + qrels/test.tsv (qrels/dev.tsv optional)"


def _qrels(path: Path) -> list[tuple[str, str, int]]:
    """(query-id, corpus-id, score) lines of a qrels file; a first line whose score is not a number is a header."""
    judged = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise PipelineError(
                    f"{path} line {number} has {len(fields)} tab-separated field(s), not 3 "
                    "(query-id, corpus-id, score); fix or remove it"
                )
            try:
                score = int(fields[2])
            except ValueError:
                if number == 1:
                    continue  # the header: query-id  corpus-id  score
                raise PipelineError(
                    f"{path} line {number}: score {fields[2]!r} is not an integer grade; fix or remove the line"
                ) from None
            judged.append((fields[0].strip(), fields[1].strip(), score))
    return judged


def _check_ids(path: Path, judged, queries: dict, corpus: dict) -> None:
    for kind, known, column in (("query", queries, 0), ("corpus", corpus, 1)):
        unknown = sorted({line[column] for line in judged if line[column] not in known})
        if unknown:
            source = "queries.jsonl" if kind == "query" else "corpus.jsonl"
            raise PipelineError(
                f"{path} names {len(unknown)} {kind}-id(s) absent from {source}, e.g. {unknown[0]!r}; "
                f"add them to {source} or remove their qrels lines"
            )


def load_beir(folder: Path) -> tuple[list[tuple], dict[str, str], dict]:
    """(records, corpus, notes): one record per relevant (query, passage) judgment, the whole corpus."""
    if not folder.is_dir():
        raise PipelineError(f"BEIR folder {folder} does not exist; put {_layout()} there or set data.path")
    corpus_rows = _jsonl(folder / "corpus.jsonl", ("text",))
    corpus = {pid: f"{row.get('title') or ''} {row['text']}".strip() for pid, row in corpus_rows.items()}
    queries = {qid: str(row["text"]) for qid, row in _jsonl(folder / "queries.jsonl", ("text",)).items()}
    for split in ("train", "test"):
        if not (folder / "qrels" / f"{split}.tsv").is_file():
            raise PipelineError(f"BEIR folder {folder} has no qrels/{split}.tsv; training needs {_layout()}")
    relevant: dict[tuple[str, str], int] = {}  # (query, passage) -> grade
    split_of: dict[str, str] = {}
    not_relevant = 0
    for split in SPLITS:
        path = folder / "qrels" / f"{split}.tsv"
        if not path.is_file():
            continue
        judged = _qrels(path)
        _check_ids(path, judged, queries, corpus)
        for qid, pid, score in judged:
            if split_of.setdefault(qid, split) != split:
                first, later = sorted((split_of[qid], split), key=SPLITS.index)
                raise PipelineError(
                    f"query {qid!r} is judged in both qrels/{first}.tsv and qrels/{later}.tsv: a test query would be "
                    f"trained on (or dev would overlap); remove its lines from one of them"
                )
            if score > 0:
                relevant[(qid, pid)] = max(score, relevant.get((qid, pid), score))
            else:
                not_relevant += 1
    records = [
        (qid, pid, queries[qid], corpus[pid], split_of[qid], grade, ()) for (qid, pid), grade in relevant.items()
    ]
    notes = {
        "corpus_passages": len(corpus),
        "queries_without_qrels": len(set(queries) - set(split_of)),
        "qrels_not_relevant": not_relevant,
    }
    return records, corpus, notes
