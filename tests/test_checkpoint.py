"""Checkpoints: nothing lost on a round trip, and a crash while saving never breaks the previous one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mimo_lib import checkpoint as ckpt
from mimo_lib.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    load_model,
    load_tokenizer,
    restore_rng_state,
    save_checkpoint,
    save_model_only,
)
from mimo_lib.config import MIMOConfig, get_preset
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer


def tiny_config() -> MIMOConfig:
    """The tiny preset: a model that builds and steps in milliseconds."""
    return get_preset("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def trained():
    """A tiny model and an AdamW that has taken one step (so it has exp_avg, exp_avg_sq and step)."""
    torch.manual_seed(0)
    model = MIMOModel(tiny_config())
    model.set_trainable(towers=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    sum((p.float() ** 2).sum() for p in params).backward()
    optimizer.step()
    return model, optimizer


def save(run: Path, model, optimizer, step: int, **kwargs) -> Path:
    return save_checkpoint(run, model, step, stage="instruct", optimizer=optimizer, metrics=[{"step": step}], **kwargs)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- round trip


def test_round_trip_loses_nothing(tmp_path, trained):
    model, optimizer = trained
    sampler = {"generator": torch.Generator().manual_seed(5).get_state(), "order": torch.randperm(9), "position": 3}
    folder = save(tmp_path / "run", model, optimizer, 7, sampler_state=sampler, scheduler_state={"lr": 1e-3},
                  parameter_names=["a", "b"], args={"seed": 0}, tokenizer=Tokenizer.default())
    assert folder.name == "step-000007"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "state.json", "state.safetensors", "tokenizer.json"
    ]

    loaded = load_checkpoint(tmp_path / "run")  # the run folder: follows `latest`
    assert loaded.path == folder and loaded.step == 7 and loaded.stage == "instruct"
    assert loaded.config == model.config
    assert_same_state(loaded.model_state, model.state_dict())
    original = optimizer.state_dict()
    assert loaded.optimizer_state["param_groups"] == original["param_groups"]  # betas come back as a tuple
    assert loaded.optimizer_state["state"].keys() == original["state"].keys()
    for index, entries in original["state"].items():
        assert_same_state(loaded.optimizer_state["state"][index], entries)
    assert torch.equal(loaded.sampler_state["generator"], sampler["generator"])
    assert torch.equal(loaded.sampler_state["order"], sampler["order"]) and loaded.sampler_state["position"] == 3
    assert loaded.scheduler_state == {"lr": 1e-3} and loaded.parameter_names == ["a", "b"]
    assert loaded.metrics == [{"step": 7}] and loaded.args == {"seed": 0}

    # the optimizer state loads into a fresh optimizer and steps exactly like the original
    twin = loaded.build_model()
    twin.set_trainable(towers=False)
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    twin_optimizer = torch.optim.AdamW(twin_params, lr=1e-3)
    twin_optimizer.load_state_dict(loaded.optimizer_state)
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        params = [p for p in m.parameters() if p.requires_grad]
        o.zero_grad()
        sum((p.float() ** 2).sum() for p in params).backward()
        o.step()
    assert_same_state(twin.state_dict(), model.state_dict())


def test_rng_state_round_trips_through_a_checkpoint(tmp_path, trained):
    model, optimizer = trained
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    save(tmp_path, model, optimizer, 1)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path).rng_state)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    # nothing is pickled: the JSON part is plain JSON
    json.loads((tmp_path / "step-000001" / "state.json").read_text())
    assert isinstance(capture_rng_state()["torch_cpu"], torch.Tensor)


def test_model_only_folder_and_loading_from_any_checkpoint(tmp_path, trained):
    model, optimizer = trained
    folder = save_model_only(model, tmp_path / "final", Tokenizer.default())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    for path in (folder, save(tmp_path / "run", model, optimizer, 3), tmp_path / "run"):
        loaded = load_model(path)
        assert not loaded.training
        assert_same_state(loaded.state_dict(), model.state_dict())
    assert load_tokenizer(folder).vocab_size == Tokenizer.default().vocab_size
    save_model_only(model, folder)  # replacing an existing model folder works too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(CheckpointError, match="model folder"):
        load_checkpoint(folder)


# --------------------------------------------------------------------------- latest, keep, atomicity


def test_latest_points_to_the_newest_and_only_the_last_k_are_kept(tmp_path, trained):
    model, optimizer = trained
    for step in (1, 2, 3, 4):
        save(tmp_path, model, optimizer, step, keep=2)
        assert (tmp_path / "latest").read_text().strip() == f"step-{step:06d}"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert load_checkpoint(tmp_path).step == 4
    assert load_checkpoint(tmp_path / "step-000003").step == 3  # a step folder directly


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, trained, monkeypatch):
    model, optimizer = trained
    save(tmp_path, model, optimizer, 1)
    real_save_file = ckpt.save_file
    calls = []

    def crash_on_second_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # model.safetensors is written, optimizer.safetensors is not
            Path(filename).write_bytes(b"half a file")
            raise OSError("disk full (simulated)")
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", crash_on_second_file)
    with pytest.raises(OSError, match="simulated"):
        save(tmp_path, model, optimizer, 2)
    monkeypatch.undo()

    assert (tmp_path / "latest").read_text().strip() == "step-000001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]  # no temporary folder left
    assert load_checkpoint(tmp_path).step == 1


def test_a_crash_between_the_folder_and_the_pointer_keeps_the_previous(tmp_path, trained, monkeypatch):
    model, optimizer = trained
    save(tmp_path, model, optimizer, 1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed right after the rename of step-000002, before `latest` moved

    monkeypatch.setattr(ckpt, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, model, optimizer, 2)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 1  # step-000002 exists but `latest` never pointed to it
    assert (tmp_path / "step-000002").is_dir()
    save(tmp_path, model, optimizer, 2)  # a resumed run writes step 2 again, replacing the orphan
    assert load_checkpoint(tmp_path).step == 2


def test_leftovers_of_a_killed_writer_are_ignored_then_cleaned(tmp_path, trained):
    model, optimizer = trained
    save(tmp_path, model, optimizer, 1)
    leftover = tmp_path / ".tmp-step-000002-abcd"  # what SIGKILL in the middle of a save leaves
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert load_checkpoint(tmp_path).step == 1
    save(tmp_path, model, optimizer, 2)
    assert not leftover.exists()


# --------------------------------------------------------------------------- clear errors


def test_missing_and_corrupt_checkpoints_are_named(tmp_path, trained):
    model, optimizer = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    folder = save(tmp_path, model, optimizer, 1)

    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])  # truncated by a bad copy
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):
        load_model(tmp_path)
    weights.write_bytes(original)

    (folder / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors is missing"):
        load_checkpoint(folder)

    (folder / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state\.json is corrupt"):
        load_checkpoint(folder)

    (tmp_path / "latest").write_text("step-000009\n")
    with pytest.raises(CheckpointError, match="step-000009"):
        load_checkpoint(tmp_path)
