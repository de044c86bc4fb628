"""Atomic writes: a reader (or a crash) never finds half a file or no model at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mimo_lib import atomic

ROOT = Path(__file__).resolve().parents[1]


def make_model_folder(path: Path, tag: str, size: int = 1 << 20) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(tag.encode() * (size // len(tag)))
    (path / "config.json").write_text(f'{{"tag": "{tag}"}}')
    return path


def folder_tag(path: Path) -> str | None:
    """Which complete model is at ``path``: "old", "new", or None (missing or a mix)."""
    if not path.is_dir():
        return None
    tag = (path / "config.json").read_text().split('"')[3]
    weights = (path / "model.safetensors").read_bytes()
    return tag if weights == tag.encode() * ((1 << 20) // len(tag)) else None


def test_text_json_and_tensor_writes_replace_the_whole_file(tmp_path):
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "notes.txt"
    atomic.atomic_write_text(target, "old")
    atomic.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    atomic.atomic_write_json(tmp_path / "a.json", {"x": 0.1})
    assert (tmp_path / "a.json").read_text().strip().replace(" ", "").replace("\n", "") == '{"x":0.1}'
    atomic.atomic_save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(3.0)}, {"k": "v"})
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "notes.txt", "w.safetensors"]  # no leftovers


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")

    def broken(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_replace_folder_without_an_exchange_recovers_the_old_folder_after_a_crash(tmp_path, monkeypatch):
    final = make_model_folder(tmp_path / "mimo_toy", "old")
    new = make_model_folder(tmp_path / "staging", "new")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a system without renameat2
    real_replace, calls = os.replace, []

    def crash_on_second_rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the two renames")
        return real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic.replace_folder(new, final)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not final.exists()  # the window the fallback has ...
    assert atomic.recover_folder(final)  # ... and what closes it
    assert folder_tag(final) == "old"


WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from mimo_lib.atomic import copy_folder_atomically
source, target = Path(sys.argv[1]), Path(sys.argv[2])
while True:
    copy_folder_atomically(source, target)
"""


def test_killing_a_publish_at_any_moment_leaves_the_old_or_the_new_model(tmp_path):
    target = make_model_folder(tmp_path / "pretrained" / "mimo_toy", "old")
    source = make_model_folder(tmp_path / "run" / "final", "new")
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT)))
    seen = set()
    for delay in (0.01, 0.03, 0.05, 0.08, 0.13, 0.2):
        process = subprocess.Popen([sys.executable, str(script), str(source), str(target)])
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        tag = folder_tag(target)
        assert tag in ("old", "new"), f"after a kill at {delay} s the model folder is missing or mixed"
        seen.add(tag)
    assert "new" in seen
