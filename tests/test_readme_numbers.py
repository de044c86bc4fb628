"""The README's numbers that a chapter (or a committed result file) also states agree with their one source.

Each measured number has one home: a checkpoint's metadata, ``mimo_toy/recipe.json``, or a JSON file in
``benchmarks/results/`` written by the script named in it. The chapters read those files; these tests
check that the README quotes the same values, formatted as the README writes them (``99.8%``, ``100%``,
``14.9`` minutes), so that re-running a benchmark without updating the README fails here.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from mimo_lib.pretrain_towers import read_metadata, shipped_checkpoint

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "benchmarks" / "results"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def rounded(value: float, decimals: int) -> str:
    """``value`` rounded half up, as a person writes it (``14.85`` -> ``14.9``; Python's format gives 14.8)."""
    return str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def percent(value: float, decimals: int = 0) -> str:
    """A share as the README writes it: ``0.998`` -> ``99.8%`` (decimals=1), ``1.0`` -> ``100%``."""
    text = rounded(100 * value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def table_rows(first_header: str) -> list[list[str]]:
    """The body rows of the README's markdown table whose header row starts with ``| first_header |``."""
    lines = README.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |")), None)
    assert start is not None, f"README has no table starting with '| {first_header} |'"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def paragraph_mentioning(text: str) -> str:
    """The README paragraphs (blank-line separated) that mention ``text``, with line breaks as spaces."""
    found = [" ".join(p.split()) for p in README.split("\n\n") if text in p]
    assert found, f"the README does not mention {text}"
    return "\n\n".join(found)


# --------------------------------------------------------------------------- shipped tower checkpoints


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_tower_table_matches_checkpoint_metadata(modality):
    """Chapters 2 and 3 print each checkpoint's recorded run; the README's table must say the same."""
    record = json.loads(read_metadata(shipped_checkpoint(modality))["extra"])
    row = next(r for r in table_rows("tower") if r[0].startswith(modality))
    steps, minutes = row[1], row[2]
    assert steps == str(record["steps"]), f"README says {steps} steps, the checkpoint {record['steps']}"
    assert minutes == rounded(record["train_minutes"], 1), f"README says {minutes} min, the checkpoint {record['train_minutes']}"
    accuracy = record["held_out_zero_shot_accuracy"]
    cells = [c for c in row[3:] if c]
    wanted = [percent(v, 1) for k, v in accuracy.items() if k != "caption"]
    assert cells == wanted, f"README's {modality} accuracies {cells} differ from the checkpoint's {wanted}"


# --------------------------------------------------------------------------- benchmarks/results


def test_vision_stem_claim_matches_its_benchmark():
    """Chapter 2 reads benchmarks/results/vision_stem.json; the README's conv-stem sentence quotes it."""
    result = json.loads((RESULTS / "vision_stem.json").read_text(encoding="utf-8"))
    text = paragraph_mentioning("benchmarks/vision_stem.py")
    linear, conv = result["runs"]["linear"], result["runs"]["conv"]
    steps = linear["final"]["step"]
    wanted = [f"{steps} contrastive steps", percent(linear["final"]["shape"]), percent(conv["final"]["shape"])]
    if conv["first_step_shape_at_least_90"] is not None:
        wanted.append(f"step {conv['first_step_shape_at_least_90']}")
    missing = [w for w in wanted if w not in text]
    assert not missing, f"the README's conv-stem sentence lacks {missing} (from benchmarks/results/vision_stem.json)"


def test_random_towers_claim_matches_its_benchmark():
    """If the README quotes benchmarks/random_towers.py, its numbers are the ones chapters 2 and 3 read."""
    if "random_towers.py" not in README:
        pytest.skip("the README does not quote benchmarks/random_towers.py")
    result = json.loads((RESULTS / "random_towers.json").read_text(encoding="utf-8"))
    text = paragraph_mentioning("random_towers.py")
    quoted = set(re.findall(r"\d+%", text))
    measured = {percent(v) for run in result["runs"].values() for row in run["accuracy"].values() for v in row.values()}
    assert quoted <= measured, f"README percentages {sorted(quoted - measured)} are not in random_towers.json"


def test_every_result_file_names_its_script():
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        script = result.get("script") or ""
        assert script and (ROOT / script).is_file(), f"{path.name} does not name an existing script that wrote it"


# --------------------------------------------------------------------------- the training recipe (chapter 7)


def test_recipe_curve_matches_recipe_json():
    recipe = json.loads((ROOT / "mimo_lib" / "pretrained" / "mimo_toy" / "recipe.json").read_text(encoding="utf-8"))
    header = next(line for line in README.splitlines() if line.startswith("| minutes since start |"))
    types = [c.strip() for c in header.strip("|").split("|")][2:]
    rows = table_rows("minutes since start")
    readme_steps = [int(r[1]) for r in rows]
    for row in rows:
        point = next((p for p in recipe["curve"] if p["step"] == int(row[1])), None)
        assert point is not None, f"README's curve has step {row[1]}, recipe.json does not"
        assert row[0] == rounded(point["minutes"], 1), f"step {row[1]}: README {row[0]} min, recipe.json {point['minutes']}"
        assert row[2:] == [percent(point[t]) for t in types], f"step {row[1]}: README {row[2:]} vs recipe.json"
    assert readme_steps == sorted(readme_steps)
    assert f"{rounded(recipe['total_minutes'], 1)} min" in README


def test_recipe_final_table_matches_recipe_json():
    recipe = json.loads((ROOT / "mimo_lib" / "pretrained" / "mimo_toy" / "recipe.json").read_text(encoding="utf-8"))
    lines = [line.split() for line in recipe["final_table"].splitlines()[1:] if line.strip()]
    columns = lines[0][1:]  # condition vision motion ... all
    measured = {}
    for cells in lines[1:]:
        name = " ".join(cells[: len(cells) - len(columns)])
        measured[name] = dict(zip(columns, (float(v) for v in cells[len(cells) - len(columns) :])))
    header = next(line for line in README.splitlines() if line.startswith("| condition |"))
    types = [c.strip() for c in header.strip("|").split("|")][1:]
    for row in table_rows("condition"):
        assert row[0] in measured, f"README's final table has a condition {row[0]!r} recipe.json lacks"
        assert row[1:] == [percent(measured[row[0]][t]) for t in types], f"{row[0]}: README {row[1:]} vs recipe.json"


# --------------------------------------------------------------------------- run times


def chapter_run_time(path: Path) -> str | None:
    first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
    match = re.search(r"\*\*Run time\*\* about ([\d,.]+ (?:s|min))", first)
    return match.group(1) if match else None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_run_time_matches_readme(path):
    """A chapter's run-time note and the README's chapter table give one number."""
    stated = chapter_run_time(path)
    if stated is None:
        pytest.fail(f"{path.name}: the first cell has no '**Run time** about N s' note")
    row = next((r for r in table_rows("#") if f"chapters/{path.name}" in r[1]), None)
    assert row is not None, f"the README's chapter table has no row for {path.name}"
    assert row[-1] == stated, f"{path.name}: the chapter says about {stated}, the README's table {row[-1]}"


# --------------------------------------------------------------------------- the synthetic task (chapter 1)


def test_task_table_chance_levels_match_the_generator():
    """If the README's task table gives chance levels, they are chapter 1's, counted from the generator's tables."""
    from mimo_lib.data.synthetic import COLOUR_QUESTIONS, COLOURS, INSTRUMENTS, MOTIONS, PITCHES, SHAPES

    header = next(line for line in README.splitlines() if line.startswith("| type |"))
    columns = [c.strip().lower() for c in header.strip("|").split("|")]
    where = next((k for k, c in enumerate(columns) if c.startswith("chance")), None)
    if where is None:
        pytest.skip("the README's task table has no chance column")
    named = sum("{shape}" in q for q in COLOUR_QUESTIONS) / len(COLOUR_QUESTIONS)
    colour = named / len(COLOURS) + (1 - named) / (len(COLOURS) * len(SHAPES))
    chance = {"vision": (1 / len(SHAPES) + colour) / 2, "motion": 1 / len(MOTIONS),
              "audio": (1 / len(INSTRUMENTS) + 1 / len(PITCHES)) / 2, "both": 1 / 2,
              "time": (1 / len(INSTRUMENTS) + 1 / (len(SHAPES) * len(COLOURS))) / 2}
    for row in table_rows("type"):
        name = row[0].strip("`")
        if name in chance:
            assert row[where] == percent(chance[name]), f"{name}: README {row[where]}, chapter 1 {percent(chance[name])}"
