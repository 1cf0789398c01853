"""`dvc plots show` makes a page that draws offline (.dvc/config: plots.html_template).

DVC's own page loads Vega, Vega-Lite and vega-embed from cdn.jsdelivr.net, so with no internet
every Vega plot is blank. The project's template (.dvc/plots/offline.html, made by
.dvc/plots/build_offline_html.py) inlines the same versions instead.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_FILES, REPO_ROOT, dvc, run_cmd

# Each bundle's own code: the line that defines its global and the version it reports.
BUNDLE_MARKERS = {
    "vega": (".vega={}", 'var e="{version}"'),
    "vega-lite": (".vegaLite={}", 'var n="{version}"'),
    "vega-embed": (".vegaEmbed=", ""),
}
HISTORY = "epoch,accuracy,val_accuracy\n0,0.81,0.80\n1,0.90,0.88\n2,0.94,0.91\n3,0.96,0.92\n"
PREDICTIONS = "actual,predicted\n" + "".join(f"{d},{d if i % 4 else (d + 1) % 10}\n" for i in range(4) for d in range(10))


def template_path() -> Path:
    """The page template .dvc/config names (relative to .dvc/, as DVC reads it)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    assert config.has_option("plots", "html_template"), ".dvc/config sets no plots.html_template"
    return REPO_ROOT / ".dvc" / config.get("plots", "html_template")


def cdn_versions() -> dict[str, str]:
    """The versions DVC's own page loads from the CDN."""
    from dvc_render.vega import VegaRenderer

    return dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9][^\"/]*)", VegaRenderer.SCRIPTS))


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory) -> Path:
    """``dvc plots show`` of a tiny git + DVC project with this project's .dvc/config and .dvc/plots:
    a training curve and a confusion matrix (top-level plots); returns its index.html."""
    root = tmp_path_factory.mktemp("plots") / "project"
    root.mkdir()
    run_cmd(["git", "init", "-q", "-b", "main"], cwd=root)
    dvc(root, "init", "-q")
    shutil.copy2(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    if (REPO_ROOT / ".dvc" / "plots").is_dir():
        shutil.copytree(REPO_ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    (root / "history.csv").write_text(HISTORY)
    (root / "predictions.csv").write_text(PREDICTIONS)
    (root / "dvc.yaml").write_text(
        "plots:\n"
        "  - history.csv:\n"
        "      x: epoch\n"
        "      y: [accuracy, val_accuracy]\n"
        "  - predictions.csv:\n"
        "      template: confusion\n"
        "      x: actual\n"
        "      y: predicted\n"
    )
    dvc(root, "plots", "show", "-o", "out")
    page = root / "out" / "index.html"
    assert page.is_file()
    return page


def test_the_page_loads_no_script_from_the_network(plots_page: Path):
    html = plots_page.read_text(encoding="utf-8")
    assert "vegaEmbed('#" in html, "no Vega plot on the page"
    external = re.findall(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^\"'\s>]*", html, flags=re.IGNORECASE)
    assert not external, f"scripts from the network: {external}"
    assert "cdn.jsdelivr.net" not in html and "cdn.plot.ly" not in html
    # The bundles hold non-ASCII text (…, µ, −): the page must say how it is encoded.
    assert re.search(r"<meta charset=\"utf-8\">", html, flags=re.IGNORECASE)


def test_the_page_embeds_the_libraries_dvc_would_load(plots_page: Path):
    html = plots_page.read_text(encoding="utf-8")
    versions = cdn_versions()
    assert set(versions) == set(BUNDLE_MARKERS), versions
    for name, version in versions.items():
        assert f'data-bundle="{name}@{version}"' in html, f"{name}@{version} not inlined (rebuild .dvc/plots/offline.html)"
        defines, reports = BUNDLE_MARKERS[name]
        assert defines in html and reports.format(version=version) in html, name
        assert f"/*! {name} {version}:" in html and "BSD-3-Clause" in html, f"{name}: license header missing"


def test_the_inlined_bundles_are_the_ones_their_headers_name():
    """Each script is its npm build unchanged: the sha256 in its license header is its own."""
    html = template_path().read_text(encoding="utf-8")
    scripts = re.findall(r'<script data-bundle="([^"]+)">\n(/\*!.*?\*/\n)(.*?)\n    </script>', html, flags=re.DOTALL)
    assert [name for name, _, _ in scripts] == [f"{n}@{v}" for n, v in cdn_versions().items()]
    for name, header, code in scripts:
        digest = re.search(r"sha256 ([0-9a-f]{64})", header).group(1)
        assert hashlib.sha256(code.encode("utf-8")).hexdigest() == digest, name
        assert "Redistribution and use in source and binary forms" in header, name
    assert html.count("{plot_divs}") == 1 and "{scripts}" not in html


def test_project_copies_carry_the_template():
    """A copy of the project made for a test (conftest.PROJECT_FILES) takes .dvc/config, so it must
    take the template it names: DVC reads a missing template's path as the page itself and fails
    ("HTML template has to contain '{plot_divs}'")."""
    relative = template_path().relative_to(REPO_ROOT)
    assert any(relative.is_relative_to(name) for name in PROJECT_FILES), f"conftest.PROJECT_FILES lacks {relative.parent}"


def test_the_plots_draw_in_a_browser_with_no_network(plots_page: Path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium here")
    args = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        # No name resolves: a script fetched from anywhere fails, as it would offline.
        "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000", "--dump-dom", plots_page.as_uri(),
    ]
    dom = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
    # vega-embed fills each plot's div with a chart whose marks Vega draws on a canvas.
    embedded = re.findall(r'<div id="[^"]*" class="vega-embed[^"]*">\s*<div class="chart-wrapper"[^>]*>\s*<canvas width="(\d+)"', dom)
    assert len(embedded) == 2 and all(int(width) > 100 for width in embedded), f"drawn Vega plots: {embedded}"
