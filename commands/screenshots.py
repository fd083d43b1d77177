"""Regenerate the docs' pictures (docs/images/): the MLflow UI comparing a sweep's runs, and `dvc plots show`'s page.

    python -m commands.screenshots            # the 3 latest pipeline runs (parents) side by side
    python -m commands.screenshots --runs 5   # or more

Needs Chromium (Debian: `apt-get install chromium`) and Playwright to drive it (`pip install -e ".[docs]"`;
it uses the system Chromium, nothing is downloaded). Starts `mlflow ui` on 127.0.0.1 with this repository's
tracking store (or uses $MLFLOW_TRACKING_URI's server), opens the comparison of the latest finished pipeline
runs with "Show diff only" on for params and metrics, and writes docs/images/mlflow_compare.png, then the
runs table as the link `evaluate` prints opens it (docs/images/mlflow_runs_table.png), then
docs/images/dvc_plots.png from `dvc plots show`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError, run_main
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import TrackingConfig, read_section
from medical_matryoshka.core.tracking.identity import PIPELINE_TAG
from medical_matryoshka.core.tracking.run import runs_table_page
from medical_matryoshka.core.tracking.store import tracking_uri
from medical_matryoshka.team.server import serve_mlflow

OUT = Path("docs/images")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise PipelineError("Chromium not found; install it (Debian: apt-get install chromium) and rerun")


# The metrics table is a virtualized grid in a fixed-height box that draws only some rows at once (MLflow 3.17
# draws about 17; its number is fixed in code, not read from the box): give the box, and any wrapper of the
# same height, the height of the rows drawn, so the picture shows them all and no blank below; return the
# page's height.
UNFOLD = """
for (const inner of document.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer')) {
  const grid = inner.parentElement, fixed = grid.clientHeight;
  const drawn = Math.max(...Array.from(inner.children, c => c.offsetTop + c.offsetHeight), fixed);
  for (let e = grid; e && e.tagName !== 'MAIN'; e = e.parentElement) {
    if (e.clientHeight === fixed) e.style.height = drawn + 'px';
  }
}
document.querySelector('main').scrollHeight
"""


@contextmanager
def browser():
    """A headless page in the system Chromium, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PipelineError('Playwright is not installed; pip install -e ".[docs]" and rerun') from None
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chrome.new_page(viewport={"width": 1400, "height": 900})
        finally:
            chrome.close()


def compare_view(page, url: str, image: Path) -> None:
    """MLflow's run comparison with only what differs between the runs: the swept params, the metrics."""
    page.goto(url)
    page.get_by_label("Parameters - Show diff only").wait_for(timeout=120_000)
    for label in ("Close", "Toggle sidebar"):  # the assistant panel and the navigation: room for the tables
        if page.get_by_label(label).count():
            page.get_by_label(label).first.click()
    page.get_by_text("Visualizations", exact=True).first.click()  # folds the parallel-coordinates plot
    for label in ("Parameters - Show diff only", "Metrics - Show diff only"):
        page.get_by_label(label).click()
    page.wait_for_timeout(1000)
    page.set_viewport_size({"width": 1400, "height": min(page.evaluate(UNFOLD) + 40, 5000)})  # the whole page
    page.wait_for_timeout(1000)
    page.screenshot(path=str(image))
    print(f"wrote {image}")


def runs_table(page, url: str, image: Path) -> None:
    """The runs table as the link `evaluate` prints opens it in a fresh browser: the shared view's columns."""
    page.goto(url)
    page.get_by_text("shared view").first.wait_for(timeout=120_000)
    page.wait_for_timeout(3000)  # the grid fills in after the view is applied
    if page.get_by_label("Close").count():  # the assistant panel: room for the columns
        page.get_by_label("Close").first.click()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(image))
    print(f"wrote {image}")


def plots_page(page, html: Path, image: Path) -> None:
    page.goto(html.resolve().as_uri())
    page.locator("canvas, svg").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(image), clip={"x": 0, "y": 0, "width": 1100, "height": 440})
    print(f"wrote {image}")


def sweep_parents(uri: str, experiment: str, count: int) -> tuple[str, list[str]]:
    """The experiment's id and its `count` latest finished pipeline (parent) runs. An experiment whose params
    an earlier run had is restored from DVC's run cache and runs no stage, so it adds no run: the earlier
    run (a `dvc repro` of the committed params, say) stands for it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise PipelineError(
            f"no MLflow experiment '{experiment}' in {uri}; run a sweep first (docs/reading-results.md)"
        )
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.{PIPELINE_TAG} LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=count,
    )
    if len(runs) < 2:
        raise PipelineError(f"{len(runs)} finished pipeline runs in '{experiment}'; a comparison needs 2 or more")
    return exp.experiment_id, [r.info.run_id for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="how many of the latest experiments to compare")
    args = parser.parse_args()
    chromium()
    OUT.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri()
    experiment = read_section(TrackingConfig, load_params(), "tracking").experiment
    exp_id, run_ids = sweep_parents(uri, experiment, args.runs)
    remote = uri.startswith(("http://", "https://"))
    server, base = (None, uri.rstrip("/")) if remote else serve_mlflow("ui", "--backend-store-uri", uri)
    try:
        query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
        with browser() as page:
            compare_view(page, f"{base}/#/compare-runs?{query}", OUT / "mlflow_compare.png")
        with browser() as page:
            runs_table(page, f"{base}/{runs_table_page(exp_id)}", OUT / "mlflow_runs_table.png")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    with tempfile.TemporaryDirectory() as folder, browser() as page:
        subprocess.run(["dvc", "plots", "show", "-o", folder], check=True, capture_output=True)
        plots_page(page, Path(folder, "index.html"), OUT / "dvc_plots.png")


if __name__ == "__main__":
    run_main(main)
