"""Load raw relevance records from PubMedQA PQA-L, a BEIR folder, a local pairs file or a Hugging Face dataset.

Every source becomes one table of (query, relevant passage) judgments: doc_id (the query), passage_id,
anchor (the query's text), positive (the passage's text), split ("train"/"dev"/"test" where the source has
an official split, else None), score (the relevance grade, > 0) and negatives (given negative texts, a
tuple, usually empty). Many-to-many is normal: a query holds every passage linked to it, a passage may
serve several queries. A source with a fixed corpus (BEIR) also returns it: the test set searches it whole.
A new source is one loader function, registered in SOURCES (data.source in params.yaml picks it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medical_matryoshka.core.digests import sha256_of
from medical_matryoshka.core.errors import PipelineError, first_line
from medical_matryoshka.data.beir import json_lines
from medical_matryoshka.data.leakage import normalise

if TYPE_CHECKING:
    from medical_matryoshka.core.sections import DataConfig

RECORD_COLUMNS = ["doc_id", "passage_id", "anchor", "positive", "split", "score", "negatives"]
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
FETCH_HINT = "fetch it with `python -m commands.fetch_raw` (offline: `python -m commands.fetch_raw --from DIR`)"


@dataclasses.dataclass(frozen=True)
class SourceData:
    """A source's relevance records and, for a source with a fixed corpus (BEIR), that whole corpus."""

    records: pd.DataFrame
    corpus: dict[str, str] | None = None  # passage id -> text; None: the corpus is the records' passages
    notes: dict = dataclasses.field(default_factory=dict)  # what loading found (counts for metrics/data.json)

    @property
    def official_split(self) -> bool:
        return bool(self.records["split"].notna().any())


def verify_raw_files(cfg: DataConfig) -> None:
    """Every file listed in data.files exists under data.path with its published sha256."""
    folder = Path(cfg.path)
    for name, spec in cfg.files.items():
        path = folder / name
        if not path.is_file():
            raise PipelineError(f"raw file {path} is missing; {FETCH_HINT}")
        actual = sha256_of(path)
        if actual != spec["sha256"]:
            raise PipelineError(
                f"raw file {path} is corrupt or a different version (sha256 {actual[:12]}..., expected "
                f"{spec['sha256'][:12]}...); fetch it again with `python -m commands.fetch_raw`"
            )


def load_pubmedqa(cfg: DataConfig) -> SourceData:
    """PQA-L: anchor = LONG_ANSWER, one positive per CONTEXT; the official test ids are marked "test".

    Passages keep the source's identity (abstract id + context number), one abstract per question."""
    verify_raw_files(cfg)
    folder = Path(cfg.path)
    try:
        entries = json.loads((folder / "ori_pqal.json").read_text(encoding="utf-8"))
        test_ids = set(json.loads((folder / "test_ground_truth.json").read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PipelineError(f"raw PubMedQA files under {folder} are not valid JSON ({err}); fetch them again") from None
    rows = []
    for pmid, entry in entries.items():
        missing = {"LONG_ANSWER", "CONTEXTS"} - set(entry)
        if missing:
            raise PipelineError(f"PubMedQA entry {pmid} lacks {sorted(missing)}; fetch the raw files again")
        split = "test" if pmid in test_ids else None
        for i, context in enumerate(entry["CONTEXTS"]):
            rows.append((pmid, f"{pmid}-{i}", entry["LONG_ANSWER"], context, split, 1, ()))
    return SourceData(pd.DataFrame(rows, columns=RECORD_COLUMNS))


def _text_id(text: str) -> str:
    """A stable id for a text: the same after normalising case and spaces, the same id."""
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()[:16]


def _negatives_of(frame: pd.DataFrame, columns: list[str], origin: str) -> list[tuple[str, ...]]:
    """Each row's given negatives: cells that are a text, a list of texts, or empty (no negative)."""

    def texts(value, row: int, column: str) -> list[str]:
        if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
            return []
        values = [value] if isinstance(value, str) else list(value) if hasattr(value, "__iter__") else [value]
        for v in values:
            if not isinstance(v, str):
                raise PipelineError(
                    f"{origin} row {row + 1}: column '{column}' holds {type(v).__name__} {str(v)[:40]!r}, not "
                    "text; a negative cell must be a text, a list of texts or empty"
                )
        return [v for v in values if v.strip()]

    out = []
    for row in range(len(frame)):
        found = [t for c in columns for t in texts(frame[c].iloc[row], row, c)]
        out.append(tuple(dict.fromkeys(found)))
    return out


def require_filled(pairs: pd.DataFrame, names: dict[str, str], origin: str, shown: int = 5) -> None:
    """No empty claim or passage cell: one line with how many rows have one, the first few row numbers (data rows
    counted from 1, the header not counted) and the user's column names."""

    def blank(value) -> bool:
        return (pd.api.types.is_scalar(value) and pd.isna(value)) or (isinstance(value, str) and not value.strip())

    empty = {c: [blank(v) for v in pairs[c]] for c in names}
    rows = [i for i in range(len(pairs)) if any(empty[c][i] for c in names)]
    if not rows:
        return
    first = ", ".join(f"{i + 1} ({'/'.join(names[c] for c in names if empty[c][i])})" for i in rows[:shown])
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    raise PipelineError(
        f"{origin}: {len(rows)} row(s) have an empty '{names['anchor']}' or '{names['positive']}' cell: rows {first}"
        f"{more} (data rows counted from 1, the header not counted); fill them in or remove those rows, then rerun"
    )


def pairs_to_records(frame: pd.DataFrame, cfg: DataConfig, origin: str) -> SourceData:
    """Map the configured columns of a pairs table to records, many-to-many.

    A query is one anchor text and a passage one positive text (after normalising case and spaces), however
    many rows name them: a repeated (anchor, positive) row collapses into one record (its negatives merged).
    """
    anchor_col, positive_col = cfg.columns["anchor"], cfg.columns["positive"]
    wanted = [anchor_col, positive_col, *cfg.negative_columns]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"{origin} has no column(s) {missing} (it has {list(frame.columns)}); map yours with "
            "-S data.columns.anchor=NAME -S data.columns.positive=NAME [-S data.columns.negative=NAME]"
        )
    pairs = frame[[anchor_col, positive_col]].rename(columns={anchor_col: "anchor", positive_col: "positive"})
    require_filled(pairs, {"anchor": anchor_col, "positive": positive_col}, origin)
    for column, source in (("anchor", anchor_col), ("positive", positive_col)):
        not_text = pairs.index[[not isinstance(v, str) for v in pairs[column]]]
        if len(not_text):
            row = not_text[0]
            raise PipelineError(
                f"{origin} row {row + 1}: column '{source}' holds {type(pairs.at[row, column]).__name__} "
                f"{str(pairs.at[row, column])[:40]!r}, not text ({len(not_text)} row(s) like it); "
                "every anchor and positive must be a string"
            )
    pairs["negatives"] = _negatives_of(frame, cfg.negative_columns, origin)
    pairs["doc_id"] = [_text_id(a) for a in pairs["anchor"]]
    pairs["passage_id"] = [_text_id(p) for p in pairs["positive"]]
    for column, key in (("anchor", "doc_id"), ("positive", "passage_id")):  # one spelling a text: the first
        pairs[column] = pairs.groupby(key, sort=False)[column].transform("first")
    pairs["split"] = None
    pairs["score"] = 1
    records = (
        pairs.groupby(["doc_id", "passage_id"], sort=False)
        .agg(
            anchor=("anchor", "first"),
            positive=("positive", "first"),
            split=("split", "first"),
            score=("score", "first"),
            negatives=("negatives", lambda ns: tuple(dict.fromkeys(n for row in ns for n in row))),
        )
        .reset_index()
    )
    notes = {"rows_read": len(pairs), "rows_collapsed": len(pairs) - len(records)}
    return SourceData(records[RECORD_COLUMNS], notes=notes)


def require_utf8(path: Path) -> None:
    """Text data must be UTF-8: otherwise one line naming the first bad byte and its line."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PipelineError(
            f"data file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
            f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def require_json_lines(path: Path) -> None:
    """Every non-empty line of a pairs jsonl file is one JSON object."""
    for number, row in json_lines(path):
        if not isinstance(row, dict):
            raise PipelineError(
                f"data file {path} line {number} holds a JSON {type(row).__name__}, not an object; write one "
                '{"anchor": ..., "positive": ...} object a line'
            )


CSV_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def sniff_delimiter(path: Path, sample_bytes: int = 1 << 16) -> str:
    """The delimiter of a csv file: the candidate (comma, semicolon, tab, pipe) that splits the header into the
    most columns while nine in ten sampled rows have as many (a broken row then fails with this delimiter named).
    Spreadsheets in much of Europe write semicolons."""
    import csv
    import io

    text = path.read_text(encoding="utf-8")[:sample_bytes]
    if len(text) == sample_bytes and "\n" in text:
        text = text[: text.rindex("\n")]  # whole lines only
    best, best_width = ",", 1
    for delimiter in CSV_DELIMITERS:
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
        width = len(rows[0]) if rows else 0
        matching = sum(len(r) == width for r in rows[1:]) / max(len(rows) - 1, 1)
        if width > best_width and matching >= 0.9:
            best, best_width = delimiter, width
    return best


def csv_delimiter(cfg: DataConfig, path: Path) -> str:
    """data.csv_sep, or the sniffed delimiter where it is auto."""
    return sniff_delimiter(path) if cfg.csv_sep == "auto" else cfg.csv_sep


def require_unique_columns(path: Path, delimiter: str = ",") -> None:
    """A csv header naming a column twice is an error (the reader would silently keep one of them)."""
    import csv
    from collections import Counter

    with path.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter), [])
    twice = sorted(name for name, n in Counter(h.strip() for h in header).items() if n > 1)
    if twice:
        raise PipelineError(
            f"data file {path}: its header names column {twice[0]!r} more than once; rename or remove the "
            "duplicate so each column has one meaning"
        )


@contextlib.contextmanager
def _reader_errors_unlogged(fmt: str):
    """datasets logs a reader's failure ("Failed to read file ...") before raising it; the raise is kept."""
    import logging

    logger = logging.getLogger(f"datasets.packaged_modules.{fmt}.{fmt}")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_pairs_file(cfg: DataConfig) -> SourceData:
    """A local jsonl/csv/parquet file of pairs, read with `datasets`; with data.test_path, a second file of the
    same shape is the test split (official: everything else trains, less dev) and its claims get ids of their own,
    so a claim in both files is a leak that prepare's leakage check stops (or drops: data.leaked_queries)."""
    data = read_pairs_file(cfg, Path(cfg.path), "data.path")
    if not cfg.test_path:
        return data
    test = read_pairs_file(cfg, Path(cfg.test_path), "data.test_path")
    held_out = test.records.assign(doc_id="test:" + test.records["doc_id"], split="test")
    notes = {**data.notes, **{f"test_{k}": v for k, v in test.notes.items()}}
    return SourceData(pd.concat([data.records, held_out], ignore_index=True), notes=notes)


def read_pairs_file(cfg: DataConfig, path: Path, key: str) -> SourceData:
    """One pairs file (`key` names the setting that points at it)."""
    from datasets import load_dataset

    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PipelineError(f"{key} {path} must end in one of {', '.join(FILE_FORMATS)}")
    if not path.is_file():
        raise PipelineError(f"data file {path} does not exist; put your pairs there or set {key}")
    if path.stat().st_size == 0:
        raise PipelineError(f"data file {path} is empty (0 bytes); write your pairs into it or set {key}")
    if fmt != "parquet":
        require_utf8(path)
    if path.suffix.lower() == ".jsonl":
        require_json_lines(path)
    options, how = {}, ""
    if fmt == "csv":
        options["sep"] = csv_delimiter(cfg, path)
        sniffed = "sniffed" if cfg.csv_sep == "auto" else "data.csv_sep"
        how = f" with {CSV_DELIMITERS.get(options['sep'], repr(options['sep']))} delimiters ({sniffed})"
        require_unique_columns(path, options["sep"])
    try:
        with _reader_errors_unlogged(fmt):  # its error is our one line below, not a second copy first
            frame = load_dataset(fmt, data_files=str(path), split="train", **options).to_pandas()
    except Exception as err:
        cause = err.__cause__ or err.__context__ or err  # datasets wraps the reader's own error
        fix = "; set the delimiter with -S 'data.csv_sep=;' (or , tab |)" if fmt == "csv" else ""
        raise PipelineError(f"cannot read {path} as {fmt}{how}: {first_line(cause)}{fix}") from None
    return pairs_to_records(frame, cfg, f"{path}{how}" if fmt == "csv" and options["sep"] != "," else str(path))


def load_hf_pairs(cfg: DataConfig) -> SourceData:
    """A Hugging Face dataset of pairs (the model card's own format: anchor/positive columns)."""
    from datasets import load_dataset

    try:
        ds = load_dataset(cfg.path, split=cfg.hf_split, revision=cfg.hf_revision)
    except Exception as err:
        raise PipelineError(
            f"cannot load Hugging Face dataset '{cfg.path}' (split {cfg.hf_split}): {str(err).splitlines()[0]}; "
            "check the id and your hub access, or download it and use data.source=file"
        ) from None
    return pairs_to_records(ds.to_pandas(), cfg, f"dataset {cfg.path}")


def load_beir_folder(cfg: DataConfig) -> SourceData:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), verified where data.files lists it."""
    from medical_matryoshka.data.beir import load_beir

    verify_raw_files(cfg)
    records, corpus, notes = load_beir(Path(cfg.path))
    return SourceData(pd.DataFrame(records, columns=RECORD_COLUMNS), corpus, notes)


# data.source -> loader: the one place a data source is registered.
SOURCES: dict[str, Callable[[DataConfig], SourceData]] = {
    "pubmedqa": load_pubmedqa,
    "beir": load_beir_folder,
    "hf": load_hf_pairs,
    "file": load_pairs_file,
}


def require_tracked(cfg: DataConfig, raw: str) -> None:
    """Local data must lie under paths.raw and be what dvc.yaml's `prepare` watches (data.watch): DVC hashes
    nothing else, so data elsewhere could change without rerunning the pipeline (a stale model)."""
    if cfg.source == "hf":
        return  # a hub dataset: pinned by data.hf_revision instead
    if not Path(cfg.path).resolve().is_relative_to(Path(raw).resolve()):
        name = Path(cfg.path).name
        if Path(cfg.path).absolute().is_relative_to(Path(raw).absolute()):  # a link under raw/ to data elsewhere
            target = Path(cfg.path).resolve()
            raise PipelineError(
                f"data.path {cfg.path} is a link to {target}, outside {raw}/, the folder DVC tracks for prepare, "
                f"so a change there would go unseen; replace the link by a copy: "
                f"cp --remove-destination {target} {cfg.path}"
            )
        raise PipelineError(
            f"data.path {cfg.path} is outside {raw}/, the folder DVC tracks for prepare, so a change to it would "
            f"go unseen; copy it there (cp {cfg.path} {raw}/{name}) and use -S data.path={raw}/{name}"
        )
    if cfg.test_path:
        require_held_out_tracked(cfg, raw)
    if not Path(cfg.path).resolve().is_relative_to(Path(cfg.watch).resolve()):
        raise PipelineError(
            f"data.watch {cfg.watch} does not hold data.path {cfg.path}, so DVC would not rerun prepare when the "
            f"data changes; leave data.watch at its default (the data path) or set -S data.watch={cfg.path}"
        )


FOLDER_SOURCES = {"pubmedqa": "PubMedQA's files", "beir": "a BEIR folder: corpus.jsonl, queries.jsonl, qrels/"}


def check_path_kind(cfg: DataConfig) -> None:
    """A pairs file given to a folder source (`-S data.path=my.jsonl` without `-S data=pairs`), or a folder to
    the file source, is one line naming the profile that reads it, not a missing-file error about another set."""
    path = Path(cfg.path)
    is_file = path.is_file() or (not path.exists() and path.suffix.lower() in FILE_FORMATS)
    if cfg.source in FOLDER_SOURCES and is_file:
        raise PipelineError(
            f"data.path {cfg.path} is a file, but the data profile is {cfg.source} (data.source {cfg.source} reads "
            f"{FOLDER_SOURCES[cfg.source]}); for your own pairs file choose the pairs profile too: dvc exp run "
            f"-S data=pairs -S data.path={cfg.path} [-S data.columns.anchor=... -S data.columns.positive=...]"
        )
    if cfg.source == "file" and path.is_dir():
        raise PipelineError(
            f"data.path {cfg.path} is a folder, but the data profile reads one pairs file (jsonl, csv or parquet); for "
            f"a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) use dvc exp run -S data=beir -S data.path={cfg.path}"
        )


def require_held_out_tracked(cfg: DataConfig, raw: str) -> None:
    """data.test_path: a pairs source's, under paths.raw, and watched by DVC (data.test_watch) like data.path."""
    if cfg.source != "file":
        raise PipelineError(
            f"data.test_path is for a pairs file (data.source file), not {cfg.source}: a BEIR folder names its test "
            "split in qrels/test.tsv, PubMedQA has its official one; remove -S data.test_path"
        )
    test = Path(cfg.test_path)
    if not test.resolve().is_relative_to(Path(raw).resolve()):
        raise PipelineError(
            f"data.test_path {test} is outside {raw}/, the folder DVC tracks for prepare; copy it there (cp {test} "
            f"{raw}/{test.name}) and use -S data.test_path={raw}/{test.name} -S data.test_watch={raw}/{test.name}"
        )
    watched = [Path(w).resolve() for w in (cfg.watch, cfg.test_watch)]
    if not any(test.resolve().is_relative_to(w) for w in watched):
        raise PipelineError(
            f"data.test_path {test} is not what DVC watches for prepare (data.watch {cfg.watch}, data.test_watch "
            f"{cfg.test_watch}), so a change to it would not rerun prepare; add -S data.test_watch={test}"
        )


def load_source(cfg: DataConfig) -> SourceData:
    """The records (and fixed corpus, if any) of the configured source."""
    if cfg.source not in SOURCES:
        raise PipelineError(f"params.yaml: data.source must be one of {', '.join(SOURCES)}, got {cfg.source!r}")
    check_path_kind(cfg)
    data = SOURCES[cfg.source](cfg)
    if data.records.empty:
        raise PipelineError(f"data source {cfg.path} holds no (anchor, positive) pairs")
    return data


def load_records(cfg: DataConfig) -> pd.DataFrame:
    """The relevance records of the configured source."""
    return load_source(cfg).records
