"""Every size and switch of the MIMO model, as dataclasses with a comment on each field.

One config per component — vision tower, audio tower, projectors, language
model — and :class:`MIMOConfig` for the whole model. Presets go from a model
that trains on a 2-core laptop CPU in minutes (``toy``) to the shape of
Megatron-LM's 7B audio-video-language model (``llava-avlm-7b``), which can be
built on the ``meta`` device to count its parameters without allocating them.

Language-model fields are named after, and documented with, the megatron-core
``TransformerConfig`` / ``GPTModel`` argument they correspond to, so the
scale-out chapter can build the same network in megatron-core and copy weights
across exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mimo_lib.constants import (
    AUDIO_TOKEN_ID,
    EOS_TOKEN_ID,
    FEATURE_FRAMES_PER_SECOND,
    IGNORE_INDEX,
    PAD_TOKEN_ID,
    SAMPLE_RATE,
    VIDEO_TOKEN_ID,
)
from mimo_lib.errors import MimoInputError

VISION_BACKBONES = ("clip", "hf-clip")
PATCH_EMBEDDINGS = ("linear", "conv")
AUDIO_BACKBONES = ("whisper", "beats", "hf-whisper")
POSITION_EMBEDDINGS = ("rope", "learned_absolute")
NORMALIZATIONS = ("LayerNorm", "RMSNorm")
ACTIVATIONS = ("gelu", "swiglu")
PROJECTOR_TYPES = ("mlp2x_gelu",)
AV_LAYOUTS = ("block", "interleaved")  # MIMOConfig.av_layout: how video and audio tokens are laid out
AV_POSITIONS = ("sequence", "time")  # MIMOConfig.av_positions: what the position ids of media tokens count
CLIP_WINDOWS = ("start", "center")  # where a file's time window of clip_duration_s begins (mimo_lib.data.media)


class ConfigError(MimoInputError):
    """A model configuration that cannot be built (from a preset with flags, a config file or a checkpoint)."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {choices}")


def _check_heads(where: str, hidden_size: int, num_attention_heads: int) -> None:
    if hidden_size % num_attention_heads != 0:
        raise ConfigError(
            f"{where}: hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
        )


@dataclass
class VisionTowerConfig:
    """A CLIP-style ViT applied to every frame of a video."""

    backbone_type: str = "clip"  # --vision-backbone-type: "clip" (built in this book) or "hf-clip" (transformers)
    pretrained_path: str | None = None  # hf-clip only: local folder for from_pretrained (own towers: MIMOModel.load_towers)
    num_frames: int = 8  # --num-frames: frames sampled uniformly from each clip
    image_size: int = 64  # frames are resized to image_size x image_size pixels
    patch_size: int = 8  # each frame is cut into (image_size / patch_size)^2 square patches
    patch_embedding_type: str = "linear"  # "linear": one strided conv, as CLIP; "conv": a stem of stride-2 3x3 convs (hybrid ViT)
    num_channels: int = 3  # RGB
    hidden_size: int = 128  # width of the ViT
    num_layers: int = 4  # transformer blocks
    num_attention_heads: int = 4  # heads per block; must divide hidden_size
    ffn_hidden_size: int = 512  # MLP width inside each block (4x hidden, as CLIP)
    layernorm_epsilon: float = 1e-5  # LayerNorm epsilon, as CLIP
    select_layer: int = -2  # whose hidden states feed the projector; -2 = penultimate block, as LLaVA
    drop_class_token: bool = True  # LLaVA keeps patch tokens only
    pool_size: int = 2  # average-pool the patch grid by this factor per side (1 = keep every patch)
    temporal_embedding: bool = True  # add a learned embedding per frame index, so the order of frames is visible
    normalize_output: bool = True  # LayerNorm on the selected features (keeps their scale fixed for the projector)

    def __post_init__(self) -> None:
        _check_choice("vision backbone_type", self.backbone_type, VISION_BACKBONES)
        _check_choice("vision patch_embedding_type", self.patch_embedding_type, PATCH_EMBEDDINGS)
        if self.patch_embedding_type == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"a conv stem halves the frame per layer: patch_size {self.patch_size} must be a power of 2")
        if self.backbone_type == "hf-clip" and self.patch_embedding_type != "linear":
            raise ConfigError("hf-clip checkpoints use CLIP's linear patch embedding: set patch_embedding_type='linear'")
        _check_heads("vision tower", self.hidden_size, self.num_attention_heads)
        if self.image_size % self.patch_size != 0:
            raise ConfigError(f"vision image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.pool_size < 1:
            raise ConfigError(f"vision pool_size must be at least 1 (got {self.pool_size})")
        if self.num_channels != 3:
            raise ConfigError(f"vision num_channels must be 3 (RGB frames, CLIP normalisation), got {self.num_channels}")
        if self.grid_size % self.pool_size != 0:
            raise ConfigError(
                f"vision patch grid {self.grid_size}x{self.grid_size} is not divisible by pool_size {self.pool_size}"
            )
        if not -self.num_layers <= self.select_layer <= self.num_layers or self.select_layer == 0:
            raise ConfigError(
                f"vision select_layer {self.select_layer} must pick one of the {self.num_layers} blocks "
                f"(1..{self.num_layers} or -1..-{self.num_layers})"
            )
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be at least 1 (got {self.num_frames})")

    @property
    def grid_size(self) -> int:
        """Patches per side of a frame."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        """Tokens each frame contributes: the pooled patch grid, plus the class token if it is kept."""
        return (self.grid_size // self.pool_size) ** 2 + (0 if self.drop_class_token else 1)

    @property
    def num_tokens(self) -> int:
        """Video tokens per clip, before any projector compression."""
        return self.num_frames * self.tokens_per_frame


@dataclass
class AudioTowerConfig:
    """An audio encoder over log-mel (Whisper-style) or Kaldi fbank (BEATs-style) features."""

    backbone_type: str = "whisper"  # --audio-backbone-type: "whisper", "beats" (built here) or "hf-whisper"
    pretrained_path: str | None = None  # hf-whisper only: local folder for from_pretrained (own towers: MIMOModel.load_towers)
    sample_rate: int = SAMPLE_RATE  # audio is resampled to this rate (16 kHz, as Whisper)
    clip_duration_s: float = 1.0  # --clip-duration: the time window both senses see, in seconds (see MIMOConfig.clip_window)
    num_mel_bins: int | None = None  # feature bins per frame; None = the backbone's own: 80 log-mel (Whisper), 128 fbank (BEATs)
    hidden_size: int = 128  # width of the encoder
    num_layers: int = 4  # transformer blocks
    num_attention_heads: int = 4  # heads per block; must divide hidden_size
    ffn_hidden_size: int = 512  # MLP width inside each block
    layernorm_epsilon: float = 1e-5
    beats_patch_size: int = 16  # BEATs cuts the fbank into patch x patch squares (frequency x time)
    audio_seq_len: int | None = None  # --audio-seq-len: audio tokens per clip (any positive number; adaptive average pooling); None = half the encoder's positions
    normalize_output: bool = True  # LayerNorm on the pooled features
    attention_window_s: float | None = None  # self-attention only within windows of this many seconds (None: the whole clip); mimo_lib.audio_tower.attention_windows

    def __post_init__(self) -> None:
        _check_choice("audio backbone_type", self.backbone_type, AUDIO_BACKBONES)
        if self.attention_window_s is not None:
            if isinstance(self.attention_window_s, bool) or not isinstance(self.attention_window_s, (int, float)) \
                    or not self.attention_window_s > 0:
                raise ConfigError(f"audio attention_window_s must be a positive number of seconds or None, "
                                  f"got {self.attention_window_s!r}")
            if self.backbone_type == "hf-whisper":
                raise ConfigError("audio attention_window_s: a pretrained hf-whisper encoder attends over its whole "
                                  "input; set attention_window_s=None")
        if self.num_mel_bins is None:
            self.num_mel_bins = 128 if self.backbone_type == "beats" else 80
        if self.audio_seq_len is None:
            self.audio_seq_len = max(1, self.encoder_seq_len // 2)
        _check_heads("audio tower", self.hidden_size, self.num_attention_heads)
        if self.backbone_type == "beats" and self.num_mel_bins % self.beats_patch_size != 0:
            raise ConfigError(
                f"beats: num_mel_bins {self.num_mel_bins} is not divisible by beats_patch_size {self.beats_patch_size}"
            )
        # Any positive count works: token j averages the encoder positions of the j-th of audio_seq_len equal
        # time spans (mimo_lib.audio_tower.pool_sequence). More tokens than positions repeat positions.
        if isinstance(self.audio_seq_len, bool) or not isinstance(self.audio_seq_len, int) or self.audio_seq_len < 1:
            raise ConfigError(
                f"--audio-seq-len {self.audio_seq_len!r}: the number of audio tokens must be a positive whole "
                f"number (any one: the {self.backbone_type} encoder's {self.encoder_seq_len} positions for "
                f"{self.clip_duration_s:g} s of audio are average-pooled to it)"
            )
        if not self.clip_duration_s > 0:
            raise ConfigError(f"--clip-duration must be a positive number of seconds, got {self.clip_duration_s!r}")

    @property
    def num_samples(self) -> int:
        """Waveform samples per clip."""
        return int(round(self.clip_duration_s * self.sample_rate))

    @property
    def num_feature_frames(self) -> int:
        """Feature frames per clip (one per 10 ms)."""
        return int(round(self.clip_duration_s * FEATURE_FRAMES_PER_SECOND))

    @property
    def encoder_seq_len(self) -> int:
        """Positions the encoder produces before pooling to ``audio_seq_len``.

        Whisper: a stride-2 convolution halves the frames. BEATs: one position
        per (frequency, time) patch, the time axis padded up to whole patches.
        """
        if self.backbone_type == "beats":
            time_patches = math.ceil(self.num_feature_frames / self.beats_patch_size)
            return (self.num_mel_bins // self.beats_patch_size) * time_patches
        return self.num_feature_frames // 2

    @property
    def pool_factor(self) -> float:
        """Encoder positions per audio token: an int when ``audio_seq_len`` divides ``encoder_seq_len``
        (each token the mean of that many whole positions), else a fraction (windows straddle positions;
        below 1, tokens repeat positions)."""
        ratio = self.encoder_seq_len / self.audio_seq_len
        return int(ratio) if self.encoder_seq_len % self.audio_seq_len == 0 else ratio


@dataclass
class ProjectorConfig:
    """LLaVA-1.5 projectors: one two-layer MLP per modality into the language model's width."""

    projector_type: str = "mlp2x_gelu"  # Linear -> GELU -> Linear, as LLaVA-1.5
    vision_temporal_compression: int = 1  # concatenate each grid cell's tokens from this many consecutive frames (1 = off)
    vision_token_compression: int = 1  # then concatenate this many neighbouring video tokens into one (1 = off)
    audio_token_compression: int = 1  # concatenate this many neighbouring audio tokens into one (1 = off)

    def __post_init__(self) -> None:
        _check_choice("projector_type", self.projector_type, PROJECTOR_TYPES)
        for name in ("vision_temporal_compression", "vision_token_compression", "audio_token_compression"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (got {getattr(self, name)})")


@dataclass
class LanguageModelConfig:
    """A GPT decoder laid out like megatron-core's ``GPTModel`` with the local layer spec.

    Each field names the megatron-core argument it maps onto.
    """

    vocab_size: int = 359  # GPTModel(vocab_size=): Tokenizer.default() has 359 tokens (a test keeps them equal)
    make_vocab_size_divisible_by: int = 64  # Megatron pads the embedding table to a multiple of this
    num_layers: int = 4  # TransformerConfig.num_layers
    hidden_size: int = 128  # TransformerConfig.hidden_size
    num_attention_heads: int = 4  # TransformerConfig.num_attention_heads (no grouped-query attention)
    ffn_hidden_size: int = 512  # TransformerConfig.ffn_hidden_size
    max_sequence_length: int = 512  # GPTModel(max_sequence_length=): longest combined sequence
    position_embedding_type: str = "rope"  # GPTModel(position_embedding_type=): "rope" or "learned_absolute"
    rotary_base: int = 10_000  # GPTModel(rotary_base=)
    normalization: str = "LayerNorm"  # TransformerConfig.normalization: "LayerNorm" or "RMSNorm"
    layernorm_epsilon: float = 1e-5  # TransformerConfig.layernorm_epsilon
    activation: str = "gelu"  # "gelu" = TransformerConfig.activation_func=F.gelu; "swiglu" = gated_linear_unit + silu
    add_bias_linear: bool = True  # TransformerConfig.add_bias_linear (and add_qkv_bias)
    share_embeddings_and_output_weights: bool = False  # GPTModel(share_embeddings_and_output_weights=)
    hidden_dropout: float = 0.0  # TransformerConfig.hidden_dropout
    attention_dropout: float = 0.0  # TransformerConfig.attention_dropout
    init_method_std: float = 0.02  # TransformerConfig.init_method_std

    def __post_init__(self) -> None:
        _check_heads("language model", self.hidden_size, self.num_attention_heads)
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDINGS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("activation", self.activation, ACTIVATIONS)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up, as Megatron does."""
        m = self.make_vocab_size_divisible_by
        return ((self.vocab_size + m - 1) // m) * m


@dataclass
class AudioOutputConfig:
    """Where a decoder that *answers with sound* keeps its audio tokens (chapter 10; :mod:`mimo_lib.audio_output`).

    ``MIMOConfig.audio_output`` is ``None`` for a text-only model. With it, the vocabulary holds, after the
    text ids, ``<audio_out>`` (``start_id``), ``</audio_out>`` (``start_id + 1``) and one id per codebook
    entry of the audio codec (``first_code_id`` .. ``first_code_id + codebook_size - 1``).
    """

    codebook_size: int = 256  # entries of the audio codec's codebook (mimo_lib.audio_codec): one token id each
    start_id: int = 359  # id of <audio_out>; </audio_out> is start_id + 1, code k is start_id + 2 + k
    codes_per_span: int = 25  # codes between <audio_out> and </audio_out>: 1 s of sound at the codec's 25 codes/s

    def __post_init__(self) -> None:
        for name in ("codebook_size", "start_id", "codes_per_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"audio_output.{name} must be a positive whole number, got {value!r}")

    @property
    def end_id(self) -> int:
        """Id of ``</audio_out>``."""
        return self.start_id + 1

    @property
    def first_code_id(self) -> int:
        """Id of audio code 0."""
        return self.start_id + 2

    @property
    def stop_id(self) -> int:
        """One past the last audio-code id: the text vocabulary before the extension plus ``2 + codebook_size``."""
        return self.first_code_id + self.codebook_size


@dataclass
class MIMOConfig:
    """The whole model: towers, projectors, language model, and the special token ids.

    ``MIMOConfig()`` is the book's toy model with the block layout of chapters 4-7: the component defaults
    are generic (CLIP/Whisper/Megatron-like), and the few settings that made the toy model learn are set
    here, each explained in :func:`_toy_vision`, :func:`_toy_audio`, :func:`_toy_projector` and
    :func:`_toy_language_model`.
    The ``toy`` preset (:func:`_toy`) is that model laid out in time (chapter 8). The token ids come from
    :data:`mimo_lib.constants.SPECIAL_TOKENS`, the tokenizer's own table.
    """

    vision: VisionTowerConfig = field(default_factory=lambda: _toy_vision())
    audio: AudioTowerConfig = field(default_factory=lambda: _toy_audio())
    projector: ProjectorConfig = field(default_factory=lambda: _toy_projector())
    language_model: LanguageModelConfig = field(default_factory=lambda: _toy_language_model())
    pad_token_id: int = PAD_TOKEN_ID  # <pad>: fills the rows of a batch after each sample's end
    eos_token_id: int = EOS_TOKEN_ID  # <eos>: ends every answer; generation stops when it is produced
    video_token_id: int = VIDEO_TOKEN_ID  # <video>: each expands to the clip's video tokens
    audio_token_id: int = AUDIO_TOKEN_ID  # <audio>: each expands to the clip's audio tokens
    ignore_index: int = IGNORE_INDEX  # label value the loss skips (prompt, padding, modality positions)
    av_layout: str = "block"  # --av-layout: "block" (all video tokens, then all audio tokens) or "interleaved" (chunk by chunk in time: each chunk's video, then its audio; mimo_lib.combine)
    av_positions: str = "sequence"  # --av-positions: "sequence" (0, 1, 2, ... per position) or "time" (a media token's id counts ticks of its time, shared by video and audio of the same instant; text continues at max + 1, as Qwen2.5-Omni's TMRoPE)
    chunk_seconds: float = 0.25  # --chunk-seconds: one time chunk of the interleaved layout (Qwen2.5-Omni: 2 s; 0.25 s gives four chunks of a 1-s toy clip, two frames each)
    ticks_per_second: float = 25.0  # av_positions="time": position ids per second of media (25 = one per 40 ms, as TMRoPE)
    av_time_embedding: bool = False  # --av-time-embedding: add a learned vector per time chunk (chunk_seconds) to every video and audio token of it, so a token carries when it is (mimo_lib.time_embedding; either layout)
    clip_window: str = "start"  # --clip-window: frames and audio of a file come from the same audio.clip_duration_s seconds, from 0 s ("start") or centred on the clip ("center")
    audio_output: AudioOutputConfig | None = None  # None: a text-only model; else where its audio-out tokens are (chapter 10; left out of to_dict when None)

    @property
    def num_video_tokens(self) -> int:
        """Decoder positions one ``<video>`` placeholder becomes."""
        merged = self.projector.vision_temporal_compression * self.projector.vision_token_compression
        return self.vision.num_tokens // merged

    @property
    def num_time_chunks(self) -> int:
        """Time chunks of ``chunk_seconds`` in the clip window (the last may be shorter): the rows of the time embedding."""
        return max(1, math.ceil(self.audio.clip_duration_s / self.chunk_seconds - 1e-9))

    @property
    def num_audio_tokens(self) -> int:
        """Decoder positions one ``<audio>`` placeholder becomes."""
        return self.audio.audio_seq_len // self.projector.audio_token_compression

    def __post_init__(self) -> None:
        _check_choice("clip_window", self.clip_window, CLIP_WINDOWS)
        self._check_time_layout()
        out = self.audio_output
        if out is not None and not (out.start_id >= 7 and out.stop_id <= self.language_model.vocab_size):
            raise ConfigError(
                f"audio_output ids {out.start_id}..{out.stop_id - 1} must lie after the special tokens and inside "
                f"the language model's vocab_size {self.language_model.vocab_size}"
            )
        if self.vision.num_frames % self.projector.vision_temporal_compression:
            raise ConfigError(
                f"vision_temporal_compression {self.projector.vision_temporal_compression} must divide "
                f"num_frames {self.vision.num_frames}"
            )
        if (self.vision.num_tokens // self.projector.vision_temporal_compression) % self.projector.vision_token_compression:
            raise ConfigError(
                f"vision_token_compression {self.projector.vision_token_compression} must divide "
                f"the {self.vision.num_tokens // self.projector.vision_temporal_compression} video tokens"
            )
        if self.audio.audio_seq_len % self.projector.audio_token_compression:
            raise ConfigError(
                f"audio_token_compression {self.projector.audio_token_compression} must divide "
                f"audio_seq_len {self.audio.audio_seq_len}"
            )

    def _check_time_layout(self) -> None:
        """``av_layout``, ``av_positions``, ``chunk_seconds``, ``ticks_per_second``; no merged video token across chunks."""
        _check_choice("av_layout", self.av_layout, AV_LAYOUTS)
        _check_choice("av_positions", self.av_positions, AV_POSITIONS)
        if not isinstance(self.av_time_embedding, bool):
            raise ConfigError(f"av_time_embedding must be true or false, got {self.av_time_embedding!r}")
        for name in ("chunk_seconds", "ticks_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.av_layout != "interleaved":
            return
        # Frame i shows [i, i + 1) * clip / T; the projector merges frames g*kt .. g*kt + kt - 1 into one token,
        # which must not straddle two chunks (the video keeps a time axis: merged per chunk, never over the clip).
        frames, kt = self.vision.num_frames, self.projector.vision_temporal_compression
        k, per_frame = self.projector.vision_token_compression, self.vision.tokens_per_frame
        if per_frame % k:
            raise ConfigError(
                f"av_layout='interleaved': vision_token_compression {k} must divide the {per_frame} tokens of a "
                "frame, so that no merged video token holds the end of one frame and the start of the next"
            )
        frame_s = self.audio.clip_duration_s / frames
        for first in range(0, frames - frames % kt, kt):
            start, end = first * frame_s, (first + kt) * frame_s  # the merged token's span
            if math.floor(start / self.chunk_seconds + 1e-9) != math.ceil(end / self.chunk_seconds - 1e-9) - 1:
                per_chunk = self.chunk_seconds / frame_s
                fits = [d for d in range(1, frames + 1) if frames % d == 0 and per_chunk >= d and
                        abs(per_chunk / d - round(per_chunk / d)) < 1e-9]
                raise ConfigError(
                    f"av_layout='interleaved' with chunk_seconds={self.chunk_seconds:g}: the projector merges "
                    f"{kt} frames ({start:g}-{end:g} s) into one video token, across a chunk boundary; merge only "
                    f"the frames of one chunk (vision_temporal_compression one of {fits or [1]}) or choose "
                    f"chunk_seconds a multiple of {kt} frames ({kt * frame_s:g} s)"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data.get("audio_output") is None:
            data.pop("audio_output", None)  # a text-only model's config reads as it did before chapter 10
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MIMOConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo should not pass silently)."""
        parts = {
            "vision": VisionTowerConfig,
            "audio": AudioTowerConfig,
            "projector": ProjectorConfig,
            "language_model": LanguageModelConfig,
            "audio_output": AudioOutputConfig,
        }
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown MIMOConfig fields {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "audio_output" and value is None:
                kwargs[key] = None
            elif key in parts:
                part_fields = {f.name for f in fields(parts[key])}
                bad = set(value) - part_fields
                if bad:
                    raise ConfigError(f"unknown {key} config fields {sorted(bad)}")
                kwargs[key] = parts[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _toy_vision() -> VisionTowerConfig:
    # A convolutional stem (three stride-2 3x3 convolutions) in front of the
    # transformer instead of CLIP's single strided patch convolution: over the
    # shipped 1000-step schedule it reads shape at 90% by step 500, the linear
    # stem by step 700 (benchmarks/results/vision_stem_1000.json, chapter 2).
    #
    # Three blocks, the last one's output selected: the same features as LLaVA's
    # "penultimate of four" (select_layer=-2), without a fourth block that
    # nothing reads and nothing trains.
    return VisionTowerConfig(patch_embedding_type="conv", num_layers=3, select_layer=-1)


def _toy_projector() -> ProjectorConfig:
    # Temporal compression 8 (MIMOConfig(), the block layout of chapters 4-7):
    # each video token is one 16x16-pixel cell of the frame over all 8 frames
    # (16 video tokens instead of 128). With one frame per token the decoder
    # learned which way a shape moves far more slowly than with the frames side
    # by side in one token (chapter 4). The toy preset (_toy) merges only the 4
    # frames of one half-second chunk instead: 32 video tokens, two per cell.
    return ProjectorConfig(vision_temporal_compression=8)


def _toy_language_model() -> LanguageModelConfig:
    # init_method_std 0.1, not Megatron's 0.02: 0.02 suits widths of about
    # 1,000-2,500 (roughly 1/sqrt(hidden_size)); for width 128 the same rule gives
    # 0.088. With 0.02 the decoder learned to *compare* a word with what it saw
    # or read ("Is the shape a square?") very slowly (benchmarks/init_scale.py,
    # chapter 7).
    return LanguageModelConfig(init_method_std=0.1)


def _toy_audio() -> AudioTowerConfig:
    # Self-attention within half-seconds only (attention_window_s 0.5; the generic default, like Whisper,
    # attends over the whole clip). Over the whole clip every audio token of a two-event clip mixes in the
    # other half's sound, so no layout could tell the decoder which sound was when; within windows a token
    # holds its own half-second only (chapter 8 measures both on the shipped weights: the second half's sound
    # swapped moves every first-half token with whole-clip attention, and almost none within windows), and the
    # tower's zero-shot instrument and pitch stay at 100% (the checkpoint's metadata). Qwen2.5-Omni's audio
    # encoder attends within 2-s windows likewise.
    return AudioTowerConfig(attention_window_s=0.5)


def _toy() -> MIMOConfig:
    # MIMOConfig() laid out in time, so that "which instrument plays while the blue triangle is on screen?"
    # (two-event clips: one event per half) can be answered (issue 11, chapter 8); MIMOConfig() itself keeps
    # the block layout that chapters 4-7 build. The measured effect of each choice is in chapter 8 and
    # benchmarks/results/time_layouts.json:
    #
    # * av_layout "interleaved", chunk_seconds 0.5, vision_temporal_compression 4: each half's video tokens,
    #   then its audio tokens; a video token merges the 4 frames of one half. With 0.25-s chunks (2 frames a
    #   token) motion fell to 10% (250 steps); with 4 frames it learns as fast as the block layout's 8.
    # * av_positions "time": a media token's position id counts 40-ms ticks, shared by the video and audio
    #   of the same instant (Qwen2.5-Omni's TMRoPE), so "same moment" is a short RoPE distance.
    # * av_time_embedding: a learned vector per half-second added to its video and audio tokens. With the
    #   rotation alone, `time` was learned late and reached 95% with some data seeds only (88% with seed 1);
    #   with it every run of that schedule ended at 96-100% on `time` (benchmarks/results/recipe_from_scratch.json;
    #   weak evidence: a few seeds, small learned vectors, no gain at the 1,200-step budget of time_layouts.json).
    return MIMOConfig(
        projector=replace(_toy_projector(), vision_temporal_compression=4),
        av_layout="interleaved", av_positions="time", chunk_seconds=0.5, av_time_embedding=True,
    )


def _small() -> MIMOConfig:
    """The toy model's design at about 30 M parameters: the settings that made ``toy`` learn carry over
    (conv stem, frames merged per cell, init std about 1/sqrt(hidden_size)); its recipe is not yet run."""
    return MIMOConfig(
        vision=VisionTowerConfig(
            image_size=128, patch_size=16, hidden_size=384, num_layers=6, num_attention_heads=6, ffn_hidden_size=1536,
            patch_embedding_type="conv",
        ),
        audio=AudioTowerConfig(
            clip_duration_s=2.0, hidden_size=384, num_layers=6, num_attention_heads=6, ffn_hidden_size=1536,
            audio_seq_len=50,
        ),
        projector=ProjectorConfig(vision_temporal_compression=8),
        language_model=LanguageModelConfig(
            num_layers=8, hidden_size=512, num_attention_heads=8, ffn_hidden_size=2048, max_sequence_length=1024,
            init_method_std=round(1 / math.sqrt(512), 3),
        ),
    )


def _llava_avlm_7b() -> MIMOConfig:
    """The shape of Megatron-LM's llava_avlm: CLIP ViT-L/14-336, Whisper-base, a Vicuna-7B-shaped decoder."""
    return MIMOConfig(
        vision=VisionTowerConfig(
            image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_attention_heads=16,
            ffn_hidden_size=4096, pool_size=1, num_frames=8, patch_embedding_type="linear",
        ),
        audio=AudioTowerConfig(
            clip_duration_s=30.0, num_mel_bins=80, hidden_size=512, num_layers=6, num_attention_heads=8,
            ffn_hidden_size=2048, audio_seq_len=1500,
        ),
        language_model=LanguageModelConfig(
            vocab_size=32_000, make_vocab_size_divisible_by=128, num_layers=32, hidden_size=4096,
            num_attention_heads=32, ffn_hidden_size=11_008, max_sequence_length=8192, normalization="RMSNorm",
            activation="swiglu", add_bias_linear=False, layernorm_epsilon=1e-5, init_method_std=0.02,
        ),
        projector=ProjectorConfig(),
    )


def _tiny() -> MIMOConfig:
    """The toy preset shrunk until it builds and steps in milliseconds: for tests and quick experiments."""
    return MIMOConfig(
        vision=VisionTowerConfig(
            patch_embedding_type="conv", num_frames=4, image_size=32, hidden_size=32, num_layers=1,
            num_attention_heads=2, ffn_hidden_size=64, select_layer=-1,
        ),
        audio=AudioTowerConfig(hidden_size=32, num_layers=1, num_attention_heads=2, ffn_hidden_size=64, audio_seq_len=5),
        projector=ProjectorConfig(),
        language_model=LanguageModelConfig(
            hidden_size=32, num_layers=2, num_attention_heads=2, ffn_hidden_size=64, max_sequence_length=256
        ),
    )


def _gpt_1b() -> MIMOConfig:
    """A ~1.06B-parameter decoder (LLaMA-like: SwiGLU, RMSNorm, no biases) for benchmarks/megatron_throughput.py.

    18 layers x (4 D^2 + 3 D F) = 925M, plus untied input and output embeddings 2 x 32000 x 2048 = 131M.
    The towers are the toy preset's (the benchmark measures the language model).
    """
    return MIMOConfig(
        vision=VisionTowerConfig(patch_embedding_type="conv"),
        projector=ProjectorConfig(vision_temporal_compression=8),
        language_model=LanguageModelConfig(
            vocab_size=32_000, make_vocab_size_divisible_by=128, num_layers=18, hidden_size=2048,
            num_attention_heads=16, ffn_hidden_size=5632, max_sequence_length=2048, normalization="RMSNorm",
            activation="swiglu", add_bias_linear=False,
        ),
    )


PRESETS = {"tiny": _tiny, "toy": _toy, "small": _small, "llava-avlm-7b": _llava_avlm_7b, "gpt-1b": _gpt_1b}


def get_preset(name: str, **overrides: Any) -> MIMOConfig:
    """A fresh config for preset ``name``; ``overrides`` replace top-level fields (e.g. ``vision=...``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]()
    return replace(config, **overrides) if overrides else config
