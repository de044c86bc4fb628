"""Patches and log-mel features: shapes, exactness, and the properties chapter 1 relies on."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_lib.constants import FEATURE_FRAMES_PER_SECOND, SAMPLE_RATE
from mimo_lib.features import kaldi_fbank, log_mel_spectrogram, num_patches, patchify, unpatchify


def test_patchify_shape_and_order():
    frames = torch.arange(2 * 3 * 3 * 8 * 8).reshape(2, 3, 3, 8, 8)  # (B, T, C, H, W)
    patches = patchify(frames, 4)
    assert patches.shape == (2, 3, 4, 3 * 4 * 4)
    # patch 1 is the top-right 4x4 block of every channel, flattened (C, p, p)
    expected = frames[0, 0, :, 0:4, 4:8].reshape(-1)
    assert torch.equal(patches[0, 0, 1], expected)
    # patch 2 starts the second row of patches
    assert torch.equal(patches[1, 2, 2], frames[1, 2, :, 4:8, 0:4].reshape(-1))


def test_unpatchify_inverts_patchify():
    frames = torch.randn(2, 5, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(frames, 8), 8, 32, 48), frames)


def test_linear_on_patches_equals_strided_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 16, kernel_size=8, stride=8)
    image = torch.randn(2, 3, 32, 32)
    by_conv = conv(image).flatten(2).transpose(1, 2)  # (B, N, D)
    by_linear = patchify(image, 8) @ conv.weight.reshape(16, -1).T + conv.bias
    torch.testing.assert_close(by_linear, by_conv, rtol=1e-5, atol=1e-5)


def test_patch_size_must_divide():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(3, 30, 30), 8)
    with pytest.raises(ValueError, match="not divisible"):
        num_patches(30, 8)
    assert num_patches(64, 8) == 64


def test_log_mel_shape_and_range():
    wave = torch.sin(2 * math.pi * 440 * torch.arange(16_000) / 16_000) * 0.5
    mel = log_mel_spectrogram(wave)
    assert mel.shape == (80, 100)  # 80 bands, one column per 10 ms
    assert torch.isfinite(mel).all()
    assert mel.max() <= 3.0 and mel.min() >= mel.max() - 2.0 - 1e-6  # 8 decades / 4


def test_log_mel_peak_band_follows_pitch():
    t = torch.arange(16_000) / 16_000
    low = log_mel_spectrogram(torch.sin(2 * math.pi * 220 * t))
    high = log_mel_spectrogram(torch.sin(2 * math.pi * 1760 * t))
    assert high.mean(-1).argmax() > low.mean(-1).argmax() + 10


def test_log_mel_batches_like_single():
    waves = torch.randn(3, 8000) * 0.1
    batched = log_mel_spectrogram(waves)
    assert batched.shape == (3, 80, 50)
    torch.testing.assert_close(batched[1], log_mel_spectrogram(waves[1]))


def test_log_mel_rejects_too_short_audio():
    with pytest.raises(ValueError, match="too short"):
        log_mel_spectrogram(torch.zeros(10))


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_both_front_ends_give_one_frame_per_shared_hop(seconds):
    # log-mel (Whisper) and Kaldi fbank (BEATs) both read mimo_lib.constants' hop: 100 frames per second
    waveform = torch.randn(int(seconds * SAMPLE_RATE)) * 0.1
    frames = round(seconds * FEATURE_FRAMES_PER_SECOND)
    assert log_mel_spectrogram(waveform).shape[-1] == frames
    assert kaldi_fbank(waveform).shape[-1] == frames
