"""Stored notebooks come from one clean top-to-bottom run and follow the chapter shape.

nbval executes every chapter in CI (``pytest --nbval-lax``); these checks look at
what is committed, which is what readers on the web see: no frozen progress bars,
no paths of the machine that ran them, widgets that leave a result and a hint,
no answers in stored outputs, and each chapter's navigation (run-time note,
Further reading, previous/next links). ``MIMO_CHECK_SOLUTIONS=1`` also runs every
folded worked solution in place (slow: each chapter is executed once more).
"""

from __future__ import annotations

import json
import os
import re
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


# --------------------------------------------------------------------------- what a reader sees in stored outputs


def _output_texts(notebook: dict):
    """``(cell index, text)`` for every stored output a person reads: streams, plain text, errors, and HTML
    without embedded media (an embedded clip's base64 could contain any short string by chance)."""
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                yield index, "".join(output["text"])
            elif output["output_type"] == "error":
                yield index, "\n".join(output.get("traceback", []))
            for kind, value in output.get("data", {}).items():
                text = "".join(value) if isinstance(value, list) else value
                if kind == "text/plain" or (kind == "text/html" and "base64," not in text):
                    yield index, text


#: a tqdm bar frozen at the moment the cell finished ("  0%|          | 0/60 [00:00<?, ?it/s]"), in text or
#: as the plain-text stand-in of a progress widget
FROZEN_PROGRESS = re.compile(r"\d+%\|[^\n]*\|\s*\d+/\d+|FloatProgress\(|IntProgress\(")
#: a path that names the machine a notebook ran on: temporary folders, home folders, this checkout, a venv
MACHINE_PATH = re.compile(
    r"/tmp/|/var/folders/|/private/var/|/home/[\w.-]+/|/Users/[\w.-]+/|/root/|/work/|site-packages|pytest-of-"
    r"|[A-Z]:\\\\Users"
)
#: the plain-text stand-in of a widget stored as its raw repr ("interactive(children=(IntSlider(...")
RAW_WIDGET_REPR = re.compile(r"^\s*(interactive|HBox|VBox|IntSlider|FloatSlider|Dropdown|ToggleButtons|Output)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_frozen_progress_bar_in_stored_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    frozen = [(i, m.group(0)) for i, text in _output_texts(notebook) for m in FROZEN_PROGRESS.finditer(text)]
    assert not frozen, f"{path.name}: progress bars stored in outputs of cells {frozen}: pass progress=False"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_path_in_stored_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = [(i, text[max(0, m.start() - 40) : m.end() + 20]) for i, text in _output_texts(notebook)
             for m in MACHINE_PATH.finditer(text)]
    assert not found, f"{path.name}: outputs name a path of the machine that ran them: {found[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widgets_store_a_result_and_a_hint(path):
    """A page without a kernel shows a widget's text/plain: it must say how to use it, not ``interactive(...)``,
    and the cell must also store a result (a figure or text) to read without the widget."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        outputs = cell.get("outputs", [])
        widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        for output in widgets:
            text = "".join(output["data"].get("text/plain", ""))
            assert not RAW_WIDGET_REPR.match(text), f"{path.name} cell {index}: stores the widget's raw repr {text[:60]!r}"
            assert "run" in text.lower(), f"{path.name} cell {index}: the widget's stand-in {text!r} should say to run the cell"
        if widgets:
            assert len(outputs) > len(widgets), f"{path.name} cell {index}: a widget without a stored result beside it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_hidden_cells_store_no_output(path):
    """GitHub and VS Code show a 'hidden' cell's outputs anyway: a hidden solution must not store its answer."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        hidden = cell.get("metadata", {}).get("jupyter", {}).get("source_hidden", False)
        assert not (hidden and cell.get("outputs")), f"{path.name} cell {index}: a source-hidden cell stores outputs"


def _markdown(notebook: dict) -> list[str]:
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_navigation(path):
    """A run-time note at the top, Further reading with links, and previous/next links at the bottom."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    markdown = _markdown(notebook)
    assert "run time" in markdown[0].lower(), f"{path.name}: the first cell needs a run-time note (what you need, how long)"
    reading = next((m for m in markdown if m.startswith("## Further reading")), None)
    assert reading and "](http" in reading, f"{path.name}: needs a '## Further reading' section with links"
    last = markdown[-1]
    assert "**Previous:**" in last and "**Next:**" in last, f"{path.name}: the last cell needs previous/next links"
    for target in re.findall(r"\]\(([^)#]+\.ipynb)\)", last):
        assert (path.parent / target).is_file(), f"{path.name}: link to missing chapter {target}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_have_a_place_to_work_and_folded_solutions(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = notebook["cells"]
    start = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in "".join(c["source"]))
    after = cells[start:]
    your_turn = [c for c in after if c["cell_type"] == "code" and "# Your turn" in "".join(c["source"])]
    assert your_turn, f"{path.name}: exercises need empty 'your turn' cells (starting with '# Your turn')"
    headings = [m.splitlines()[0] for m in _markdown({"cells": after}) if re.match(r"#+ .*solution", m, flags=re.I)]
    assert not headings, f"{path.name}: solutions {headings} must sit in collapsed <details> blocks, not under a heading"
    assert any("<details>" in m for m in _markdown({"cells": after})), f"{path.name}: no <details> solution"


def _with_solutions(notebook: dict) -> dict:
    """The notebook with each <details> solution's ```python blocks run right after it, as code cells."""
    cells = []
    for cell in notebook["cells"]:
        cells.append(cell)
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "<details>" in text:
            for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
                cells.append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                              "source": block})
    return {**notebook, "cells": cells}


@pytest.mark.skipif(not os.environ.get("MIMO_CHECK_SOLUTIONS"), reason="slow: set MIMO_CHECK_SOLUTIONS=1 to run")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_folded_solutions_run(path):
    """Every worked solution in a <details> block runs, in place, after the chapter's cells above it."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.reads(json.dumps(_with_solutions(json.loads(path.read_text(encoding="utf-8")))), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
