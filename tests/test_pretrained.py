"""Tower pretraining and the shipped tower checkpoints.

The committed checkpoints in ``mimo_lib/pretrained/`` must still do their job
on held-out clips (clips never used in pretraining), so a code change that
silently breaks a tower — or the way its weights load — fails here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from mimo_lib.audio_tower import build_audio_tower
from mimo_lib.checkpoint import read_checkpoint_config
from mimo_lib.config import AudioTowerConfig, VisionTowerConfig, get_preset
from mimo_lib.data.synthetic import SyntheticConfig
from mimo_lib.model import MIMOModel
from mimo_lib.optim import WarmupCosineSchedule
from mimo_lib.pretrain_towers import (
    AUDIO_ATTRIBUTES,
    VISION_ATTRIBUTES,
    ContrastivePretrainer,
    all_captions,
    build_parser,
    load_pretrainer,
    load_tower_weights,
    make_pretraining_set,
    pretrain,
    read_metadata,
    recipe_from_args,
    save_pretrained,
    shipped_checkpoint,
    zero_shot_accuracy,
)
from mimo_lib.pretrain_towers import main as pretrain_towers_main
from mimo_lib.recipes import get_recipe
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.towers import PRETRAINED_DIR, TowerCheckpointError, read_tower_config, tower_config_differences
from mimo_lib.vision_tower import build_vision_tower

#: Held-out clips use a seed the pretraining command never uses for training.
HELD_OUT_SEED = 4242
#: What each shipped tower must still reach, zero-shot, on held-out clips
#: (chance: shape 1/3, colour 1/4, motion 1/5, instrument 1/4, pitch 1/2).
REQUIRED_ACCURACY = {"vision": 0.9, "audio": 0.9}


def test_captions_cover_the_world():
    vision, vision_attrs = all_captions("vision")
    audio, _ = all_captions("audio")
    assert len(vision) == len(set(vision)) == 3 * 4 * 5
    assert len(audio) == len(set(audio)) == 4 * 2
    assert vision[vision_attrs.index({"shape": "circle", "colour": "red", "motion": "left"})] == (
        "a red circle moves to the left"
    )


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_shipped_tower_still_does_its_job(modality):
    path = shipped_checkpoint(modality, "toy")
    assert path.is_file(), f"{path} missing: run python -m mimo_lib.pretrain_towers"
    model = load_pretrainer(path)
    config = get_preset("toy")
    synthetic = SyntheticConfig(num_frames=config.vision.num_frames, image_size=config.vision.image_size)
    media, targets = make_pretraining_set(modality, 192, HELD_OUT_SEED, synthetic)
    accuracy = zero_shot_accuracy(model, media, targets)
    for attribute in VISION_ATTRIBUTES if modality == "vision" else AUDIO_ATTRIBUTES:
        assert accuracy[attribute] >= REQUIRED_ACCURACY[modality], f"{modality} {attribute}: {accuracy}"
    recorded = json.loads(read_metadata(path)["extra"])
    assert recorded["steps"] > 0 and "held_out_zero_shot_accuracy" in recorded


def test_shipped_towers_load_into_the_mimo_model():
    model = MIMOModel(get_preset("toy"))
    before = model.vision_tower.position_embedding.detach().clone()
    model.load_towers(shipped_checkpoint("vision"), shipped_checkpoint("audio"))
    reference = load_pretrainer(shipped_checkpoint("vision"))
    assert not torch.equal(before, model.vision_tower.position_embedding)
    for name, value in reference.tower.state_dict().items():
        assert torch.equal(model.vision_tower.state_dict()[name], value), name


def test_loading_into_a_differently_shaped_tower_names_the_fields():
    tower = build_audio_tower(AudioTowerConfig(hidden_size=64, num_attention_heads=4))
    with pytest.raises(TowerCheckpointError, match="hidden_size: checkpoint 128, model 64"):
        load_tower_weights(tower, shipped_checkpoint("audio"), "audio_tower")
    with pytest.raises(TowerCheckpointError, match="pretrain_towers"):
        load_tower_weights(tower, shipped_checkpoint("audio").with_name("nothing.safetensors"))


def test_tower_config_differences_lists_every_field_but_the_path():
    saved = asdict(get_preset("toy").audio)
    assert tower_config_differences(saved, get_preset("toy").audio) == []
    assert tower_config_differences(saved, replace(get_preset("toy").audio, pretrained_path="/elsewhere")) == []
    other = replace(get_preset("toy").audio, num_layers=2, hidden_size=64)
    assert tower_config_differences(saved, other) == [
        "hidden_size: checkpoint 128, model 64",
        "num_layers: checkpoint 4, model 2",
    ]
    assert tower_config_differences(saved, asdict(other)) == tower_config_differences(saved, other)
    assert tower_config_differences({**saved, "new_field": 1}, saved) == ["new_field: checkpoint 1, model None"]


def test_a_file_that_is_not_a_tower_checkpoint_is_named(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))  # safetensors, but no tower config in its metadata
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    for path in (plain, garbage):
        with pytest.raises(TowerCheckpointError, match=f"{path.name} is not a tower checkpoint"):
            read_tower_config(path)
        with pytest.raises(TowerCheckpointError, match="not a tower checkpoint"):
            load_pretrainer(path)


def test_tower_loading_lives_in_the_library_module():
    # model.py and train.py load towers from mimo_lib.towers; the CLI module still answers to the old names
    import mimo_lib.pretrain_towers as cli
    import mimo_lib.towers as towers

    for name in ("load_tower_weights", "read_metadata", "shipped_checkpoint", "PRETRAINED_DIR"):
        assert getattr(cli, name) is getattr(towers, name), name
    assert towers.shipped_checkpoint("audio") == towers.PRETRAINED_DIR / "audio_tower_toy.safetensors"


def test_a_short_pretraining_run_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    config = AudioTowerConfig(hidden_size=32, num_layers=1, num_attention_heads=2, ffn_hidden_size=64)
    model = ContrastivePretrainer("audio", build_audio_tower(config), Tokenizer.default())
    media, targets = make_pretraining_set("audio", 128, 0, SyntheticConfig())
    losses = pretrain(model, media, targets, steps=40, batch_size=16, lr=3e-3, progress=False)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    path = save_pretrained(model, tmp_path / "audio.safetensors", {"steps": len(losses)})
    assert list(tmp_path.iterdir()) == [path], "the atomic write left a temporary file"
    again = load_pretrainer(path)
    model.eval()
    torch.testing.assert_close(again.clip_embeddings(media[:4]), model.clip_embeddings(media[:4]))


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_a_pretraining_set_is_the_same_rendered_in_worker_processes(modality):
    here = make_pretraining_set(modality, 20, 3, SyntheticConfig(), processes=1)
    forked = make_pretraining_set(modality, 20, 3, SyntheticConfig(), processes=2)
    assert here[0].dtype == (torch.uint8 if modality == "vision" else torch.float32)
    assert torch.equal(forked[0], here[0]) and torch.equal(forked[1], here[1])
    assert len(set(here[1].tolist())) > 1  # different clips, not one repeated


def test_pretraining_follows_the_shared_warmup_cosine_schedule(monkeypatch):
    seen = []
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    torch.manual_seed(0)
    config = AudioTowerConfig(hidden_size=16, num_layers=1, num_attention_heads=2, ffn_hidden_size=32)
    model = ContrastivePretrainer("audio", build_audio_tower(config), Tokenizer.default())
    media, targets = make_pretraining_set("audio", 8, 0, SyntheticConfig())
    pretrain(model, media, targets, steps=40, batch_size=4, lr=2e-3, progress=False)
    schedule = WarmupCosineSchedule(2e-3, min_lr=0.0, warmup_iters=2, train_iters=40)  # warm-up: 5% of 40 steps
    assert seen == [schedule(step) for step in range(1, 41)]
    assert seen[1] == 2e-3 and seen[-1] == 0.0


def test_command_line_defaults_are_the_recipe():
    for preset in ("toy", "tiny"):
        recipe, steps = recipe_from_args(build_parser().parse_args(["--preset", preset]))
        assert recipe == get_recipe(preset).towers and steps is None
    recipe, steps = recipe_from_args(build_parser().parse_args(["--lr", "3e-4", "--seed", "5", "--steps", "7"]))
    assert recipe == replace(get_recipe("toy").towers, lr=3e-4, seed=5) and steps == 7


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_the_shipped_towers_were_made_by_the_toy_recipe(modality):
    """`python -m mimo_lib.pretrain_towers` with no tuning flag reproduces the committed checkpoints' settings."""
    recorded = json.loads(read_metadata(shipped_checkpoint(modality))["extra"])
    recipe = get_recipe("toy").towers
    assert recorded["steps"] == recipe.steps(modality)
    for field in ("batch_size", "lr", "num_clips", "seed"):
        assert recorded[field] == getattr(recipe, field), field


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
    (["--preset", "huge"], "invalid choice"),
])
def test_bad_flags_are_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_towers_main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_shipped_files_use_the_current_parameter_names():
    """The committed weights need no key map: their names are the towers' own (Whisper's, for audio)."""
    for modality in ("vision", "audio"):
        path = shipped_checkpoint(modality)
        config = json.loads(read_metadata(path)["tower_config"])
        tower = (build_vision_tower(VisionTowerConfig(**config)) if modality == "vision"
                 else build_audio_tower(AudioTowerConfig(**config)))
        saved = {k.removeprefix("tower.") for k in load_file(str(path)) if k.startswith("tower.")}
        assert saved == set(tower.state_dict()), modality
    model_folder = PRETRAINED_DIR / "mimo_toy"
    model = MIMOModel(read_checkpoint_config(model_folder))
    assert set(load_file(str(model_folder / "model.safetensors"))) == set(model.state_dict())
