"""The README gets a newcomer started; docs/ holds the manual, its links hold, its picture is dvc's, and the site builds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pipeline_picture import dvc_dag, pipeline_graph, pipeline_mermaid, pipeline_svg
from docs_blocks import BLOCK, PICTURE, documents

README_MAX_LINES = 200
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans, where a link is not a link."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def _heading_texts(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    texts = []
    for line in text.splitlines():
        if found := HEADING.match(line):
            plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", found["text"])  # a link's text
            texts.append(re.sub(r"[`*]", "", plain))  # code and emphasis marks are not in the anchor
    return texts


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """Python-Markdown's toc anchor (MkDocs' default): ASCII, punctuation dropped, runs of spaces one hyphen."""
    value = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", value).strip().lower())


@cache
def anchors(path: Path) -> set[str]:
    """Anchors that work both on GitHub and on the built site."""
    texts = _heading_texts(path)
    return {github_slug(text) for text in texts} & {mkdocs_slug(text) for text in texts}


def relative_links(path: Path) -> list[str]:
    targets = [match["target"] for match in LINK.finditer(_prose(path.read_text(encoding="utf-8")))]
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def test_the_readme_gets_a_newcomer_started_in_at_most_200_lines():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    # The test command CI runs (.ci/run: "the README's test command"), and the one that runs it all.
    assert "make test" in text and "make run" in text
    for place in ("reports/", "make ui", "mnist-predict", "champion", "Troubleshooting"):
        assert place in text, f"the README no longer says where to look: {place}"


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    broken = []
    for path in documents(REPO_ROOT):
        for target in relative_links(path):
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO_ROOT)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no such heading; known: {sorted(anchors(resolved))})")
            elif file_part.startswith("../") and path.is_relative_to(REPO_ROOT / "docs") and not resolved.is_relative_to(REPO_ROOT / "docs"):
                broken.append(f"{where} (outside docs/: the built site has no such page)")
    assert not broken, "\n".join(broken)


def test_the_link_checker_sees_broken_links_and_anchors(tmp_path):
    (tmp_path / "page.md").write_text("# Title\n\n## Where a stage's time goes\n\n## Using `mnist-predict`\n\n```\n[not](a-link.md)\n```\n`[nor](this.md)`\n")
    (tmp_path / "other.md").write_text("[ok](page.md#where-a-stages-time-goes) [bad](page.md#nowhere) [gone](missing.md) [web](https://x.org/a)\n")
    assert relative_links(tmp_path / "page.md") == []
    assert relative_links(tmp_path / "other.md") == ["page.md#where-a-stages-time-goes", "page.md#nowhere", "missing.md"]
    assert anchors(tmp_path / "page.md") == {"title", "where-a-stages-time-goes", "using-mnist-predict"}
    # Where GitHub and MkDocs disagree (a run of spaces), the anchor works in neither view for sure.
    assert github_slug("a  b") == "a--b" and mkdocs_slug("a  b") == "a-b"


@pytest.fixture(scope="module")
def dag() -> str:
    return dvc_dag(REPO_ROOT)


def test_the_pipeline_picture_is_what_dvc_dag_says(dag):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    pictures = [match["body"] for match in BLOCK.finditer(readme) if match["name"] == "pipeline"]
    regenerate = "run `python tools/docs_blocks.py`"
    assert pictures == [pipeline_mermaid(dag)], f"the README's pipeline picture disagrees with dvc.yaml: {regenerate}"
    assert (REPO_ROOT / PICTURE).read_text(encoding="utf-8") == pipeline_svg(dag), f"{PICTURE} disagrees with dvc.yaml: {regenerate}"
    counts, _ = pipeline_graph(dag)
    assert {"download", "preprocess", "train@<model>", "evaluate@<model>", "gate", "register"} <= set(counts)


def test_foreach_stages_are_one_node_and_implied_edges_are_left_out():
    dag = "\n".join([
        "flowchart TD",
        '\tnode1["prepare"]', '\tnode2["train@a"]', '\tnode3["train@b"]', '\tnode4["evaluate@a"]', '\tnode5["evaluate@b"]', '\tnode6["report"]',
        "\tnode1-->node2", "\tnode1-->node3", "\tnode1-->node4", "\tnode1-->node6",
        "\tnode2-->node4", "\tnode3-->node5", "\tnode4-->node6", "\tnode5-->node6",
    ])
    counts, edges = pipeline_graph(dag)
    assert counts == {"prepare": 1, "train@<model>": 2, "evaluate@<model>": 2, "report": 1}
    assert edges == [("evaluate@<model>", "report"), ("prepare", "train@<model>"), ("train@<model>", "evaluate@<model>")]
    assert pipeline_mermaid(dag) == (
        "```mermaid\nflowchart TD\n"
        '    prepare["prepare"]\n    train["train@model × 2"]\n    evaluate["evaluate@model × 2"]\n    report["report"]\n'
        "    evaluate --> report\n    prepare --> train\n    train --> evaluate\n```\n"
    )
    with pytest.raises(ValueError, match="unexpected line"):
        pipeline_graph("flowchart TD\n\tnode1[\"a\"]\n\tnode1==>node2\n")


def test_the_documentation_site_builds_strictly_and_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {path.relative_to(site).as_posix() for path in site.glob("**/*.html")}
    expected = {path.relative_to(REPO_ROOT / "docs").with_suffix(".html").as_posix() for path in (REPO_ROOT / "docs").glob("**/*.md")}
    assert expected <= pages
    html = "\n".join(path.read_text(encoding="utf-8") for path in site.glob("**/*.html"))
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, "the site would fetch fonts when viewed"
    assert (site / PICTURE.relative_to("docs")).exists()


def test_the_ci_time_table_reads_each_step_up_to_the_next_stamp(monkeypatch):
    """benchmarks/ci_timings.py: a step lasts until the next `== ...` stamp; a log that never reached `done` is refused."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from ci_timings import steps

    log = "\n".join([
        "== environment + tests (README: make test) (0 s since start)", "550 passed",
        "== make run exited 0; waiting for the tests beside it: (240 s since start)",
        "== done (300 s since start)", "== stopping the team stack (302 s since start)",
    ])
    assert steps(log) == [
        {"step": "environment + tests (README: make test)", "start_s": 0, "seconds": 240},
        {"step": "make run exited 0; waiting for the tests beside it", "start_s": 240, "seconds": 60},
        {"step": "done", "start_s": 300, "seconds": 2},
        {"step": "stopping the team stack", "start_s": 302, "seconds": 0},
    ]
    with pytest.raises(SystemExit, match="no complete"):
        steps(log.split("== done")[0])
