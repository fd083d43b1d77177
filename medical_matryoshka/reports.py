"""What the stages print in the terminal, each report one function of the stage's results.

The numbers a stage prints are the ones it writes to metrics/*.json and logs to MLflow; only the wording is here.
"""

from __future__ import annotations

from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.sections import bytes_per_vector


def data_summary(stats: dict, max_seq_length: int, details: str) -> list[str]:
    """What `prepare` says in the terminal: sizes, how the splits were drawn, what was counted, tokens."""
    rows, tokens, split = stats["rows"], stats["tokens"], stats["split"]
    lines = [
        f"{rows['train_pairs']} training pairs from {rows['train_docs']} documents; dev {rows['dev_docs']} and "
        f"test {rows['test_docs']} documents over {rows['corpus_passages']} corpus passages"
    ]
    how = f"split: test {split['test']}, dev {split['dev']}"
    if "graph" in split:
        graph = split["graph"]
        largest = f"the largest {graph['largest_queries']} queries / {graph['largest_rows']} rows"
        how += f" ({graph['count']} components, {largest})"
    if stats["source"].get("rows_collapsed"):
        how += f"; {stats['source']['rows_collapsed']} repeated rows collapsed"
    lines.append(how)
    if split["leaked_queries_dropped"]:
        lines.append(
            f"dropped {split['leaked_queries_dropped']} train/dev query(ies) repeating a test query word for word "
            "(data.leaked_queries=drop), counted as split.leaked_queries_dropped"
        )
    if split["shared_test_passages"]:
        lines.append(
            f"{split['shared_test_passages']} test passage(s) are also train/dev positives: allowed over a shared "
            "corpus (only test queries must be unseen), counted as split.shared_test_passages"
        )
    if "negatives" in stats:
        n = stats["negatives"]
        lines.append(
            f"given negatives: {n['given']} read, {n['false_negatives_dropped']} false negatives dropped (a positive "
            f"of their own query), {n['test_passages_dropped']} test passages dropped"
        )
    lines.append(
        f"tokens per text (max {max_seq_length}): anchor mean {tokens['anchor']['mean']}, positive mean "
        f"{tokens['positive']['mean']}; details in {details}"
    )
    return lines


def mining_summary(stats: dict, negatives: int, rows: int, details: str) -> str:
    """What `mine` says: how many negatives each pair got, mined or given, and their mean cosine."""
    if stats["enabled"]:
        given = f" ({stats['given_negatives_used']} given kept)" if "given_negatives_used" in stats else ""
        mean = stats["negative_score"].get("mean", "-")
        return (
            f"{negatives} negative(s) for {stats['rows_out']} of {stats['rows_in']} pairs{given}; mean "
            f"cosine of the mined ones: positive {stats['positive_score']['mean']}, negative {mean}; "
            f"details in {details}"
        )
    if "given_negatives_used" in stats:
        return (
            f"mining off (mining.enabled=false): {rows} pairs go on with {negatives} given "
            f"negative(s) each; {stats['given_negatives_unused']} given beyond what every row has are not used "
            "(-S mining.enabled=true mines the rest for every row instead)"
        )
    return f"mining off (mining.enabled=false): {rows} pairs go on without negatives"


def base_scores(scores: dict[str, dict[str, float]], metric: str) -> str:
    """What `baseline` says: the base model's primary metric at each dim."""
    return "\n".join(f"{dim:>8}  {metric}={values[metric]:.4f}" for dim, values in scores.items())


def change_table(metrics: dict[str, dict], metric: str, measure: str) -> str:
    """What `evaluate` says: the primary metric by dim, base beside fine-tuned and the change."""
    base, finetuned, change = metrics["base"], metrics["finetuned"], metrics["change"]
    lines = [f"test {measure}    base  fine-tuned  change"]
    for dim in finetuned:
        lines.append(f"{dim:>12}  {base[dim][metric]:.4f}  {finetuned[dim][metric]:10.4f}  {change[dim][metric]:+.4f}")
    return "\n".join(lines)


def frontier_table(values: dict[str, dict[str, float]], measure: str, title: str) -> str:
    """The frontier as the terminal shows it: a row per dim, a column per precision, bytes per vector beside."""
    precisions = list(next(iter(values.values())))
    lines = [f"{title}: test {measure} by dim and precision (bytes per vector)"]
    lines.append("  dim" + "".join(f"{p:>18}" for p in precisions))
    for dim, row in values.items():
        cells = (f"{row[p]:.4f} ({bytes_per_vector(dim_of(dim), p)})" for p in precisions)
        lines.append(f"{dim_of(dim):>5}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def export_summary(folder: str, runtime: str, weights: str, precision: str, metrics: dict) -> str:
    """What `export` says: the route, its size and how far its vectors are from torch float32's."""
    measured = metrics["agreement"]
    alone, padded = measured["alone_vs_batched_max_cosine_distance"], measured["padded_max_cosine_distance"]
    return (
        f"exported {folder}: {runtime} {weights} ({precision} on this CPU), "
        f"{metrics['model_mb']} MB; 1 - cos against torch float32 on {measured['texts']} texts: "
        f"{measured['max_cosine_distance']:.2e} (alone vs batched {alone:.2e}, "
        f"padded to 31/32/33 tokens {padded:.2e})"
    )


def worst_change(change: dict[str, dict[str, float]]) -> str:
    """The export's worst NDCG@10 change against torch over every dim and precision."""
    worst = min(v for row in change.values() for v in row.values())
    return f"NDCG@10 change against torch, the worst of every dim and precision: {worst:+.4f}"
