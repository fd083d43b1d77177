"""What the stages print in the terminal, each report one function of the stage's results.

The numbers a stage prints are the ones it writes to metrics/*.json and logs to MLflow; only the wording is here.
"""

from __future__ import annotations

from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.sections import bytes_per_vector


def data_summary(stats: dict, details: str) -> list[str]:
    """What `prepare` says in the terminal: sizes, how the splits were drawn, what was counted, lengths."""
    rows, split = stats["rows"], stats["split"]
    lines = [
        f"{rows['train_pairs']} training pairs from {rows['train_docs']} claims; dev {rows['dev_docs']} and "
        f"test {rows['test_docs']} claims over {rows['corpus_passages']} corpus passages"
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
    lines += length_summary(stats["lengths"], details)
    return lines


def length_summary(lengths: dict, details: str) -> list[str]:
    """The max_seq_length in force, how it was chosen, and what it cuts (token counts before truncation)."""
    length = lengths["max_seq_length"]
    if lengths["setting"] == "auto":
        how = f"auto: {lengths['coverage']:.0%} of the texts fit in {lengths['needed_for_coverage']} tokens"
        how += ", capped at the model's own length" if length < lengths["needed_for_coverage"] else ", rounded up to 32"
    else:
        how = "fixed: model.max_seq_length"

    def cut(kind: str) -> str:
        s = lengths[kind]
        return f"{s['share_cut']:.0%} of {s['count']} {kind} (p50 {s['p50']}, p95 {s['p95']}, longest {s['max']})"

    lines = [f"max_seq_length {length} ({how}): cuts {cut('passages')} and {cut('queries')}; details in {details}"]
    warning = truncation_warning(lengths)
    return [*lines, warning] if warning else lines


def truncation_warning(resolved: dict) -> str | None:
    """One line when a fixed length cuts more of the passages (or queries) than the coverage allows."""
    if resolved["setting"] != "fixed":
        return None
    allowed = 1 - resolved["coverage"]
    worst = max(("passages", "queries"), key=lambda k: resolved[k].get("share_cut", 0))
    cut = resolved[worst].get("share_cut", 0)
    if cut <= allowed + 1e-9:
        return None
    return (
        f"warning: model.max_seq_length {resolved['max_seq_length']} cuts {cut:.0%} of the {worst} (p95 "
        f"{resolved[worst]['p95']} tokens, longest {resolved[worst]['max']}), more than model.length_coverage "
        f"{resolved['coverage']:g} allows; -S model.max_seq_length=auto reads them at {resolved['auto_length']}"
    )


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


def plan_report(plan: dict, rotation: dict, resume: str | None) -> list[str]:
    """What `train` says before it starts: what it chose from the data (training_plan) and why."""
    lines = []
    if rotation:
        kept = ", ".join(f"{dim_of(k)} {v:.3f}" for k, v in rotation.items() if "dim_" in k)
        lines.append(f"PCA rotation in {rotation['pca_seconds']} s; variance in the first d components: {kept}")
    passages = f" and {plan['passage_pairs']} passage pairs" if plan["passage_pairs"] else ""
    lines.append("training plan, from the data:")
    lines.append(
        f"  texts read at {plan['max_seq_length']} tokens (model.max_seq_length {plan['max_seq_length_setting']}; "
        f"{plan['passages_cut']:.0%} of the passages are longer)"
    )
    clamped = plan.get("batch_size_asked", plan["batch_size"]) != plan["batch_size"]
    batch = f"batch {plan['batch_size']}" + (
        f" (batch_size {plan['batch_size_asked']} is more than the {plan['pairs']} pairs: one batch holds them all)"
        if clamped
        else ""
    )
    lines.append(
        f"  {plan['pairs']} pairs{passages}, {batch}: {plan['steps_per_epoch']} optimizer steps "
        f"an epoch, at most {plan['max_epochs']:g} epochs ({plan['max_steps']} steps)"
        + (f" over {plan['processes']} processes" if plan["processes"] > 1 else "")
    )
    if plan["eval_steps"]:
        stop = (
            f"stops after {plan['patience']} evaluations without a better one"
            if plan["patience"]
            else "trains every epoch (train.patience null)"
        )
        every = "every step" if plan["eval_steps"] == 1 else f"every {plan['eval_steps']} steps"
        lines.append(
            f"  dev ({plan['dev_queries']} claims) {every}: keeps the best dev NDCG@10 "
            f"({_selection_name(plan['select_by'])}), {stop}"
        )
    else:
        lines.append("  no dev split: trains every epoch and keeps the last step")
    lines.append(f"  batches: {batch_line(plan)}")
    if resume:
        lines.append(f"resuming from {resume}")
    return lines


def batch_line(plan: dict) -> str:
    """What the batches let the loss push apart that the data says belong together, ours against the stock's."""
    stock, ours = plan["batches"]["no_duplicates"], plan["batches"]["relevance_aware"]

    def kinds(counts: dict) -> str:
        names = {"query_to_doc": "claim-passage", "query_to_query": "claim-claim", "doc_to_doc": "passage-passage"}
        return ", ".join(f"{counts[k]} {name}" for k, name in names.items() if k in counts) or "0"

    def rows(counts: dict) -> str:
        return f"{counts['rows']} of {counts['rows_in_all']} pairs"

    if plan["batch_sampler"] != "relevance_aware":
        return f"{plan['batch_sampler']}: first epoch {rows(stock)}, in-batch false negatives {kinds(stock)}"
    return (
        f"relevance-aware: first epoch {rows(ours)}, in-batch false negatives {kinds(ours)} (the stock no_duplicates "
        f"sampler: {rows(stock)}, {kinds(stock)})"
    )


def _selection_name(select_by) -> str:
    return {"mean": "mean over the dims", "full": "at the full dim", "smallest": "at the smallest dim"}.get(
        select_by, f"at dim {select_by}"
    )


def stopping_report(stopped: dict, measure: str) -> str:
    """What `train` says when it ends: where it stopped, why, and which checkpoint it kept."""
    where = f"step {stopped['at_step']} of {stopped['max_steps']} (epoch {stopped['at_epoch']:g})"
    if not stopped["evaluations"]:
        return f"stopped at {where}: no dev split, the last step is kept"
    why = (
        f"the dev score had not improved for {stopped['patience']} evaluations"
        if stopped["reason"] == "patience"
        else "the last epoch ended"
    )
    best = f"{stopped['best_dev']:.4f}" if stopped["best_dev"] is not None else "-"
    return (
        f"stopped at {where}: {why}; kept step {stopped['best_step']} (epoch {stopped['best_epoch']:g}), "
        f"dev {measure} {best} ({stopped['selection'].removeprefix('eval_dev_')}) after {stopped['evaluations']} "
        "evaluations"
    )


def base_scores(scores: dict[str, dict[str, float]], metric: str) -> str:
    """What `baseline` says: the base model's primary metric at each dim."""
    return "\n".join(f"{dim:>8}  {metric}={values[metric]:.4f}" for dim, values in scores.items())


def change_table(metrics: dict[str, dict], metric: str, measure: str) -> str:
    """What `evaluate` says: the primary metric by dim, base beside fine-tuned, the change and (where
    `metrics` has "noise") its 95% interval over the test queries."""
    base, finetuned, change = metrics["base"], metrics["finetuned"], metrics["change"]
    bounds = metrics.get("noise", {}).get("change_95", {})
    lines = [f"test {measure}    base  fine-tuned  change" + ("   95% interval" if bounds else "")]
    for dim in finetuned:
        row = f"{dim:>12}  {base[dim][metric]:.4f}  {finetuned[dim][metric]:10.4f}  {change[dim][metric]:+.4f}"
        if dim in bounds:
            row += f"  [{bounds[dim]['low']:+.4f}, {bounds[dim]['high']:+.4f}]"
        lines.append(row)
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
