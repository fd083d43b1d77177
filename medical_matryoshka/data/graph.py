"""The claim-passage graph: queries and passages linked by relevance, and its connected components.

Two queries that share a passage, and two passages that share a query, are in one component; a split drawn
by whole components can never put a passage in two splits. Boilerplate passages ("None.") link nothing:
they are not information, and would otherwise join unrelated claims into one hub.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medical_matryoshka.data.leakage import is_boilerplate


def query_components(records: pd.DataFrame, boilerplate_max_words: int) -> pd.Series:
    """doc_id -> component label (the smallest doc_id in it), over the records' query-passage links."""
    queries = sorted(records["doc_id"].unique())
    links = records[~records["positive"].map(lambda t: is_boilerplate(t, boilerplate_max_words))]
    passages = sorted(links["passage_id"].unique())
    q_index = {q: i for i, q in enumerate(queries)}
    p_index = {p: len(queries) + i for i, p in enumerate(passages)}
    rows = [q_index[q] for q in links["doc_id"]]
    cols = [p_index[p] for p in links["passage_id"]]
    size = len(queries) + len(passages)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    label_of = pd.Series(labels[: len(queries)], index=queries)
    name = label_of.reset_index().groupby(0)["index"].min()  # a component is named by its smallest query id
    return label_of.map(name)


def component_report(records: pd.DataFrame, components: pd.Series) -> dict[str, int]:
    """How the graph falls apart: components, and the largest one's queries and rows."""
    rows = records["doc_id"].map(components).value_counts()
    queries = components.value_counts()
    return {
        "count": int(components.nunique()),
        "largest_queries": int(queries.max()),
        "largest_rows": int(rows.max()),
        "singletons": int((queries == 1).sum()),
    }
