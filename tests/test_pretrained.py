"""Tower pretraining and the shipped tower checkpoints.

The committed checkpoints in ``mimo_lib/pretrained/`` must still do their job
on held-out clips (clips never used in pretraining), so a code change that
silently breaks a tower — or the way its weights load — fails here.
"""

from __future__ import annotations

import json

import pytest
import torch

from mimo_lib.audio_tower import build_audio_tower
from mimo_lib.config import AudioTowerConfig, get_preset
from mimo_lib.data.synthetic import SyntheticConfig
from mimo_lib.model import MIMOModel
from mimo_lib.pretrain_towers import (
    AUDIO_ATTRIBUTES,
    VISION_ATTRIBUTES,
    ContrastivePretrainer,
    all_captions,
    load_pretrainer,
    load_tower_weights,
    make_pretraining_set,
    pretrain,
    read_metadata,
    save_pretrained,
    shipped_checkpoint,
    zero_shot_accuracy,
)
from mimo_lib.tokenizer import Tokenizer

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
    with pytest.raises(ValueError, match="hidden_size: checkpoint 128 vs model 64"):
        load_tower_weights(tower, shipped_checkpoint("audio"), "audio_tower")
    with pytest.raises(FileNotFoundError, match="pretrain_towers"):
        load_tower_weights(tower, shipped_checkpoint("audio").with_name("nothing.safetensors"))


def test_a_short_pretraining_run_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    config = AudioTowerConfig(hidden_size=32, num_layers=1, num_attention_heads=2, ffn_hidden_size=64)
    model = ContrastivePretrainer("audio", build_audio_tower(config), Tokenizer.default())
    media, targets = make_pretraining_set("audio", 128, 0, SyntheticConfig())
    losses = pretrain(model, media, targets, steps=40, batch_size=16, lr=3e-3, progress=False)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    path = save_pretrained(model, tmp_path / "audio.safetensors", {"steps": len(losses)})
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file"
    again = load_pretrainer(path)
    model.eval()
    torch.testing.assert_close(again.clip_embeddings(media[:4]), model.clip_embeddings(media[:4]))
