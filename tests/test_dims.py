"""A dimension's names (core/dims.py): every form the metrics files, MLflow and `dvc exp show` use reads back."""

import pytest

from medical_matryoshka.core.dims import dim_key, dim_label, dim_of, is_label


@pytest.mark.parametrize("dim", [32, 384, 768, 1024])
def test_every_name_reads_back_as_its_dim(dim):
    assert dim_of(dim_key(dim)) == dim_of(dim_label(dim)) == dim_of(f"pca_variance_{dim_key(dim)}") == dim
    assert dim_label(dim_key(dim)) == dim_label(dim) and is_label(dim_label(dim)) and not is_label(dim_key(dim))


def test_labels_sort_by_size_and_a_foreign_name_is_refused():
    assert sorted(dim_label(d) for d in (384, 32, 1024, 64)) == ["d0032", "d0064", "d0384", "d1024"]
    with pytest.raises(ValueError, match="not a dimension's name: 'ndcg10'"):
        dim_of("ndcg10")
