"""The measured tables in README.md and docs/ are generated from the committed results files and agree with them."""

from __future__ import annotations

import pytest

import docs_blocks as readme
from conftest import REPO_ROOT
from docs_blocks import BLOCK, GENERATORS, block_names, blocks, documents, render, render_all


def test_every_generated_block_is_in_the_documentation_and_agrees_with_its_source():
    found = {name for path in documents(REPO_ROOT) for name in block_names(path.read_text(encoding="utf-8"))}
    assert found == set(GENERATORS), "a generated block went missing from README.md and docs/, or has no generator"
    # A missing results file fails here (FileNotFoundError): a block is never left as it was.
    stale = [str(path.relative_to(REPO_ROOT)) for path, (text, updated) in render_all(REPO_ROOT).items() if updated != text]
    assert not stale, f"generated blocks are stale in {stale}: run `python tools/docs_blocks.py`"


def test_render_replaces_each_block_body_and_nothing_else():
    text = "intro\n<!-- begin: a -->\nold\n<!-- end: a -->\nmiddle\n<!-- begin: b -->\n<!-- end: b -->\noutro\n"
    assert render(text, {"a": "new a\n", "b": "new b\n"}) == (
        "intro\n<!-- begin: a -->\nnew a\n<!-- end: a -->\nmiddle\n<!-- begin: b -->\nnew b\n<!-- end: b -->\noutro\n"
    )


def test_a_block_without_a_generator_is_an_error():
    with pytest.raises(KeyError, match="'typed-by-hand' has no generator"):
        render("<!-- begin: typed-by-hand -->\n| 1 |\n<!-- end: typed-by-hand -->\n", {"a": ""})


def test_a_block_name_may_appear_in_the_readme_and_in_several_pages(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(readme, "GENERATORS", {"table": lambda sources: made.append(1) or "| 1 |\n"})
    block = "<!-- begin: table -->\nold\n<!-- end: table -->\n"
    (tmp_path / "README.md").write_text("readme\n" + block)
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text(block + block)
    (tmp_path / "docs" / "deep" / "b.md").write_text("b\n" + block)
    (tmp_path / "docs" / "none.md").write_text("no blocks\n")
    rendered = render_all(tmp_path)
    new = "<!-- begin: table -->\n| 1 |\n<!-- end: table -->\n"
    assert {path.relative_to(tmp_path).as_posix(): updated for path, (_, updated) in rendered.items()} == {
        "README.md": "readme\n" + new, "docs/a.md": new + new, "docs/deep/b.md": "b\n" + new,
    }
    assert made == [1], "each block is generated once, however many files hold it"


def test_a_missing_results_file_is_an_error_not_a_kept_block(tmp_path):
    with pytest.raises(FileNotFoundError, match="testsets.json"):
        blocks(tmp_path, ["bench-testsets"])


def test_the_block_markers_are_the_documented_syntax():
    assert [match.group("name") for match in BLOCK.finditer("<!-- begin: a-b -->\nx\n<!-- end: a-b -->")] == ["a-b"]
