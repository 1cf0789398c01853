"""Rebuild offline.html, the page template of `dvc plots show` (.dvc/config: plots.html_template).

DVC's default page loads Vega, Vega-Lite and vega-embed from cdn.jsdelivr.net, so its plots are
blank offline. offline.html inlines the very builds that CDN serves (package.json "jsdelivr": the
minified UMD bundles), each under its license, so dvc_plots/index.html needs no network. The
versions are the ones the installed DVC loads (dvc_render.vega.VegaRenderer.SCRIPTS).

    cd "$(mktemp -d)" && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python3 -m uv run --locked python .dvc/plots/build_offline_html.py <that folder>

After a DVC upgrade that changes those versions, rerun it with the new ones
(tests/test_plots_offline.py checks that they match).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "offline.html"
# package name -> the file of its npm tarball that the CDN serves
BUNDLES = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}
# DVC fills these in the template (dvc_render.html.HTML.embed). {scripts} is left out on purpose:
# it is where DVC puts its CDN <script> tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- The page template of `dvc plots show` (.dvc/config: plots.html_template), made by
         .dvc/plots/build_offline_html.py: DVC's own page with Vega, Vega-Lite and vega-embed
         inlined instead of loaded from a CDN, so the plots draw offline. Each script keeps its
         license (BSD-3-Clause) at its top. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def dvc_versions() -> dict[str, str]:
    """The versions the installed DVC loads from the CDN."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9][^\"/]*)", VegaRenderer.SCRIPTS))
    if set(found) != set(BUNDLES):
        raise SystemExit(f"dvc_render loads {found}, expected {sorted(BUNDLES)}: update BUNDLES")
    return found


def read_package(tarball: Path, name: str, version: str, bundle: str) -> tuple[str, str]:
    """The bundle and LICENSE text of one npm tarball, checked against its package.json."""
    with tarfile.open(tarball) as tar:

        def member(path: str) -> str:
            return tar.extractfile(f"package/{path}").read().decode("utf-8")

        meta = json.loads(member("package.json"))
        if (meta["name"], meta["version"], meta["license"]) != (name, version, "BSD-3-Clause"):
            raise SystemExit(f"{tarball}: {meta['name']}@{meta['version']} ({meta['license']})")
        if meta.get("jsdelivr") != bundle:
            raise SystemExit(f"{tarball}: the CDN serves {meta.get('jsdelivr')}, not {bundle}")
        return member(bundle), member("LICENSE").strip()


def script_tag(name: str, version: str, bundle: str, code: str, license_text: str) -> str:
    for bad in ("</script", "<!--", "{scripts}", "{plot_divs}", "{refresh_tag}", "*/"):
        if bad in license_text or (bad != "*/" and bad in code):
            raise SystemExit(f"{name}: {bad!r} would break the page")
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
    header = (
        f"/*! {name} {version}: {bundle} of the npm package {name}@{version}, unchanged "
        f"(sha256 {digest}).\n"
        f" * https://github.com/vega/{name} -- license (BSD-3-Clause):\n *\n"
        + "\n".join(f" * {line}".rstrip() for line in license_text.splitlines())
        + "\n */\n"
    )
    return f'    <script data-bundle="{name}@{version}">\n{header}{code}\n    </script>'


def main(folder: str) -> None:
    versions = dvc_versions()
    tags = []
    for name, bundle in BUNDLES.items():
        version = versions[name]
        code, license_text = read_package(Path(folder) / f"{name}-{version}.tgz", name, version, bundle)
        tags.append(script_tag(name, version, bundle, code, license_text))
        print(f"{name}@{version}: {bundle}, {len(code.encode()):,} bytes")
    TEMPLATE.write_text(PAGE.format(scripts="\n".join(tags)), encoding="utf-8")
    print(f"{TEMPLATE}: {TEMPLATE.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
