"""The audio tower: a waveform in, ``audio_seq_len`` feature vectors out.

Megatron-LM's llava_avlm example hears through Whisper's encoder. This file
builds that encoder (and a BEATs-style one) from scratch, at any size, plus a
wrapper that runs a real Whisper checkpoint from Hugging Face ``transformers``.
Every tower has the same three steps::

    waveform (B, N)                              N = config.num_samples (1 s at 16 kHz = 16000)
      -> features  (B, num_mel_bins, frames)     one column per 10 ms (100 for 1 s)
      -> encode    (B, encoder_seq_len, D)       a transformer over time (and frequency, for BEATs)
      -> pool      (B, audio_seq_len, D)         average neighbouring positions, then LayerNorm

``backbone_type`` picks the encoder:

* ``"whisper"``: Whisper's front end. 80 log-mel bins; two 1-D convolutions
  over time, the second with stride 2 (so 50 positions per second); fixed
  sinusoidal positions, as Whisper (the encoder then works at any clip length
  it was built for, and the positions cost no parameters); pre-norm
  transformer blocks; a final LayerNorm.
* ``"beats"``: BEATs' front end. 128 Kaldi fbank bins, seen as a one-channel
  image of ``(frequency, time)``; cut into ``16 x 16`` patches by a strided
  ``Conv2d`` (exactly as a ViT cuts an image); learned positions; pre-norm
  transformer blocks; a final LayerNorm. The time axis is padded up to whole
  patches (100 frames -> 112: 7 patches of 160 ms each).
* ``"hf-whisper"``: :class:`HFWhisperAudioTower`, a pretrained Whisper encoder
  from a local ``save_pretrained`` folder.

**BEATs patch order is time-major**: position ``t * F + f`` holds frequency
patch ``f`` of time step ``t`` (``F = num_mel_bins / patch`` = 8 patches per
step). BEATs orders them the same way. It matters for pooling: neighbouring
positions are then the same moment in time, so averaging ``pool_factor``
neighbours never mixes distant moments. With ``pool_factor`` a multiple of
``F`` each audio token is whole time steps (every frequency); with a smaller
one it is a band of frequencies within one time step. (Frequency-major order
would make each token a frequency band over the *whole* clip, and the
language model could no longer tell what happened when.)

**Pooling** (:func:`pool_sequence`) cuts the encoder's positions into
``audio_seq_len`` equal time spans and averages each span into one token, so
``--audio-seq-len`` (the number of audio tokens the decoder receives) trades
detail for decoder positions without changing the encoder. Any positive value
works: when it divides ``encoder_seq_len`` each token is the mean of
``pool_factor`` whole positions (the toy model: 50 / 25 = 2); otherwise spans
straddle positions (``adaptive_avg_pool1d``); and above ``encoder_seq_len``
tokens repeat positions -- more decoder positions, no more detail (e.g. BEATs
at 1 s makes 56 positions, so ``--audio-seq-len 1024`` repeats each about 18
times; ``--clip-duration`` makes more positions). Token ``j`` of ``A`` covers
``[j / A, (j + 1) / A)`` of the encoder's time axis: the clip window for
Whisper, the window padded up to whole 160-ms patches for BEATs (7 patches =
1.12 s for a 1-s window).

**Input length**: a ``(B, N)`` batch (or one ``(N,)`` clip) at
``config.sample_rate`` is cropped or zero-padded at the end to
``config.num_samples`` (:func:`fit_waveform`, which the dataset's
``mimo_lib.data.dataset.fit_audio_length`` applies to each clip). Files are cut to the
same time window for video and audio before they get here
(:func:`mimo_lib.data.media.clip_window`), so this only ever pads or crops a few samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mimo_lib.config import AudioTowerConfig
from mimo_lib.constants import FEATURE_FRAMES_PER_SECOND, FEATURE_HOP_S, FEATURE_WINDOW_S, SAMPLE_RATE
from mimo_lib.features import kaldi_fbank, log_mel_spectrogram
from mimo_lib.towers import hf_checkpoint_folder, import_transformers, sinusoids

# --------------------------------------------------------------------------- #
# Small helpers: fitting the waveform, pooling
# --------------------------------------------------------------------------- #


def fit_waveform(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Crop or zero-pad audio at the end to exactly ``num_samples``.

    Args:
        waveform: ``(N,)`` one clip or ``(B, N)`` a batch.
    Returns:
        ``(B, num_samples)`` float (``B = 1`` for a 1-D input). The one crop-or-pad rule
        of ``mimo_lib``: ``mimo_lib.data.dataset.fit_audio_length`` is this, for one clip.
    """
    if waveform.dim() == 1:
        waveform = waveform[None]  # (1, N)
    if waveform.dim() != 2:
        raise ValueError(
            f"audio must be (N,) or (B, N) mono samples, got shape {tuple(waveform.shape)}; "
            "mix channels down (e.g. waveform.mean(dim=1)) before the audio tower"
        )
    length = waveform.shape[-1]
    if length >= num_samples:
        return waveform[:, :num_samples].float()  # (B, num_samples)
    return F.pad(waveform.float(), (0, num_samples - length))  # (B, num_samples)


def pool_sequence(x: torch.Tensor, audio_seq_len: int) -> torch.Tensor:
    """``(B, S, D)`` encoder states -> ``(B, audio_seq_len, D)`` tokens, for any positive ``audio_seq_len``.

    Token ``i`` stands for the ``i``-th of ``audio_seq_len`` equal spans of the ``S`` positions,
    ``[i * S / audio_seq_len, (i + 1) * S / audio_seq_len)``, and is the mean of the positions that span
    touches: ``torch.nn.functional.adaptive_avg_pool1d``, which averages positions
    ``floor(i * S / n) .. ceil((i + 1) * S / n) - 1``.

    * ``audio_seq_len`` divides ``S``: each token is the mean of ``k = S / audio_seq_len`` whole
      positions, computed as a reshape and a mean (the arithmetic of every committed model, bit for bit).
    * otherwise the spans straddle positions: a position on a border counts in both tokens.
    * ``audio_seq_len > S``: each token's span lies inside one position (or across the border of two),
      so tokens *repeat* positions. No detail is added; the decoder gets more positions for the same
      sound. Raise ``clip_duration_s`` for more positions.

    Args:
        x: ``(B, S, D)`` encoder states.
    Returns:
        ``(B, audio_seq_len, D)``.
    """
    batch, length, dim = x.shape
    if isinstance(audio_seq_len, bool) or not isinstance(audio_seq_len, int) or audio_seq_len < 1:
        raise ValueError(f"--audio-seq-len {audio_seq_len!r}: the number of audio tokens must be a positive whole number")
    if length % audio_seq_len == 0:
        k = length // audio_seq_len
        return x.reshape(batch, audio_seq_len, k, dim).mean(dim=2)  # (B, audio_seq_len, D)
    pooled = F.adaptive_avg_pool1d(x.transpose(1, 2), audio_seq_len)  # (B, D, audio_seq_len)
    return pooled.transpose(1, 2)  # (B, audio_seq_len, D)


# --------------------------------------------------------------------------- #
# The encoder layer (pre-norm, bidirectional), with Whisper's parameter names
# --------------------------------------------------------------------------- #


class AudioAttention(nn.Module):
    """Multi-head self-attention over the whole clip (no causal mask: an encoder sees past and future).

    Four projections named as Whisper's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). Whisper's
    ``k_proj`` has no bias; ours has one, which changes nothing: a key bias adds the same number to every
    score of a query, and softmax ignores that. Load Whisper weights with a zero key bias.
    """

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: ``(S, S)`` bool, True where a position may attend (None: everywhere)."""
        batch, length, dim = x.shape  # (B, S, D)
        q, k, v = (
            proj(x).view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, heads, S, hd)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)  # (B, heads, S, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))  # (B, S, D)


#: Parameter names of the audio layers before they took Whisper's (checkpoints written until 2026-11):
#: old prefix -> new prefix. ``attn.qkv`` (one fused projection) is split into q/k/v by :func:`upgrade_layer_keys`.
OLD_LAYER_NAMES = {
    "norm1.": "self_attn_layer_norm.",
    "attn.proj.": "self_attn.out_proj.",
    "norm2.": "final_layer_norm.",
    "mlp.fc1.": "fc1.",
    "mlp.fc2.": "fc2.",
}


def upgrade_layer_keys(state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    """Rename, in place, an old-named layer's keys under ``prefix`` (see :data:`OLD_LAYER_NAMES`)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix) :]
        if name.startswith("attn.qkv."):  # (3D, D) weight or (3D,) bias: q rows, then k rows, then v rows
            kind = name.removeprefix("attn.qkv.")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), state_dict.pop(key).chunk(3, dim=0)):
                state_dict[f"{prefix}self_attn.{proj}.{kind}"] = part
        for old, new in OLD_LAYER_NAMES.items():
            if name.startswith(old):
                state_dict[prefix + new + name[len(old) :]] = state_dict.pop(key)


class AudioEncoderLayer(nn.Module):
    """Pre-norm transformer layer laid out as Whisper's ``WhisperEncoderLayer``::

        x = x + self_attn(self_attn_layer_norm(x))
        x = x + fc2(gelu(fc1(final_layer_norm(x))))

    (Whisper calls the norm before the MLP ``final_layer_norm``: the last norm *of the layer*.) So the
    weights of a Whisper encoder map onto :class:`AudioTower` by renaming (``layers.`` -> ``blocks.``).
    Checkpoints with the old names (``norm1``, ``attn.qkv``, ``mlp.fc1``, ...) still load:
    :func:`upgrade_layer_keys` renames them on the way in.
    """

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        d, eps = config.hidden_size, config.layernorm_epsilon
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = AudioAttention(d, config.num_attention_heads)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, config.ffn_hidden_size)
        self.fc2 = nn.Linear(config.ffn_hidden_size, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)  # (B, S, D)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))  # (B, S, D), GELU as Whisper and BEATs

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_layer_keys(state_dict, prefix)  # old checkpoints: the same weights under the old names
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# --------------------------------------------------------------------------- #
# The two front ends: features -> (B, encoder_seq_len, D)
# --------------------------------------------------------------------------- #


class WhisperStem(nn.Module):
    """Whisper's convolutional stem plus fixed sinusoidal positions.

    ``Conv1d(n_mels, D, 3, padding=1) -> GELU -> Conv1d(D, D, 3, stride=2, padding=1) -> GELU``:
    the stride halves the 100 frames per second to 50 positions per second.
    """

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        d = config.hidden_size
        self.seq_len = config.encoder_seq_len
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        # a buffer, not a parameter: fixed, and not saved (it is recomputed from the config)
        self.register_buffer("positions", sinusoids(self.seq_len, d), persistent=False)  # (S, D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(features))  # (B, D, frames)
        x = F.gelu(self.conv2(x))  # (B, D, ceil(frames / 2))
        # an odd frame count gives one more position than encoder_seq_len (= frames // 2): drop it
        x = x[:, :, : self.seq_len].transpose(1, 2)  # (B, S, D)
        return x + self.positions


class BEATsPatchEmbedding(nn.Module):
    """BEATs' front end: the fbank as a one-channel ``(freq, time)`` image, cut into square patches.

    ``Conv2d(1, D, kernel_size=p, stride=p)`` embeds each ``p x p`` patch (a
    ViT patch embedding), then the grid is read in time-major order (see the
    module docstring) and learned positions are added.
    """

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        p, d = config.beats_patch_size, config.hidden_size
        self.patch_size = p
        self.time_patches = math.ceil(config.num_feature_frames / p)
        self.freq_patches = config.num_mel_bins // p
        self.proj = nn.Conv2d(1, d, kernel_size=p, stride=p)
        self.positions = nn.Parameter(torch.randn(config.encoder_seq_len, d) * 0.02)  # (S, D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        frames = features.shape[-1]
        padded = self.time_patches * self.patch_size
        # pad time with zeros up to whole patches; after normalisation 0 is BEATs' average level
        x = F.pad(features, (0, padded - frames))  # (B, n_mels, T_pad)
        x = self.proj(x[:, None])  # (B, D, freq_patches, time_patches)
        x = x.permute(0, 3, 2, 1)  # (B, time_patches, freq_patches, D): time-major
        x = x.reshape(x.shape[0], self.time_patches * self.freq_patches, -1)  # (B, S, D), index t * F + f
        return x + self.positions


# --------------------------------------------------------------------------- #
# The tower
# --------------------------------------------------------------------------- #


def attention_windows(config: AudioTowerConfig) -> torch.Tensor | None:
    """``(encoder_seq_len,)`` long: which ``attention_window_s`` window of the clip each encoder position
    lies in (a position attends only to its own window's), or None when the whole clip attends.

    Whisper's position ``i`` starts at ``i / 50`` s; BEATs' position ``t * F + f`` at time patch ``t``'s
    start. A window of 0.5 s in a 1-s clip: positions 0-24 and 25-49, so each audio token of the first
    half hears only the first half (Qwen2.5-Omni's audio encoder likewise attends within 2-s windows).
    """
    if config.attention_window_s is None:
        return None
    positions = torch.arange(config.encoder_seq_len)
    if config.backbone_type == "beats":
        freq_patches = config.num_mel_bins // config.beats_patch_size
        seconds = (positions // freq_patches) * config.beats_patch_size / FEATURE_FRAMES_PER_SECOND
    else:
        seconds = positions * config.clip_duration_s / config.encoder_seq_len
    return torch.floor(seconds.double() / config.attention_window_s + 1e-6).long()


def _check_features(features: torch.Tensor, config: AudioTowerConfig) -> None:
    expected = (config.num_mel_bins, config.num_feature_frames)
    if features.dim() != 3 or tuple(features.shape[1:]) != expected:
        raise ValueError(
            f"audio features must be (B, num_mel_bins={expected[0]}, frames={expected[1]}) for "
            f"{config.clip_duration_s:g} s clips, got {tuple(features.shape)}; make them with tower.features(waveform) "
            "or change num_mel_bins / clip_duration_s in AudioTowerConfig"
        )


class AudioEncoderBase(nn.Module):
    """What every audio tower shares: features → ``encode_features`` → pool → output LayerNorm.

    A subclass builds its encoder, sets ``config``, ``output_size`` and
    ``output_norm`` (``make_output_norm``), and implements ``encode_features``.
    """

    config: AudioTowerConfig

    def make_output_norm(self, width: int) -> nn.Module:
        """The output LayerNorm after pooling (identity if ``normalize_output`` is off)."""
        if self.config.normalize_output:
            return nn.LayerNorm(width, eps=self.config.layernorm_epsilon)
        return nn.Identity()

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` or ``(N,)`` audio -> ``(B, num_mel_bins, num_feature_frames)``: log-mel or fbank."""
        return audio_features(waveform, self.config)

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_mel_bins, num_feature_frames)`` -> ``(B, encoder_seq_len, D)``."""
        raise NotImplementedError

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` audio -> ``(B, encoder_seq_len, D)``, before pooling."""
        return self.encode_features(self.features(waveform))

    def pool(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, encoder_seq_len, D)`` -> ``(B, audio_seq_len, D)``: average neighbours, then LayerNorm."""
        return self.output_norm(pool_sequence(states, self.config.audio_seq_len))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` or ``(N,)`` audio -> ``(B, audio_seq_len, D)``."""
        return self.pool(self.encode(waveform))


class AudioTower(AudioEncoderBase):
    """A Whisper- or BEATs-style audio encoder built from scratch (random initialisation).

    ``forward(waveform)`` returns ``(B, audio_seq_len, hidden_size)``.
    ``config.pretrained_path`` is not read here: trained weights are loaded by
    the caller (``MIMOModel.load_towers``). Inside each layer the parameters have
    the names of Whisper's encoder layers (:class:`AudioEncoderLayer`); around
    them Whisper's ``conv1``/``conv2`` are ``embed.conv1``/``embed.conv2``, its
    ``layers`` are ``blocks`` and its ``layer_norm`` is ``norm``, as the vision
    tower's ``blocks`` are CLIP's ``encoder.layers``.
    """

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        if config.backbone_type not in ("whisper", "beats"):
            raise ValueError(
                f"AudioTower builds backbone_type 'whisper' or 'beats', got {config.backbone_type!r}; "
                "use build_audio_tower(config) for 'hf-whisper'"
            )
        self.config = config
        self.output_size = config.hidden_size
        self.embed = WhisperStem(config) if config.backbone_type == "whisper" else BEATsPatchEmbedding(config)
        self.blocks = nn.ModuleList([AudioEncoderLayer(config) for _ in range(config.num_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.output_norm = self.make_output_norm(config.hidden_size)
        window = attention_windows(config)  # (S,) window of each position, or None: attend over the whole clip
        mask = None if window is None else window[:, None] == window[None, :]  # (S, S): same window only
        self.register_buffer("attention_mask", mask, persistent=False)

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_mel_bins, num_feature_frames)`` -> ``(B, encoder_seq_len, D)``."""
        _check_features(features, self.config)
        x = self.embed(features)  # (B, S, D)
        for block in self.blocks:
            x = block(x, self.attention_mask)  # (B, S, D)
        return self.norm(x)



def audio_features(waveform: torch.Tensor, config: AudioTowerConfig) -> torch.Tensor:
    """The tower's input features for ``config``: ``(B, num_mel_bins, num_feature_frames)``.

    Log-mel (Whisper) for ``whisper`` / ``hf-whisper``, BEATs-normalised Kaldi
    fbank for ``beats``. The waveform is first fitted to ``config.num_samples``
    (:func:`fit_waveform`).
    """
    wave = fit_waveform(waveform, config.num_samples)  # (B, num_samples)
    frames = config.num_feature_frames
    if config.backbone_type == "beats":
        return kaldi_fbank(wave, config.sample_rate, config.num_mel_bins, num_frames=frames)  # (B, n_mels, frames)
    hop = int(round(config.sample_rate * FEATURE_HOP_S))
    # log_mel_spectrogram gives N // hop frames: make N exactly frames * hop
    wave = fit_waveform(wave, frames * hop)  # (B, frames * hop)
    window = int(round(config.sample_rate * FEATURE_WINDOW_S))
    return log_mel_spectrogram(wave, config.sample_rate, config.num_mel_bins, window, hop)  # (B, n_mels, frames)


# --------------------------------------------------------------------------- #
# A pretrained Whisper encoder from transformers
# --------------------------------------------------------------------------- #


class HFWhisperAudioTower(AudioEncoderBase):
    """A pretrained Whisper encoder (``transformers``), with the same API as :class:`AudioTower`.

    Loads ``WhisperModel.from_pretrained(config.pretrained_path)`` from a
    **local folder only** (nothing is downloaded) and keeps its encoder.

    Whisper's encoder only accepts 30 s of features (``2 * max_source_positions``
    frames, 3000): it was trained on 30 s windows, short clips zero-padded. So
    :meth:`encode` pads the clip's features with the value that silence has in
    Whisper's log-mel (the clip's floor, 8 decades below its loudest value,
    i.e. ``max - 2`` after scaling), runs the encoder, and keeps the first
    ``encoder_seq_len`` positions: those that correspond to the real clip (one
    position per 20 ms). Attention still sees the padding, as it did in
    training. The pooling and output LayerNorm after it are new (random) layers.
    """

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        if config.backbone_type != "hf-whisper":
            raise ValueError(f"HFWhisperAudioTower needs backbone_type 'hf-whisper', got {config.backbone_type!r}")
        transformers = import_transformers(config.backbone_type)
        folder = hf_checkpoint_folder(config.pretrained_path, config.backbone_type, "openai/whisper-base")
        hf_config = transformers.WhisperConfig.from_pretrained(folder, local_files_only=True)
        _check_against_checkpoint(config, hf_config, folder)
        model = transformers.WhisperModel.from_pretrained(folder, local_files_only=True)
        self.encoder = model.get_encoder().float()  # the decoder is dropped with `model`
        self.config = config
        self.output_size = hf_config.d_model
        self.input_frames = 2 * hf_config.max_source_positions  # 3000 for every released Whisper
        self.output_norm = self.make_output_norm(self.output_size)

    def pad_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames)`` -> ``(B, n_mels, 2 * max_source_positions)``, padded with each clip's silence."""
        silence = features.amax(dim=(-2, -1), keepdim=True) - 2.0  # (B, 1, 1): the log-mel floor
        pad = silence.expand(-1, features.shape[1], self.input_frames - features.shape[-1])  # (B, n_mels, pad)
        return torch.cat([features, pad], dim=-1)  # (B, n_mels, input_frames)

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_mel_bins, num_feature_frames)`` -> ``(B, encoder_seq_len, D)``."""
        _check_features(features, self.config)
        states = self.encoder(input_features=self.pad_features(features)).last_hidden_state  # (B, 1500, D)
        return states[:, : self.config.encoder_seq_len]  # (B, S, D): the positions of the real clip



def _check_against_checkpoint(config: AudioTowerConfig, hf_config, folder: Path) -> None:
    """The fields of ``AudioTowerConfig`` that must agree with the checkpoint's ``config.json``."""
    if getattr(hf_config, "model_type", None) != "whisper":
        raise ValueError(f"{folder} holds a {hf_config.model_type!r} model, not a Whisper checkpoint")
    problems = []
    if config.num_mel_bins != hf_config.num_mel_bins:
        problems.append(f"num_mel_bins={hf_config.num_mel_bins} (config has {config.num_mel_bins})")
    if config.hidden_size != hf_config.d_model:
        problems.append(f"hidden_size={hf_config.d_model} (config has {config.hidden_size})")
    if config.sample_rate != SAMPLE_RATE:  # every Whisper checkpoint was trained on 16 kHz audio
        problems.append(f"sample_rate={SAMPLE_RATE} (config has {config.sample_rate})")
    if config.encoder_seq_len > hf_config.max_source_positions:
        longest = hf_config.max_source_positions * 2 / FEATURE_FRAMES_PER_SECOND  # 2 frames per position
        problems.append(f"clip_duration_s <= {longest:g} (config has {config.clip_duration_s:g})")
    if problems:
        raise ValueError(
            f"AudioTowerConfig does not match the Whisper checkpoint in {folder}: set " + ", ".join(problems)
        )


# --------------------------------------------------------------------------- #
# Building and counting
# --------------------------------------------------------------------------- #


def build_audio_tower(config: AudioTowerConfig) -> nn.Module:
    """The tower for ``config.backbone_type``: :class:`AudioTower` or :class:`HFWhisperAudioTower`."""
    if config.backbone_type == "hf-whisper":
        return HFWhisperAudioTower(config)
    return AudioTower(config)


def audio_tower_num_parameters(config: AudioTowerConfig) -> int:
    """Parameters of :class:`AudioTower` for ``config``, in closed form (no tensors are made).

    With ``D = hidden_size``, ``H = ffn_hidden_size``, ``M = num_mel_bins``, ``L = num_layers``::

        block   = 4 D^2 + 4 D        attention: q, k, v and out projections, (D^2 + D) each
                + 2 D H + H + D      MLP: fc1 (D H + H) and fc2 (H D + D)
                + 4 D                two LayerNorms
        whisper stem = 3 M D + D  +  3 D^2 + D          two convolutions (sinusoids are not parameters)
        beats stem   = p^2 D + D  +  S D                patch Conv2d and learned positions (S = encoder_seq_len)
        total = stem + L * block + 2 D (final LayerNorm) + 2 D (output LayerNorm, if normalize_output)
    """
    if config.backbone_type not in ("whisper", "beats"):
        raise ValueError(
            f"no closed form for backbone_type {config.backbone_type!r}: its size is the checkpoint's; "
            "count sum(p.numel() for p in build_audio_tower(config).parameters())"
        )
    d, h, m, p = config.hidden_size, config.ffn_hidden_size, config.num_mel_bins, config.beats_patch_size
    block = (4 * d * d + 4 * d) + (2 * d * h + h + d) + 4 * d
    if config.backbone_type == "whisper":
        stem = (3 * m * d + d) + (3 * d * d + d)
    else:
        stem = (p * p * d + d) + config.encoder_seq_len * d
    return stem + config.num_layers * block + 2 * d + (2 * d if config.normalize_output else 0)


__all__ = [
    "AudioAttention",
    "AudioEncoderLayer",
    "AudioTower",
    "HFWhisperAudioTower",
    "audio_features",
    "audio_tower_num_parameters",
    "build_audio_tower",
    "fit_waveform",
    "pool_sequence",
    "upgrade_layer_keys",
]
