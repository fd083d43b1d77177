"""The plot a person reads: the PNG's series and ticks, and `dvc plots show` rendering without a CDN."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

from commands import plots_offline
from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.errors import PipelineError
from tests.conftest import REPO


def package(name: str) -> bytes:
    """An npm tarball holding package/build/<name>.min.js."""
    code = f"window['{name}'] = 1; // </script> inside a library".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"package/build/{name}.min.js")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    return buffer.getvalue()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A local npm registry with the three libraries; LIBRARIES pinned to their real SHA-512."""
    root = tmp_path / "registry"
    pins = {}
    for name, pinned in plots_offline.LIBRARIES.items():
        version = pinned.split()[0]
        data = package(name)
        (root / name / "-").mkdir(parents=True)
        (root / name / "-" / f"{name}-{version}.tgz").write_bytes(data)
        pins[name] = f"{version} {base64.b64encode(hashlib.sha512(data).digest()).decode()}"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(plots_offline, "REGISTRY", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(plots_offline, "LIBRARIES", pins)
    yield pins
    server.shutdown()


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    return repo


def test_offline_template_inlines_the_chart_library(registry, dvc_repo):
    plots_offline.main()
    page = (dvc_repo / ".dvc/plots/offline.html").read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN scripts are never inserted
    assert all(f"window['{name}'] = 1; // <\\/script>" in page for name in registry)  # inline, still valid HTML
    config = (dvc_repo / ".dvc/config.local").read_text()
    assert "html_template = plots/offline.html" in config  # relative to .dvc/, as DVC reads it


def test_a_tampered_library_is_refused(registry, dvc_repo, monkeypatch):
    version = registry["vega"].split()[0]
    monkeypatch.setitem(plots_offline.LIBRARIES, "vega", f"{version} {base64.b64encode(b'0' * 64).decode()}")
    with pytest.raises(PipelineError, match="is not the registry's"):
        plots_offline.main()
    assert not (dvc_repo / ".dvc/plots/offline.html").exists()


def test_the_png_has_the_models_dims_as_ticks_and_a_gain_panel(tmp_path):
    import matplotlib.pyplot as plt

    from medical_matryoshka.core.sections import EvalConfig, read_section
    from medical_matryoshka.plots import STYLE, draw, metric_by_dim, write_plots

    cfg = read_section(EvalConfig, yaml.safe_load((REPO / "params.yaml").read_text()), "eval")
    metric = cfg.primary_metric
    table = lambda values: {dim_key(d): {metric: v} for d, v in values.items()}  # noqa: E731
    tables = {
        "card_base": table({768: 0.41, 64: 0.34}),
        "card_finetuned": table({768: 0.53, 64: 0.53}),
        "base": table({384: 0.88, 32: 0.64}),
        "finetuned": table({384: 0.89, 32: 0.78}),
    }
    series = metric_by_dim(tables, metric)
    write_plots(tmp_path, series, cfg)
    assert (tmp_path / "ndcg_by_dim/finetuned.csv").read_text() == "dim,ndcg_at_10\n384,0.890000\n32,0.780000\n"
    assert (tmp_path / "ndcg_by_dim.png").stat().st_size > 0
    fig = draw(series, cfg, title="civil-razz lr=3e-05")
    by_dim, gains = fig.axes
    assert [t.get_text() for t in by_dim.get_xticklabels()] == ["32", "64", "384", "768"]
    assert len({line.get_color() for line in by_dim.get_lines()}) == 4 == len({m["marker"] for m in STYLE.values()})
    lines = {line.get_label(): line.get_ydata() for line in gains.get_lines() if not line.get_label().startswith("_")}
    assert list(lines["this run: fine-tuned - base"]) == pytest.approx([0.01, 0.14])
    assert list(lines["card: fine-tuned - base"]) == pytest.approx([0.12, 0.19])
    assert fig._suptitle.get_text() == "civil-razz lr=3e-05"
    plt.close(fig)
