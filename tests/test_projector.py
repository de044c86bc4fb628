"""Tests for mimo_lib.projector: the LLaVA-1.5 MLP projector with token compression."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mimo_lib.config import MIMOConfig, ProjectorConfig, get_preset
from mimo_lib.model import MIMOModel
from mimo_lib.projector import (
    ModalityProjector,
    merge_frames,
    merge_tokens,
    merged_token_frames,
    projector_num_parameters,
)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_output_shape(k):
    projector = ModalityProjector(input_size=12, output_size=20, token_compression=k)
    x = torch.randn(3, 16, 12)  # (B, N, D_enc)
    assert projector(x).shape == (3, 16 // k, 20)
    assert projector.num_output_tokens(16) == 16 // k


def test_is_linear_gelu_linear():
    torch.manual_seed(0)
    projector = ModalityProjector(6, 10)
    x = torch.randn(2, 5, 6)
    h = torch.nn.functional.gelu(x @ projector.linear_fc1.weight.T + projector.linear_fc1.bias)
    expected = h @ projector.linear_fc2.weight.T + projector.linear_fc2.bias
    torch.testing.assert_close(projector(x), expected)


def test_merge_tokens_concatenates_consecutive_tokens():
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)  # (B, N, D)
    merged = merge_tokens(x, 3)  # (B, 2, 9)
    assert merged.shape == (2, 2, 9)
    for b in range(2):
        for j in range(2):
            torch.testing.assert_close(merged[b, j], torch.cat([x[b, 3 * j], x[b, 3 * j + 1], x[b, 3 * j + 2]]))
    assert torch.equal(merge_tokens(x, 1), x)


def test_merge_tokens_of_a_non_contiguous_tensor():
    x = torch.randn(4, 3, 8).transpose(0, 1)  # (3, 4, 8), not contiguous
    expected = merge_tokens(x.contiguous(), 2)
    torch.testing.assert_close(merge_tokens(x, 2), expected)


@pytest.mark.parametrize("k", [2, 4])
def test_compressed_projector_equals_reshape_then_plain_mlp(k):
    torch.manual_seed(1)
    projector = ModalityProjector(5, 7, token_compression=k)
    plain = nn.Sequential(nn.Linear(5 * k, 7), nn.GELU(), nn.Linear(7, 7))
    plain[0].load_state_dict(projector.linear_fc1.state_dict())
    plain[2].load_state_dict(projector.linear_fc2.state_dict())
    x = torch.randn(3, 8, 5)
    by_hand = plain(x.reshape(3, 8 // k, k * 5))
    torch.testing.assert_close(projector(x), by_hand)


def test_tokens_stay_independent_across_groups():
    """Changing one input token changes only the output token of its group."""
    torch.manual_seed(2)
    projector = ModalityProjector(4, 6, token_compression=2)
    x = torch.randn(1, 8, 4)
    y = x.clone()
    y[0, 5] += 1.0  # token 5 belongs to group 2 (tokens 4, 5)
    changed = (projector(x) - projector(y)).abs().sum(-1)[0] > 0  # (N/k,)
    assert changed.tolist() == [False, False, True, False]


@pytest.mark.parametrize("din,dout,k", [(1, 1, 1), (12, 20, 1), (12, 20, 4), (1024, 4096, 1), (128, 128, 2)])
def test_parameter_count_formula(din, dout, k):
    projector = ModalityProjector(din, dout, token_compression=k)
    assert sum(p.numel() for p in projector.parameters()) == projector_num_parameters(din, dout, k)


def test_parameter_count_of_the_7b_shape():
    # LLaVA-1.5-7B's projector: 1024 -> 4096 -> 4096 = 20,979,712 parameters.
    assert projector_num_parameters(1024, 4096) == 20_979_712


def test_projector_from_config_matches_decoder_positions():
    config = MIMOConfig(projector=ProjectorConfig(vision_token_compression=4, audio_token_compression=5))
    video = ModalityProjector(
        config.vision.hidden_size, config.language_model.hidden_size, config.projector.vision_token_compression
    )
    audio = ModalityProjector(
        config.audio.hidden_size, config.language_model.hidden_size, config.projector.audio_token_compression
    )
    v = video(torch.randn(2, config.vision.num_tokens, config.vision.hidden_size))
    a = audio(torch.randn(2, config.audio.audio_seq_len, config.audio.hidden_size))
    assert v.shape == (2, config.num_video_tokens, config.language_model.hidden_size)
    assert a.shape == (2, config.num_audio_tokens, config.language_model.hidden_size)


def test_gradients_reach_input_and_every_parameter():
    torch.manual_seed(3)
    projector = ModalityProjector(6, 8, token_compression=2)
    x = torch.randn(2, 4, 6, requires_grad=True)
    projector(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in projector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_token_count_not_divisible_is_a_clear_error():
    projector = ModalityProjector(4, 4, token_compression=3)
    with pytest.raises(ValueError, match=r"10 tokens.*token_compression=3.*one of \[1, 2, 5, 10\]"):
        projector(torch.randn(1, 10, 4))


def test_wrong_input_shape_is_a_clear_error():
    projector = ModalityProjector(4, 4)
    with pytest.raises(ValueError, match=r"\(B, N, 4\), got \(1, 10, 5\)"):
        projector(torch.randn(1, 10, 5))
    with pytest.raises(ValueError, match=r"got \(10, 4\)"):
        projector(torch.randn(10, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="projector_type"):
        ModalityProjector(4, 4, projector_type="linear")
    with pytest.raises(ValueError, match="token_compression"):
        ModalityProjector(4, 4, token_compression=0)
    with pytest.raises(ValueError, match="positive"):
        ModalityProjector(0, 4)


def test_merge_frames_puts_each_cells_frames_side_by_side():
    batch, frames, cells, dim, kt = 2, 4, 3, 5, 2
    x = torch.randn(batch, frames * cells, dim)  # frame-major: token t * cells + p
    merged = merge_frames(x, kt, cells)
    assert merged.shape == (batch, frames // kt * cells, kt * dim)
    for g in range(frames // kt):
        for p in range(cells):
            expected = torch.cat([x[:, (g * kt + j) * cells + p] for j in range(kt)], dim=-1)
            assert torch.equal(merged[:, g * cells + p], expected)


def test_merge_frames_rejects_partial_groups():
    with pytest.raises(ValueError, match="divides the number of frames"):
        merge_frames(torch.zeros(1, 3 * 4, 2), 2, 4)  # 3 frames cannot be grouped by 2
    with pytest.raises(ValueError, match="tokens_per_frame"):
        ModalityProjector(4, 6, temporal_compression=2)


def test_temporal_projector_shape_parameters_and_locality():
    torch.manual_seed(4)
    projector = ModalityProjector(4, 6, temporal_compression=2, tokens_per_frame=3)
    assert sum(p.numel() for p in projector.parameters()) == projector_num_parameters(4, 6, 1, 2)
    x = torch.randn(1, 4 * 3, 4)  # 4 frames of 3 tokens
    y = x.clone()
    y[0, 3 * 3 + 1] += 1.0  # frame 3, cell 1: belongs to frame group 1, cell 1 -> output token 1 * 3 + 1
    out = projector(x)
    assert out.shape == (1, 2 * 3, 6)
    changed = (out - projector(y)).abs().sum(-1)[0] > 0
    assert changed.tolist() == [False, False, False, False, True, False]


@pytest.mark.parametrize(("config", "frames_per_token"), [(MIMOConfig(), 8), (get_preset("toy"), 4)],
                         ids=["block", "toy"])
def test_each_video_token_sees_exactly_its_frames(config, frames_per_token):
    # block layout (chapters 4-7): a cell's token holds all 8 frames; the toy preset (chapter 8): 4 frames a token
    model = MIMOModel(config).eval()
    cells = config.vision.tokens_per_frame
    for frame in range(config.vision.num_frames):
        features = torch.randn(1, config.vision.num_tokens, config.vision.hidden_size)
        changed = features.clone()
        changed[0, frame * cells + 5] += 1.0  # this frame, cell 5
        with torch.no_grad():
            diff = (model.vision_projector(features) - model.vision_projector(changed)).abs().sum(-1)[0]
        assert diff.shape == (config.num_video_tokens,)
        # only cell 5's token of the group of frames that holds this frame changes
        assert torch.nonzero(diff).flatten().tolist() == [(frame // frames_per_token) * cells + 5]


def test_merged_token_frames_give_each_video_token_its_first_frame():
    # 8 frames of 4 cells: all frames merged (the toy block layout) -> one instant; 2 per token -> a time axis
    assert merged_token_frames(8, 4, temporal_compression=8).tolist() == [0] * 4
    assert merged_token_frames(8, 4, temporal_compression=2).tolist() == [0] * 4 + [2] * 4 + [4] * 4 + [6] * 4
    assert merged_token_frames(4, 4, temporal_compression=1, token_compression=2).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # the order is the projector's: token (g, p) of merge_frames is cell p of frames g*kt ..
    x = torch.arange(8 * 4, dtype=torch.float32).reshape(1, 32, 1)  # value = frame * 4 + cell
    merged = merge_frames(x, 2, 4)  # (1, 16, 2)
    assert torch.equal((merged[0, :, 0] // 4).long(), merged_token_frames(8, 4, 2))
    with pytest.raises(ValueError, match="cannot be merged"):
        merged_token_frames(8, 4, temporal_compression=3)
