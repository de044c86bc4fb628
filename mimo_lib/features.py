"""Turning pixels and sound waves into sequences: patches and log-mel frames.

Chapter 1 builds both by hand and checks them against these functions.

* :func:`patchify` cuts frames into non-overlapping ``p x p`` patches, the
  "words" a vision transformer reads. Each patch is flattened in
  ``(C, p, p)`` order, the same order as a ``Conv2d(C, D, kernel_size=p,
  stride=p)`` weight, so a linear layer on patches equals that convolution.
* :func:`log_mel_spectrogram` is Whisper's audio front end: a 25 ms window
  every 10 ms (100 frames a second), 80 mel bands, log10, then clamped to
  8 decades below the loudest value and scaled to roughly [-1, 1].
"""

from __future__ import annotations

import torch
import torchaudio

from mimo_lib.constants import (
    FEATURE_HOP_S,
    FEATURE_HOP_SAMPLES,
    FEATURE_WINDOW_S,
    FEATURE_WINDOW_SAMPLES,
    SAMPLE_RATE,
)

WHISPER_N_FFT = FEATURE_WINDOW_SAMPLES  # 25 ms window at 16 kHz: 400 samples
WHISPER_HOP_LENGTH = FEATURE_HOP_SAMPLES  # 10 ms hop at 16 kHz: 160 samples, 100 frames per second
WHISPER_N_MELS = 80


def num_patches(image_size: int, patch_size: int) -> int:
    """Patches per frame: ``(image_size // patch_size) ** 2``; the size must divide evenly."""
    if image_size % patch_size != 0:
        raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
    return (image_size // patch_size) ** 2


def patchify(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened square patches, row by row.

    Args:
        frames: ``(..., C, H, W)``, e.g. ``(B, T, 3, 64, 64)``.
        patch_size: ``p``; must divide ``H`` and ``W``.
    Returns:
        ``(..., (H/p) * (W/p), C * p * p)``, patches in row-major order.
    """
    *lead, channels, height, width = frames.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"frame size {height}x{width} is not divisible by patch_size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = frames.reshape(*lead, channels, rows, patch_size, cols, patch_size)  # (..., C, rows, p, cols, p)
    n = len(lead)
    # bring the grid position forward, keep (C, p, p) together at the end
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)  # (..., rows, cols, C, p, p)
    return x.reshape(*lead, rows * cols, channels * patch_size * patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(..., N, C * p * p)`` back to ``(..., C, H, W)``."""
    *lead, count, dim = patches.shape
    rows, cols = height // patch_size, width // patch_size
    channels = dim // (patch_size * patch_size)
    if rows * cols != count or channels * patch_size * patch_size != dim:
        raise ValueError(
            f"{count} patches of size {dim} do not tile a {height}x{width} image with patch_size {patch_size}"
        )
    n = len(lead)
    x = patches.reshape(*lead, rows, cols, channels, patch_size, patch_size)  # (..., rows, cols, C, p, p)
    x = x.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)  # (..., C, rows, p, cols, p)
    return x.reshape(*lead, channels, height, width)


_MEL_TRANSFORMS: dict[tuple[int, int, int, int], torchaudio.transforms.MelSpectrogram] = {}


def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    key = (sample_rate, n_fft, hop_length, n_mels)
    if key not in _MEL_TRANSFORMS:  # building the filter bank is the slow part: do it once
        _MEL_TRANSFORMS[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )
    return _MEL_TRANSFORMS[key]


def log_mel_spectrogram(
    waveform: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = WHISPER_N_MELS,
    n_fft: int = WHISPER_N_FFT,
    hop_length: int = WHISPER_HOP_LENGTH,
) -> torch.Tensor:
    """Whisper-style log-mel features.

    Args:
        waveform: ``(..., N)`` mono audio in [-1, 1].
    Returns:
        ``(..., n_mels, N // hop_length)``: one column per 10 ms.
    """
    if waveform.shape[-1] < n_fft // 2 + 1:
        raise ValueError(f"waveform of {waveform.shape[-1]} samples is too short for n_fft={n_fft}")
    mel = _mel_transform(sample_rate, n_fft, hop_length, n_mels).to(waveform.device)(waveform.float())
    mel = mel[..., :-1]  # the centred STFT makes one extra frame; drop it (N // hop frames)
    log_mel = torch.log10(mel.clamp(min=1e-10))
    # keep 8 decades below each clip's loudest value, then scale to about [-1, 1]
    peak = log_mel.amax(dim=(-2, -1), keepdim=True)
    log_mel = torch.maximum(log_mel, peak - 8.0)
    return (log_mel + 4.0) / 4.0


# BEATs normalises its fbank with fixed statistics measured on AudioSet, and
# divides by *twice* the standard deviation, so features land roughly in [-1, 1].
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582
KALDI_FRAME_LENGTH_MS = FEATURE_WINDOW_S * 1000  # window length: 25 ms, as Whisper's
KALDI_FRAME_SHIFT_MS = FEATURE_HOP_S * 1000  # hop: 10 ms, 100 frames per second, like Whisper's log-mel


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    num_mel_bins: int = 128,
    num_frames: int | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """BEATs-style Kaldi filter-bank features.

    The front end of BEATs (and AST, and many speech models trained with
    Kaldi): ``torchaudio.compliance.kaldi.fbank`` on the waveform scaled to
    16-bit integer range (times ``2**15``), a 25 ms Povey window every 10 ms,
    log mel energies. Then, if ``normalize``, BEATs' fixed normalisation
    ``(fbank - 15.41663) / (2 * 6.55582)``.

    Kaldi does not centre its frames: ``N`` samples give ``(N - win) // hop + 1``
    frames (98 for one second). So that both feature types have one column per
    10 ms, the waveform is zero-padded at the end until there are exactly
    ``num_frames`` frames (as if the clip went on in silence), and cropped if
    there are more. Every frame is computed from its own samples only, so the
    frames that exist without padding are exactly Kaldi's.

    Args:
        waveform: ``(..., N)`` mono audio in [-1, 1]; every row is processed on its own.
        num_frames: frames to return; default ``N // hop``, the same count as :func:`log_mel_spectrogram`.
        normalize: apply BEATs' mean/std normalisation (False gives Kaldi's raw log energies).
    Returns:
        ``(..., num_mel_bins, num_frames)``.
    """
    import torchaudio.compliance.kaldi as kaldi  # imported here: only BEATs-style towers need it

    hop = int(round(sample_rate * KALDI_FRAME_SHIFT_MS / 1000))  # 160 samples at 16 kHz
    win = int(round(sample_rate * KALDI_FRAME_LENGTH_MS / 1000))  # 400 samples at 16 kHz
    *lead, length = waveform.shape
    if num_frames is None:
        num_frames = length // hop
    if num_frames < 1:
        raise ValueError(
            f"waveform of {length} samples is too short for one {KALDI_FRAME_SHIFT_MS:g} ms fbank frame "
            f"({hop} samples at {sample_rate} Hz)"
        )
    needed = (num_frames - 1) * hop + win  # samples for exactly num_frames uncentred frames
    rows = waveform.reshape(-1, length).float() * 2**15  # (R, N), 16-bit integer scale as BEATs
    if length < needed:
        rows = torch.nn.functional.pad(rows, (0, needed - length))  # (R, needed)
    out = []
    for row in rows:  # kaldi.fbank reads a single channel, so batch by looping over rows
        fbank = kaldi.fbank(
            row[None],  # (1, N): one channel
            num_mel_bins=num_mel_bins,
            sample_frequency=sample_rate,
            frame_length=KALDI_FRAME_LENGTH_MS,
            frame_shift=KALDI_FRAME_SHIFT_MS,
            dither=0.0,
        )  # (frames, num_mel_bins)
        out.append(fbank[:num_frames].T)  # (num_mel_bins, num_frames)
    fbank = torch.stack(out).reshape(*lead, num_mel_bins, num_frames)  # (..., num_mel_bins, num_frames)
    if normalize:
        fbank = (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    return fbank
