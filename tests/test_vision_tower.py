"""The vision tower: shapes, frame-major order, LLaVA layer selection, and agreement with transformers' CLIP."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mimo_lib import vision_tower
from mimo_lib.config import VisionTowerConfig, get_preset
from mimo_lib.data.synthetic import make_clip
from mimo_lib.features import patchify
from mimo_lib.towers import sinusoids
from mimo_lib.vision_tower import (
    CLIP_MEAN,
    CLIP_STD,
    HFCLIPVisionTower,
    VisionTower,
    build_vision_tower,
    sincos_1d,
    vision_tower_num_parameters,
)

#: A tower small enough for many tests: 4 frames of 32x32, a 4x4 patch grid, 3 blocks.
TINY = VisionTowerConfig(
    num_frames=4, image_size=32, patch_size=8, hidden_size=32, num_layers=3, num_attention_heads=4, ffn_hidden_size=64
)


def tiny(**overrides) -> VisionTowerConfig:
    return dataclasses.replace(TINY, **overrides)


def random_video(config: VisionTowerConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_frames, 3, config.image_size, config.image_size)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)  # (B, T, 3, H, W)


def make_tower(config: VisionTowerConfig, seed: int = 0) -> VisionTower:
    torch.manual_seed(seed)
    return VisionTower(config).eval()


# --------------------------------------------------------------------------- #
# Shapes and order
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pool_size": 1},
        {"pool_size": 4},
        {"drop_class_token": False},
        {"drop_class_token": False, "pool_size": 1, "select_layer": -1},
        {"select_layer": 1, "temporal_embedding": False, "normalize_output": False},
    ],
)
def test_output_shape(overrides):
    config = tiny(**overrides)
    tower = make_tower(config)
    out = tower(random_video(config, batch=3))
    assert out.shape == (3, config.num_tokens, config.hidden_size)
    assert tower.output_size == config.hidden_size
    patches = (config.grid_size // config.pool_size) ** 2
    assert config.tokens_per_frame == patches + (0 if config.drop_class_token else 1)


def test_toy_preset_on_a_synthetic_clip():
    config = get_preset("toy").vision  # 8 frames of 64x64, the size the synthetic clips are rendered at
    tower = make_tower(config)
    video = make_clip(0).video.unsqueeze(0)  # (1, 8, 3, 64, 64) uint8
    out = tower(video)
    assert out.shape == (1, 8 * 16, 128)
    assert torch.isfinite(out).all()
    assert tower.class_embedding_per_frame(video).shape == (1, 8, 128)


def test_output_is_frame_major_pooled_selection():
    """Rebuild forward() by hand from the selected hidden states, with pooling written independently."""
    config = tiny(pool_size=2)
    tower = make_tower(config)
    video = random_video(config)
    b, t, d, g, p = 2, config.num_frames, config.hidden_size, config.grid_size, config.pool_size
    hidden = tower.selected_hidden_states(video).view(b, t, 1 + g * g, d)
    grid = hidden[:, :, 1:].reshape(b, t, g // p, p, g // p, p, d)  # (B, T, rows, p, cols, p, D)
    pooled = grid.mean(dim=(3, 5)).reshape(b, t, -1, d)  # (B, T, n, D), row-major over the pooled grid
    pooled = pooled + tower.token_head.temporal_embedding.view(1, t, 1, d)
    norm = tower.token_head.output_norm
    expected = F.layer_norm(pooled, (d,), norm.weight, norm.bias, norm.eps).reshape(b, -1, d)
    torch.testing.assert_close(tower(video), expected, rtol=1e-5, atol=1e-5)


def test_changing_one_frame_changes_only_its_tokens():
    config = tiny()
    tower = make_tower(config)
    video = random_video(config)
    edited = video.clone()
    edited[:, 3] = 255 - edited[:, 3]
    n = config.tokens_per_frame
    before, after = tower(video), tower(edited)
    for frame in range(config.num_frames):
        span = slice(frame * n, (frame + 1) * n)
        if frame == 3:
            assert (before[:, span] - after[:, span]).abs().max() > 0.1
        else:
            torch.testing.assert_close(before[:, span], after[:, span])


# --------------------------------------------------------------------------- #
# Embeddings, layers, attention
# --------------------------------------------------------------------------- #


def test_patch_embedding_is_patchify_times_weight():
    config = tiny()
    tower = make_tower(config)
    frames = tower.preprocess(random_video(config)).flatten(0, 1)  # (B*T, 3, 32, 32)
    d, p = config.hidden_size, config.patch_size
    weight = tower.patch_embedding.weight.reshape(d, -1)  # (D, 3*p*p), (C, p, p) flattened as patchify does
    by_linear = patchify(frames, p) @ weight.T  # (B*T, N, D)
    by_conv = tower.patch_embedding(frames).flatten(2).transpose(1, 2)
    torch.testing.assert_close(by_conv, by_linear, rtol=1e-5, atol=1e-5)
    # and hidden state 0 is exactly [class token, patches] + positions, then pre_layrnorm
    cls = tower.class_embedding.expand(frames.shape[0], 1, d)
    expected = tower.pre_layrnorm(torch.cat([cls, by_linear], dim=1) + tower.position_embedding)
    torch.testing.assert_close(tower.frame_hidden_states(random_video(config))[0], expected, rtol=1e-5, atol=1e-5)


def test_frame_hidden_states_shapes():
    config = tiny()
    states = make_tower(config).frame_hidden_states(random_video(config))
    assert len(states) == config.num_layers + 1
    assert all(s.shape == (2 * config.num_frames, 1 + config.grid_size**2, config.hidden_size) for s in states)


@pytest.mark.parametrize("select_layer", [1, 2, -1, -2, -3])
def test_select_layer_picks_that_hidden_state(select_layer):
    config = tiny(select_layer=select_layer)
    tower = make_tower(config)
    video = random_video(config)
    states = tower.frame_hidden_states(video)
    selected = tower.selected_hidden_states(video)
    torch.testing.assert_close(selected, states[select_layer], rtol=0, atol=0)
    for index, other in enumerate(states):  # and no other layer
        if index != select_layer % len(states):
            assert not torch.allclose(selected, other)
    # with pooling, temporal embedding and normalisation off, forward() is that layer's patch tokens
    plain = tiny(select_layer=select_layer, pool_size=1, temporal_embedding=False, normalize_output=False)
    plain_tower = make_tower(plain)
    plain_tower.load_state_dict(tower.state_dict(), strict=False)
    expected = states[select_layer][:, 1:].reshape(2, -1, config.hidden_size)
    torch.testing.assert_close(plain_tower(video), expected, rtol=0, atol=0)


def test_attention_map_matches_the_attention_forward_uses():
    config = tiny()
    tower = make_tower(config)
    hidden = tower.frame_hidden_states(random_video(config))[1]  # input of block 2
    block = tower.blocks[1]
    probs = block.attention_map(hidden)  # (B*T, heads, S, S)
    seq = 1 + config.grid_size**2
    assert probs.shape == (hidden.shape[0], config.num_attention_heads, seq, seq)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    attn = block.self_attn
    v = attn._split_heads(attn.v_proj(block.layer_norm1(hidden)))
    by_hand = attn.out_proj((probs @ v).transpose(1, 2).reshape(hidden.shape))
    torch.testing.assert_close(attn(block.layer_norm1(hidden)), by_hand, rtol=1e-5, atol=1e-5)


def test_temporal_embedding_tells_identical_frames_apart():
    config = tiny()
    one_frame = random_video(config, batch=1)[:, :1]
    video = one_frame.expand(-1, config.num_frames, -1, -1, -1)  # the same frame at every position
    n = config.tokens_per_frame
    with_time = make_tower(config)(video).view(1, config.num_frames, n, -1)
    assert (with_time[:, 0] - with_time[:, 1]).abs().max() > 1e-3
    without = make_tower(tiny(temporal_embedding=False))(video).view(1, config.num_frames, n, -1)
    for frame in range(1, config.num_frames):
        torch.testing.assert_close(without[:, frame], without[:, 0])


# --------------------------------------------------------------------------- #
# Input handling
# --------------------------------------------------------------------------- #


def test_preprocess_normalises_with_clip_statistics():
    config = tiny()
    tower = make_tower(config)
    video = torch.zeros(1, config.num_frames, 3, 32, 32, dtype=torch.uint8)
    video[..., 0, :, :] = 255  # a pure red video
    x = tower.preprocess(video)
    assert x.dtype == torch.float32 and x.shape == video.shape
    torch.testing.assert_close(x[0, 0, :, 0, 0], torch.tensor([(1 - CLIP_MEAN[0]) / CLIP_STD[0],
                                                                -CLIP_MEAN[1] / CLIP_STD[1],
                                                                -CLIP_MEAN[2] / CLIP_STD[2]]))


def test_uint8_and_float_inputs_agree():
    config = tiny()
    tower = make_tower(config)
    video = random_video(config)
    torch.testing.assert_close(tower(video), tower(video.float() / 255), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("make_bad", "match"),
    [
        (lambda v: v[:, :3], "num_frames"),
        (lambda v: v[..., :24, :24], "image_size"),
        (lambda v: v[..., :, :16], "image_size"),
        (lambda v: v[0], r"\(B, T, C, H, W\)"),
        (lambda v: v[:, :, :1], "num_channels"),
        (lambda v: v.float(), r"\[0, 1\]"),
        (lambda v: v.long(), "uint8"),
    ],
)
def test_bad_input_gives_a_clear_error(make_bad, match):
    config = tiny()
    tower = make_tower(config)
    with pytest.raises((ValueError, TypeError), match=match):
        tower(make_bad(random_video(config)))


# --------------------------------------------------------------------------- #
# Parameters and gradients
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("overrides", [{}, {"temporal_embedding": False, "normalize_output": False}])
@pytest.mark.parametrize("preset", ["toy", "small", "llava-avlm-7b"])
def test_closed_form_parameter_count(preset, overrides):
    config = dataclasses.replace(get_preset(preset).vision, **overrides)
    with torch.device("meta"):  # shapes only: the 7B preset's ViT-L/14-336 is never allocated
        tower = VisionTower(config)
    actual = sum(p.numel() for p in tower.parameters())
    assert vision_tower_num_parameters(config) == actual
    if preset == "llava-avlm-7b":
        head = sum(p.numel() for p in tower.token_head.parameters())
        assert actual - head == 303_507_456  # CLIP ViT-L/14-336's vision model, as published


def test_gradients_reach_every_parameter():
    config = tiny(select_layer=-2)
    tower = make_tower(config).train()
    video = random_video(config)
    weights = torch.randn(2, config.num_tokens, config.hidden_size)  # a random readout: LayerNorm outputs sum to 0
    (tower(video) * weights).sum().backward()
    unused = {n for n, _ in tower.named_parameters() if n.startswith(("blocks.2.", "post_layernorm."))}
    for name, param in tower.named_parameters():
        if name in unused:  # forward() stops after the selected (penultimate) block
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    tower.class_embedding_per_frame(video).pow(2).sum().backward()
    for name, param in tower.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_build_vision_tower_clip():
    config = tiny()
    assert type(build_vision_tower(config)) is VisionTower
    with pytest.raises(ValueError, match="pretrained_path"):
        build_vision_tower(tiny(pretrained_path="somewhere"))


# --------------------------------------------------------------------------- #
# hf-clip: transformers' CLIPVisionModel from a local folder
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A tiny random CLIPVisionModel saved with save_pretrained (nothing is downloaded)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.CLIPVisionConfig(
        image_size=TINY.image_size, patch_size=TINY.patch_size, hidden_size=TINY.hidden_size,
        num_hidden_layers=TINY.num_layers, num_attention_heads=TINY.num_attention_heads,
        intermediate_size=TINY.ffn_hidden_size, hidden_act="quick_gelu",
    )
    model = transformers.CLIPVisionModel(hf_config).eval()
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("select_layer", [-2, 1])
def test_hf_clip_selects_the_same_hidden_states(hf_checkpoint, select_layer):
    folder, model = hf_checkpoint
    config = tiny(backbone_type="hf-clip", pretrained_path=str(folder), select_layer=select_layer)
    tower = build_vision_tower(config)
    assert isinstance(tower, HFCLIPVisionTower)
    for name, value in model.state_dict().items():  # the checkpoint's weights, not a fresh init
        assert torch.equal(tower.model.state_dict()[name], value), name
    video = random_video(config)
    pixels = tower.preprocess(video).flatten(0, 1)  # (B*T, 3, H, W)
    reference = model(pixel_values=pixels, output_hidden_states=True)
    assert torch.equal(tower.selected_hidden_states(video), reference.hidden_states[select_layer])
    assert torch.equal(tower.class_embedding_per_frame(video).flatten(0, 1), reference.pooler_output)
    assert tower(video).shape == (2, config.num_tokens, config.hidden_size)
    assert vision_tower_num_parameters(config) == sum(p.numel() for p in tower.parameters())


def test_our_vit_computes_the_same_function_as_hf_clip(hf_checkpoint):
    """Copy the CLIP weights into the from-scratch tower (a renaming) and compare every hidden state."""
    _, model = hf_checkpoint
    ours = make_tower(TINY)
    renamed = {
        name.replace("embeddings.", "").replace("encoder.layers.", "blocks.").replace(
            "position_embedding.weight", "position_embedding"
        ): value
        for name, value in model.state_dict().items()
    }
    missing, unexpected = ours.load_state_dict(renamed, strict=False)
    assert not unexpected and all(name.startswith("token_head.") for name in missing)
    video = random_video(TINY)
    theirs = model(pixel_values=ours.preprocess(video).flatten(0, 1), output_hidden_states=True)
    for mine, reference in zip(ours.frame_hidden_states(video), theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.class_embedding_per_frame(video).flatten(0, 1), theirs.pooler_output,
                               rtol=1e-4, atol=1e-4)


def test_hf_clip_config_mismatch_names_the_checkpoint_values(hf_checkpoint):
    folder, _ = hf_checkpoint
    config = tiny(backbone_type="hf-clip", pretrained_path=str(folder), image_size=64, hidden_size=64)
    with pytest.raises(ValueError, match="checkpoint has image_size=32, hidden_size=32"):
        build_vision_tower(config)


def test_hf_clip_needs_a_local_folder(tmp_path):
    missing = tiny(backbone_type="hf-clip", pretrained_path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="download the checkpoint beforehand"):
        build_vision_tower(missing)
    hub_name = tiny(backbone_type="hf-clip", pretrained_path="openai/clip-vit-large-patch14-336")
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        build_vision_tower(hub_name)
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_vision_tower(tiny(backbone_type="hf-clip", pretrained_path=str(tmp_path)))
    with pytest.raises(ValueError, match="needs pretrained_path"):
        build_vision_tower(tiny(backbone_type="hf-clip"))


def test_sinusoid_spacings():
    # Whisper's spacing ends at exactly 1 / 10000 radian per position; the Transformer's (the vision tower's
    # initial positions) one step short of it; an odd width gets a last channel of zeros
    positions = torch.arange(40.0)
    whisper, transformer = sinusoids(40, 16), sinusoids(40, 16, whisper_spacing=False)
    torch.testing.assert_close(whisper[:, 0], torch.sin(positions))  # the fastest channel: 1 radian per position
    torch.testing.assert_close(whisper[:, 7], torch.sin(positions / 10_000))
    torch.testing.assert_close(whisper[:, 15], torch.cos(positions / 10_000))
    torch.testing.assert_close(transformer[:, 7], torch.sin(positions * 10_000 ** (-7 / 8)))
    torch.testing.assert_close(sincos_1d(40, 16), transformer)
    odd = sinusoids(40, 17, whisper_spacing=False)
    assert torch.equal(odd[:, :16], transformer) and not odd[:, 16].any()


def test_blocks_after_the_selected_layer_can_be_dropped():
    """num_layers 4 with select_layer -2 computes what num_layers 3 with select_layer -1 does: the last block
    (and post_layernorm, which only class_embedding_per_frame uses) never reach the video tokens."""
    deep = make_tower(tiny(num_layers=4, select_layer=-2))
    shallow = VisionTower(tiny(num_layers=3, select_layer=-1))
    trimmed = {k: v for k, v in deep.state_dict().items() if not k.startswith("blocks.3.")}
    shallow.load_state_dict(trimmed)  # strict: nothing else differs
    video = random_video(TINY)
    with torch.no_grad():
        assert torch.equal(shallow(video), deep(video))
        assert torch.equal(shallow.selected_hidden_states(video), deep.frame_hidden_states(video)[3])


# --------------------------------------------------------------------------- #
# Frames in groups when encoding; one pass when training
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("select_layer", [1, -2, -1])
def test_frames_in_groups_give_what_one_pass_gives(monkeypatch, select_layer):
    config = tiny(select_layer=select_layer)
    tower = make_tower(config)
    video = random_video(config, batch=3)  # 12 frames: groups of 5, 5 and 2
    with torch.no_grad():
        monkeypatch.setattr(vision_tower, "FRAMES_PER_PASS", 10**6)
        whole = (tower(video), tower.frame_hidden_states(video), tower.class_embedding_per_frame(video))
        monkeypatch.setattr(vision_tower, "FRAMES_PER_PASS", 5)
        grouped = (tower(video), tower.frame_hidden_states(video), tower.class_embedding_per_frame(video))
    torch.testing.assert_close(grouped[0], whole[0], rtol=1e-6, atol=1e-6)
    assert len(grouped[1]) == len(whole[1]) == config.num_layers + 1
    for mine, reference in zip(grouped[1], whole[1], strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grouped[2], whole[2], rtol=1e-6, atol=1e-6)


def test_training_runs_one_pass_whatever_the_group_size(monkeypatch):
    """With gradients the frames are not grouped: the same gradients bit for bit, so the recipe remakes the towers."""
    config = tiny(patch_embedding_type="conv")
    video = random_video(config, batch=3)
    grads = []
    for group in (10**6, 5):
        monkeypatch.setattr(vision_tower, "FRAMES_PER_PASS", group)
        tower = make_tower(config).train()
        tower(video).square().sum().backward()
        grads.append({n: p.grad for n, p in tower.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "patch_embedding.0.weight" in grads[0]
    for name in grads[0]:
        assert torch.equal(grads[1][name], grads[0][name]), name
