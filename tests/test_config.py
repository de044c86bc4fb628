"""Configs: presets build, derived sizes add up, bad settings fail early with a reason."""

from __future__ import annotations

import pytest

from mimo_lib.config import (
    PRESETS,
    AudioTowerConfig,
    LanguageModelConfig,
    MIMOConfig,
    ProjectorConfig,
    VisionTowerConfig,
    get_preset,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_dict(name):
    config = get_preset(name)
    assert MIMOConfig.from_dict(config.to_dict()) == config
    assert config.language_model.padded_vocab_size % config.language_model.make_vocab_size_divisible_by == 0
    assert config.language_model.padded_vocab_size >= config.language_model.vocab_size


def test_token_counts_of_the_toy_preset():
    block, toy = MIMOConfig(), get_preset("toy")
    # 64x64 frames, 8x8 patches -> 8x8 grid, pooled 2x2 -> 16 tokens a frame, 8 frames
    assert toy.vision.tokens_per_frame == 16 and toy.vision.num_tokens == 128
    # the block layout of chapters 4-7 merges each cell's 8 frames into one token: 16 decoder positions a clip
    assert block.projector.vision_temporal_compression == 8 and block.num_video_tokens == 16
    # the toy preset keeps a time axis (chapter 8): 4 frames a token, one group per 0.5-s chunk -> 32 positions
    assert toy.projector.vision_temporal_compression == 4 and toy.num_video_tokens == 32
    assert (toy.av_layout, toy.av_positions, toy.chunk_seconds) == ("interleaved", "time", 0.5)
    # 1 s -> 100 log-mel frames -> stride 2 -> 50 positions -> pooled to 25
    assert toy.audio.encoder_seq_len == 50 and toy.num_audio_tokens == 25
    # both toy models' audio tower attends within half-seconds (the generic Whisper-like default: whole clip)
    assert toy.audio == block.audio and toy.audio.attention_window_s == 0.5
    assert AudioTowerConfig().attention_window_s is None
    compressed = MIMOConfig(projector=ProjectorConfig(vision_token_compression=4, audio_token_compression=5))
    assert compressed.num_video_tokens == 32 and compressed.num_audio_tokens == 5


def test_the_7b_preset_has_the_seed_shape():
    lm = get_preset("llava-avlm-7b").language_model
    assert (lm.num_layers, lm.hidden_size, lm.num_attention_heads) == (32, 4096, 32)


def test_backbone_defaults_fit_their_encoder():
    beats = AudioTowerConfig(backbone_type="beats")
    assert beats.num_mel_bins == 128 and beats.encoder_seq_len == 56 and beats.audio_seq_len == 28
    assert AudioTowerConfig().num_mel_bins == 80


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LanguageModelConfig(hidden_size=130, num_attention_heads=4), "not divisible by num_attention_heads"),
        (lambda: VisionTowerConfig(image_size=60, patch_size=8), "not divisible by patch_size"),
        (lambda: VisionTowerConfig(pool_size=3), "not divisible by pool_size"),
        (lambda: VisionTowerConfig(pool_size=0), "pool_size must be at least 1"),
        (lambda: VisionTowerConfig(select_layer=5), "select_layer 5"),
        (lambda: VisionTowerConfig(backbone_type="resnet"), "not one of"),
        (lambda: AudioTowerConfig(audio_seq_len=0), r"--audio-seq-len 0: the number of audio tokens must be a positive"),
        (lambda: AudioTowerConfig(clip_duration_s=0), r"--clip-duration must be a positive number of seconds"),
        (lambda: MIMOConfig(clip_window="middle"), r"clip_window='middle' is not one of \('start', 'center'\)"),
        (lambda: AudioTowerConfig(backbone_type="beats", num_mel_bins=100), "not divisible by beats_patch_size"),
        (lambda: MIMOConfig(projector=ProjectorConfig(audio_token_compression=2)), "must divide audio_seq_len 25"),
        (lambda: get_preset("huge"), "unknown preset"),
        (lambda: MIMOConfig.from_dict({"vision": {"num_frame": 8}}), r"unknown vision config fields \['num_frame'\]"),
    ],
)
def test_bad_settings_fail_with_a_reason(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_last_block_can_be_selected():
    assert VisionTowerConfig(select_layer=4).select_layer == 4


def test_conv_stem_needs_a_power_of_two_patch():
    assert VisionTowerConfig(patch_embedding_type="conv", patch_size=16).grid_size == 4
    with pytest.raises(ValueError, match="power of 2"):
        VisionTowerConfig(patch_embedding_type="conv", image_size=48, patch_size=12)
    with pytest.raises(ValueError, match="hf-clip checkpoints use CLIP's linear patch embedding"):
        VisionTowerConfig(backbone_type="hf-clip", patch_embedding_type="conv")


def test_temporal_compression_must_divide_the_frames():
    with pytest.raises(ValueError, match="vision_temporal_compression 3 must divide num_frames 8"):
        MIMOConfig(projector=ProjectorConfig(vision_temporal_compression=3))
    both = MIMOConfig(projector=ProjectorConfig(vision_temporal_compression=2, vision_token_compression=4))
    assert both.num_video_tokens == 128 // 8
    with pytest.raises(ValueError, match="vision_token_compression 3 must divide the 64 video tokens"):
        MIMOConfig(projector=ProjectorConfig(vision_temporal_compression=2, vision_token_compression=3))


def test_any_positive_audio_seq_len_is_accepted_and_old_configs_read_the_window_from_0():
    # the seed's command: --audio-backbone-type beats --audio-seq-len 1024 --num-frames 8
    config = MIMOConfig(audio=AudioTowerConfig(backbone_type="beats", audio_seq_len=1024))
    assert config.num_audio_tokens == 1024 and AudioTowerConfig(audio_seq_len=30).audio_seq_len == 30
    old = MIMOConfig().to_dict()
    del old["clip_window"]  # a checkpoint written before the field existed
    assert MIMOConfig.from_dict(old).clip_window == "start"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_a_recipe_for_every_stage(name):
    from mimo_lib.recipes import get_recipe

    recipe = get_recipe(name)
    assert recipe.preset == name and recipe.version.startswith(name)
    for stage in ("align", "instruct"):
        numbers = recipe.stage(stage)
        assert numbers.train_iters > 0 and numbers.micro_batch_size > 0 and 0 <= numbers.min_lr <= numbers.lr
    assert recipe.towers.steps("vision") > 0 and recipe.towers.steps("audio") > 0
