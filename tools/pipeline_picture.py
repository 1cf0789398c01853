"""The pipeline's picture, drawn from ``dvc dag --mermaid`` so it can't drift from dvc.yaml.

A Mermaid flowchart for the README (GitHub renders it) and the same graph as an SVG for the
documentation site, which must work offline. Each ``foreach`` stage (``train@<model>``,
``evaluate@<model>``) is one node, and an edge that another path already implies is left out
(a transitive reduction). ``docs_blocks.py`` writes both.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape


DAG_NODE = re.compile(r'^\s*(?P<id>\w+)\["(?P<label>[^"]*)"\]\s*$')
DAG_EDGE = re.compile(r"^\s*(?P<source>\w+)\s*-->\s*(?P<target>\w+)\s*$")


def dvc_dag(root: Path) -> str:
    """``dvc dag --mermaid`` of the pipeline under ``root`` (about 2 s: DVC resolves dvc.yaml and params.yaml)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "dag", "--mermaid"], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dvc dag --mermaid failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def pipeline_graph(mermaid: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The pipeline as groups of stages and the edges between groups, from ``dvc dag --mermaid``.

    A ``foreach`` stage's instances (``train@cnn``, ``train@mlp``, ...) are one group,
    ``train@<model>``; the value is how many stages a group holds. Edges implied by a longer path
    are left out, so what remains reads as the order of the stages.
    """
    labels: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for line in mermaid.splitlines()[1:]:
        if node := DAG_NODE.match(line):
            labels[node["id"]] = node["label"]
        elif edge := DAG_EDGE.match(line):
            edges.add((edge["source"], edge["target"]))
        elif line.strip():
            raise ValueError(f"unexpected line in dvc dag --mermaid: {line!r}")
    if not mermaid.startswith("flowchart") or not labels:
        raise ValueError("dvc dag --mermaid printed no flowchart")

    def group(label: str) -> str:
        return f"{label.split('@', 1)[0]}@<model>" if "@" in label else label

    counts: dict[str, int] = {}
    for label in labels.values():
        counts[group(label)] = counts.get(group(label), 0) + 1
    grouped = {(group(labels[s]), group(labels[t])) for s, t in edges if group(labels[s]) != group(labels[t])}

    def reachable(source: str, skip: tuple[str, str]) -> set[str]:
        seen, todo = set(), [source]
        while todo:
            node = todo.pop()
            for s, t in grouped:
                if s == node and (s, t) != skip and t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    reduced = sorted(edge for edge in grouped if edge[1] not in reachable(edge[0], skip=edge))
    layer = _layers(counts, reduced)
    return dict(sorted(counts.items(), key=lambda item: (layer[item[0]], item[0]))), reduced


def _layers(nodes: Iterable[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's longest path from a source: its row in the picture."""
    layer = {node: 0 for node in nodes}
    for _ in range(len(layer)):
        for source, target in edges:
            layer[target] = max(layer[target], layer[source] + 1)
    return layer


def _node_id(name: str) -> str:
    return re.sub(r"\W", "_", name.split("@", 1)[0])


def _node_label(name: str, count: int, angle_brackets: bool = True) -> str:
    """A group says how many stages it stands for. Mermaid reads < and > as HTML, so it gets none."""
    return (name if angle_brackets else name.replace("<model>", "model")) + (f" × {count}" if count > 1 else "")


def pipeline_mermaid(mermaid: str) -> str:
    """The README's picture: ``dvc dag --mermaid``, one node per stage or foreach group, in a fenced block."""
    counts, edges = pipeline_graph(mermaid)
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {_node_id(name)}["{_node_label(name, count, angle_brackets=False)}"]' for name, count in counts.items()]
    lines += [f"    {_node_id(source)} --> {_node_id(target)}" for source, target in edges]
    return "\n".join([*lines, "```"]) + "\n"


def pipeline_svg(mermaid: str) -> str:
    """The same graph as a small SVG (rows by longest path), for the documentation site: no script, no network."""
    counts, edges = pipeline_graph(mermaid)
    layer = _layers(counts, edges)
    rows: dict[int, list[str]] = {}
    for name in counts:
        rows.setdefault(layer[name], []).append(name)
    width, row_height, box_height, char_width = 560, 64, 34, 8
    position: dict[str, tuple[int, int]] = {}
    for row, names in rows.items():
        for index, name in enumerate(names):
            position[name] = (round(width * (index + 1) / (len(names) + 1)), 24 + row * row_height)
    height = 24 + (max(rows) + 1) * row_height - (row_height - box_height) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-labelledby="pipeline-title" font-family="sans-serif" font-size="14">',
        '<title id="pipeline-title">The pipeline\'s stages, from dvc dag (generated by tools/docs_blocks.py)</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for source, target in edges:
        (x1, y1), (x2, y2) = position[source], position[target]
        parts.append(f'<line x1="{x1}" y1="{y1 + box_height}" x2="{x2}" y2="{y2}" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for name, count in counts.items():
        x, y = position[name]
        label = _node_label(name, count)
        box_width = char_width * len(label) + 28
        parts.append(f'<rect x="{x - box_width // 2}" y="{y}" width="{box_width}" height="{box_height}" rx="6" '
                     'fill="#e8eaf6" stroke="#3f51b5" stroke-width="1.5"/>')
        parts.append(f'<text x="{x}" y="{y + 22}" text-anchor="middle" fill="#1a237e">{escape(label)}</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


# ---------------------------------------------------------------------------------------------
# sentences from the noise model
