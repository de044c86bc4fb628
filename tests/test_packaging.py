"""The install story stays true: pyproject.toml, environment.yml, README and .ci/run agree."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def normalised(requirements) -> dict[str, str]:
    """{name: specifier} with names normalised the way pip does."""
    out = {}
    for text in requirements:
        requirement = Requirement(text)
        out[re.sub(r"[-_.]+", "-", requirement.name).lower()] = str(requirement.specifier)
    return out


def environment_pip_requirements() -> list[str]:
    """The entries of environment.yml's pip section (a tiny reader: no YAML library needed)."""
    lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    entries = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) < indent:
            break
        entries.append(line.strip().removeprefix("- ").strip())
    return entries


def test_environment_yml_matches_pyproject():
    project = pyproject()["project"]
    expected = normalised(project["dependencies"] + project["optional-dependencies"]["dev"])
    entries = environment_pip_requirements()
    assert "-e .[dev]" in entries, "environment.yml must install the package itself"
    listed = normalised(e for e in entries if not e.startswith("-e"))
    assert listed == expected


def test_requirements_are_lower_bounds_not_pins():
    project = pyproject()["project"]
    for text in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        specifier = Requirement(text).specifier
        assert specifier, f"{text}: give a tested lower bound"
        assert all(s.operator == ">=" for s in specifier), f"{text}: lower bounds only, no pins or caps"


def readme_commands() -> list[str]:
    """The lines of the README's 'Quick start' shell block."""
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_exactly_two_commands_and_ci_runs_them():
    setup, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = setup.split(" && .venv/bin/jupyter")[0]
    assert install in ci, "CI must install exactly as the README says"
    assert tests in ci, "CI must run the README's test command"
    assert "jupyter lab" in setup


def test_readme_chapter_table_lists_every_notebook_and_links_resolve():
    notebooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").glob("*.ipynb"))
    assert notebooks, "the book has no chapters"
    for notebook in notebooks:
        assert f"]({notebook})" in README, f"README chapter table misses {notebook}"
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def test_doctor_reports_every_requirement_ok(capsys):
    from mimo_lib import doctor

    assert doctor.main() == 0
    out = capsys.readouterr().out
    assert "[FAIL]" not in out
    for name in ("torch", "torchaudio", "torchvision", "megatron-core"):
        assert f"[OK] {name}:" in out
    assert "device:" in out


def test_doctor_flags_an_unmet_bound(monkeypatch):
    from mimo_lib import doctor

    monkeypatch.setattr(doctor, "installed_version", lambda name: "0.0.1" if name == "torch" else "999")
    results = {name: ok for name, ok, _ in doctor.requirement_checks()}
    assert results["torch"] is False and results["numpy"] is True
