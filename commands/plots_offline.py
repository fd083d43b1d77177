"""Make `dvc plots show` work without internet: an HTML template with the chart library inside.

    python -m commands.plots_offline   # setup.sh runs it; then: dvc plots show && open dvc_plots/index.html

DVC's page loads vega, vega-lite and vega-embed from a CDN, so offline it shows no chart. This fetches the
same versions from the npm registry (checked against the registry's SHA-512), writes a page template with
them inline to .dvc/plots/offline.html (git-ignored: .dvc/plots/) and points this clone's DVC at it
(`dvc config --local plots.html_template`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import tarfile
import urllib.request
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError, run_main

# The versions dvc-render's page uses, each with the SHA-512 the npm registry publishes for its tarball.
LIBRARIES = {
    "vega": "5.20.2 qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    "vega-lite": "5.2.0 Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    "vega-embed": "6.18.2 wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
}
REGISTRY = "https://registry.npmjs.org"
TEMPLATE = Path(".dvc/plots/offline.html")
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
SCRIPTS
    <style>body {font-family: sans-serif;} table {border-spacing: 15px;}</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(name: str, version: str, integrity: str) -> str:
    """build/<name>.min.js from the package's npm tarball, its SHA-512 checked."""
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as err:
        raise PipelineError(f"cannot download {url} ({err}); the npm registry must be reachable") from None
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise PipelineError(f"{url}: SHA-512 {digest} is not the registry's {integrity}; not used")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(f"package/build/{name}.min.js")
        if member is None:
            raise PipelineError(f"{url} has no build/{name}.min.js")
        return member.read().decode("utf-8")


def main() -> None:
    scripts = []
    for name, pinned in LIBRARIES.items():
        version, integrity = pinned.split()
        code = fetch(name, version, integrity).replace("</script", "<\\/script")
        scripts.append(f"    <script>/* {name}@{version} from {REGISTRY} */\n{code}\n    </script>")
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TEMPLATE.with_suffix(".tmp")
    tmp.write_text(PAGE.replace("SCRIPTS", "\n".join(scripts)), encoding="utf-8")
    tmp.replace(TEMPLATE)
    # DVC reads a relative path in its config relative to .dvc/
    subprocess.run(["dvc", "config", "--local", "plots.html_template", str(TEMPLATE.relative_to(".dvc"))], check=True)
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB); `dvc plots show` now renders offline")


if __name__ == "__main__":
    run_main(main)
