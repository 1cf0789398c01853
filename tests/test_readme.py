"""The README's measured tables are generated from the committed results files and agree with them."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.reporting.readme import BLOCK, blocks, render


def test_the_readme_tables_agree_with_the_results_files():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found = {match.group("name") for match in BLOCK.finditer(text)}
    assert found == {"noise", "seeds-by-set", "this-run-by-set", "bench-testsets"}
    assert render(text, blocks(REPO_ROOT)) == text, "a README table is stale: run `python -m mnist_pipeline.reporting.readme`"


def test_render_replaces_each_block_body_and_nothing_else():
    text = "intro\n<!-- begin: a -->\nold\n<!-- end: a -->\nmiddle\n<!-- begin: b -->\n<!-- end: b -->\noutro\n"
    assert render(text, {"a": "new a\n", "b": "new b\n"}) == (
        "intro\n<!-- begin: a -->\nnew a\n<!-- end: a -->\nmiddle\n<!-- begin: b -->\nnew b\n<!-- end: b -->\noutro\n"
    )


def test_a_block_without_a_generator_is_an_error():
    with pytest.raises(KeyError, match="'typed-by-hand' has no generator"):
        render("<!-- begin: typed-by-hand -->\n| 1 |\n<!-- end: typed-by-hand -->\n", {"a": ""})
