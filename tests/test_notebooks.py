"""Stored notebooks come from one clean top-to-bottom run and follow the chapter shape.

nbval executes every chapter in CI (``pytest --nbval-lax``); these checks look at
what is committed, which is what readers on the web see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def test_there_are_chapters():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_come_from_one_clean_run(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(code)}: "
        "re-run it top to bottom in a fresh kernel (jupyter nbconvert --execute --inplace)"
    )
    assert any(c["outputs"] for c in code), f"{path.name} has no stored outputs"
    for cell in code:
        for output in cell["outputs"]:
            assert output["output_type"] != "error", f"{path.name}: a stored cell raised {output.get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_shape(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    markdown = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "## Summary" in markdown and "## Exercises" in markdown, f"{path.name}: needs Summary and Exercises"
    assert "mimo_lib" in code, f"{path.name}: must build on mimo_lib"
    assert "assert" in code, f"{path.name}: must check its hand-built stage against mimo_lib"
