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
    ModelSizeError,
    capture_rng_state,
    check_model_size,
    estimate_num_parameters,
    export_towers,
    list_checkpoints,
    load_checkpoint,
    load_model,
    load_tokenizer,
    read_train_config,
    record_model_folder,
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
    twin = MIMOModel(loaded.config)
    twin.load_state_dict(loaded.model_state)
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
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "manifest.json", "model.safetensors", "tokenizer.json"
    ]
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


# --------------------------------------------------------------------------- integrity of model folders


def flip_bytes(path: Path, offset: int, count: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_model_folder_is_refused(tmp_path, trained):
    model, _ = trained
    folder = save_model_only(model, tmp_path / "final", Tokenizer.default())
    weights = folder / "model.safetensors"
    flip_bytes(weights, len(weights.read_bytes()) // 2)  # 4 KB of flipped bytes in the middle of the weights
    with pytest.raises(CheckpointError, match=r"final/model\.safetensors is corrupt"):
        load_model(folder)

    folder = save_model_only(model, tmp_path / "final", Tokenizer.default())
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace('"', "'", 0) + " ")
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is corrupt"):
        load_model(folder)

    folder = save_model_only(model, tmp_path / "final")
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json.*mimo_lib.checkpoint record"):
        load_model(folder)
    record_model_folder(folder)  # the user vouches for the folder: it loads again
    assert_same_state(load_model(folder).state_dict(), model.state_dict())


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_config_edit_that_no_shape_shows_is_refused(tmp_path, trained):
    model, optimizer = trained
    assert model.config.language_model.num_attention_heads == 2

    def more_heads(config: dict) -> None:
        config["language_model"]["num_attention_heads"] = 4  # same tensor shapes, another model

    folder = save_model_only(model, tmp_path / "final")
    edit_json(folder / "config.json", more_heads)
    with pytest.raises(CheckpointError, match=r"config\.json is corrupt"):  # its hash changed
        load_model(folder)
    record_model_folder(folder)  # even re-recorded, the weights remember the config they were saved with
    with pytest.raises(CheckpointError, match="language_model.num_attention_heads: 2 in the weights' record, 4"):
        load_model(folder)

    step = save(tmp_path / "run", model, optimizer, 1)
    edit_json(step / "state.json", lambda state: more_heads(state["config"]))
    for load in (load_model, load_checkpoint):
        with pytest.raises(CheckpointError, match="num_attention_heads"):
            load(step)


def test_a_huge_config_is_refused_before_anything_is_allocated(tmp_path, trained, monkeypatch):
    model, _ = trained
    folder = save_model_only(model, tmp_path / "final")
    edit_json(folder / "config.json", lambda c: c["language_model"].update(hidden_size=16384, ffn_hidden_size=65536))
    # a file from before configs were recorded in the weights: only the sizes can tell
    weights = str(folder / "model.safetensors")
    ckpt.save_file(ckpt.load_file(weights), weights, metadata={"format": "mimo-model-v1"})
    record_model_folder(folder)
    monkeypatch.setattr(ckpt, "_read_tensors", lambda *a, **k: pytest.fail("weights were read"))
    monkeypatch.setattr(ckpt, "_build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match="holds 80,912 numbers but its config describes a model of 6,993,512,592"):
        load_model(folder)
    monkeypatch.undo()

    huge = get_preset("toy")
    huge.language_model.num_layers = 100_000  # estimated, not built: this takes milliseconds
    monkeypatch.setattr(ckpt, "memory_bytes", lambda: 8 * 10**9)
    with pytest.raises(ModelSizeError, match="more than this machine's 8.0 GB"):
        check_model_size(huge, what="the model")


@pytest.mark.parametrize("preset", ["tiny", "toy", "small"])
def test_the_parameter_estimate_is_exact(preset):
    config = get_preset(preset)
    config.language_model.num_layers += 3
    config.vision.num_layers += 1
    assert estimate_num_parameters(config) == sum(t.numel() for t in MIMOModel(config).state_dict().values())


def test_json_of_the_wrong_kind_is_a_clear_error(tmp_path, trained):
    model, optimizer = trained
    folder = save_model_only(model, tmp_path / "final")
    (folder / "config.json").write_text("[]")
    with pytest.raises(CheckpointError, match=r"config\.json.*JSON list, not an object"):
        load_model(folder)

    step = save(tmp_path / "run", model, optimizer, 1)
    state = (step / "state.json").read_text()
    (step / "state.json").write_text("[]")
    with pytest.raises(CheckpointError, match=r"state\.json.*JSON list"):
        load_checkpoint(step)
    for bad_step in ('"ten"', "1.5", "-3", "true"):
        (step / "state.json").write_text(state.replace('"step": 1,', f'"step": {bad_step},'))
        with pytest.raises(CheckpointError, match="'step' must be a non-negative integer"):
            load_checkpoint(step)


def test_non_finite_weights_are_refused(tmp_path, trained):
    model, optimizer = trained
    with torch.no_grad():
        next(model.language_model.parameters())[0, 0] = float("nan")
    for folder in (save_model_only(model, tmp_path / "final"), save(tmp_path / "run", model, optimizer, 1)):
        with pytest.raises(CheckpointError, match="NaN or infinite"):
            load_model(folder)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(tmp_path / "run")


def test_train_config_is_read_back(tmp_path, trained):
    model, optimizer = trained
    settings = {"data_path": "clips/", "valid_fraction": 0.1, "seed": 3}
    save(tmp_path / "run", model, optimizer, 1, train_config=settings)
    assert read_train_config(tmp_path / "run") == settings
    assert load_checkpoint(tmp_path / "run").train_config == settings
    folder = save_model_only(model, tmp_path / "final", train_config=settings)
    assert read_train_config(folder) == settings
    assert read_train_config(save_model_only(model, tmp_path / "other")) is None


def test_towers_export_and_load_like_pretrained_ones(tmp_path, trained):
    from mimo_lib.pretrain_towers import load_tower_weights

    model, _ = trained
    files = export_towers(save_model_only(model, tmp_path / "final"), tmp_path / "towers")
    fresh = MIMOModel(tiny_config())
    load_tower_weights(fresh.vision_tower, files["vision"], "vision_tower")
    load_tower_weights(fresh.audio_tower, files["audio"], "audio_tower")
    assert_same_state(fresh.vision_tower.state_dict(), model.vision_tower.state_dict())
    assert_same_state(fresh.audio_tower.state_dict(), model.audio_tower.state_dict())


def test_an_hf_clip_model_folder_loads_after_the_hf_folder_is_gone(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = tiny_config()
    vision = config.vision
    hf_config = transformers.CLIPVisionConfig(
        image_size=vision.image_size, patch_size=vision.patch_size, hidden_size=vision.hidden_size,
        num_hidden_layers=vision.num_layers, num_attention_heads=vision.num_attention_heads,
        intermediate_size=vision.ffn_hidden_size, hidden_act="quick_gelu",
    )
    hf_folder = tmp_path / "clip"
    transformers.CLIPVisionModel(hf_config).save_pretrained(hf_folder)
    config.vision.backbone_type, config.vision.patch_embedding_type = "hf-clip", "linear"
    config.vision.pretrained_path = str(hf_folder)
    torch.manual_seed(0)
    model = MIMOModel(config)
    folder = save_model_only(model, tmp_path / "final")
    import shutil

    shutil.rmtree(hf_folder)  # the model folder is moved to a machine without the HF checkpoint
    moved = tmp_path / "elsewhere" / "final"
    shutil.copytree(folder, moved)
    loaded = load_model(moved)
    assert loaded.config == model.config  # still names the original folder, for the record
    assert_same_state(loaded.state_dict(), model.state_dict())


def test_load_towers_takes_a_trained_model_folder(tmp_path):
    from mimo_lib.model import MIMOModel

    torch.manual_seed(1)
    trained = MIMOModel(get_preset("tiny"))
    folder = save_model_only(trained, tmp_path / "final")
    torch.manual_seed(2)
    fresh = MIMOModel(get_preset("tiny"))
    fresh.load_towers(folder, folder)
    mine, theirs = fresh.state_dict(), trained.state_dict()
    towers = [k for k in theirs if k.startswith(("vision_tower.", "audio_tower."))]
    assert towers and all(torch.equal(mine[k], theirs[k]) for k in towers)
    decoder = [k for k in theirs if k.startswith("language_model.") and theirs[k].dim() == 2]  # random matrices
    assert not any(torch.equal(mine[k], theirs[k]) for k in decoder)  # only the towers were taken
