"""The modality projector: the bridge from an encoder's features to the language model's width.

A vision or audio encoder speaks its own "language": vectors of its own width
(``input_size``) in a space the decoder has never seen. LLaVA-1.5 showed that a
small two-layer MLP is enough to translate them into vectors the decoder can
read as if they were word embeddings::

    features (B, N, input_size) --Linear--> GELU --Linear--> tokens (B, N, output_size)

That is ``projector_type="mlp2x_gelu"`` (LLaVA's name for it): two linear
layers, a GELU between them. One projector per modality, trained from scratch
while the encoders (and, in the first stage, the decoder) stay frozen.

**Token compression.** Every token the projector emits costs a decoder
position, and attention cost grows with the square of the sequence length. So
before the MLP we may *merge* ``k`` neighbouring tokens into one by
concatenating their feature vectors (the idea behind pixel-shuffle in
InternVL / Idefics3 and "token merging by concatenation"): ``N`` tokens of
width ``D`` become ``N // k`` tokens of width ``k * D``. Nothing is averaged
away; the first linear layer sees all ``k`` tokens and learns how to mix them.

The neighbours are **consecutive tokens in the sequence**: output token ``j``
is ``concat(x[j*k], x[j*k + 1], ..., x[j*k + k - 1])``. For video tokens,
which run frame by frame and row by row within a frame, a ``k`` that divides
the tokens per frame merges tokens of the same frame (with ``k`` dividing the
grid width, tokens of the same row); a ``k`` that does not may merge the end
of one frame with the start of the next. ``N`` must be a multiple of ``k``.

**Temporal compression (video).** Tokens merged that way come from one frame.
Merging each grid cell's tokens from ``kt`` *consecutive frames* instead
(``temporal_compression=kt``, the idea of Qwen2-VL's temporal patches of two
frames) gives every merged token a short movie of its cell: the first linear
layer sees where the shape is in each of those frames, so *how it moves*
becomes a property of single tokens, which a per-token MLP can compute,
rather than a comparison between tokens a frame apart (16 positions in the
toy tower) that the decoder must learn to make (chapter 7 measures the
difference). Video tokens run ``(frame, cell)``; with ``kt`` frames per group
they become::

    (B, T * P, D) --> (B, T/kt, P, kt * D)   token (g, p) = concat(x[g*kt, p], ..., x[g*kt + kt - 1, p])

then ``token_compression`` merges consecutive tokens of the result as above.

**Keeping a time axis (chapter 8).** Merging all ``T`` frames of a cell
(``kt = T``, the block layout of ``MIMOConfig()``) leaves the decoder one
token per cell and no time axis: the whole clip is one instant. The
time-interleaved layout (``MIMOConfig.av_layout="interleaved"``, the toy
preset) merges only the frames of one time chunk (``kt`` = frames per chunk,
checked by ``MIMOConfig``), so the video tokens still run chunk by chunk,
and :func:`merged_token_frames` says which frame each output token starts at;
:mod:`mimo_lib.combine` turns that into its time::

    8 frames, chunks of 2 frames, kt = 2:   tokens (g, p) for g = 0..3  ->  first frames 0, 2, 4, 6

Parameters (weights and biases, closed form in :func:`projector_num_parameters`)::

    linear_fc1: (input_size * kt * k) * output_size + output_size
    linear_fc2:  output_size * output_size     + output_size

The layers are named ``linear_fc1`` / ``linear_fc2`` like the MLP inside
megatron-core's ``MultimodalProjector``, so weights can be copied across by name.
"""

from __future__ import annotations

import torch
from torch import nn

from mimo_lib.config import PROJECTOR_TYPES


def merge_tokens(x: torch.Tensor, token_compression: int) -> torch.Tensor:
    """Concatenate every ``k = token_compression`` consecutive tokens along the feature axis.

    Args:
        x: ``(B, N, D)`` tokens; ``N`` must be a multiple of ``k``.
        token_compression: ``k``, tokens merged into one (1 returns ``x`` unchanged).
    Returns:
        ``(B, N // k, k * D)``: row ``j`` holds tokens ``j*k .. j*k + k - 1`` side by side.
    """
    if token_compression < 1:
        raise ValueError(f"token_compression must be at least 1 (got {token_compression})")
    if x.dim() != 3:
        raise ValueError(f"expected tokens of shape (B, N, D), got {tuple(x.shape)}")
    batch, num_tokens, dim = x.shape
    if num_tokens % token_compression != 0:
        divisors = [d for d in range(1, num_tokens + 1) if num_tokens % d == 0]
        raise ValueError(
            f"cannot merge {num_tokens} tokens in groups of token_compression={token_compression}: "
            f"{num_tokens} is not a multiple of {token_compression}. Choose a compression that divides the "
            f"token count (one of {divisors}), or change the encoder's token count (frames, pool_size, audio_seq_len)"
        )
    # A contiguous (B, N, D) tensor read as (B, N/k, k*D) puts k consecutive rows side by side.
    return x.reshape(batch, num_tokens // token_compression, token_compression * dim)  # (B, N/k, k*D)


def merge_frames(x: torch.Tensor, temporal_compression: int, tokens_per_frame: int) -> torch.Tensor:
    """Concatenate each grid cell's tokens from ``kt = temporal_compression`` consecutive frames.

    Args:
        x: ``(B, T * P, D)`` video tokens, frame by frame (``P = tokens_per_frame``); ``kt`` must divide ``T``.
    Returns:
        ``(B, (T // kt) * P, kt * D)``: token ``g * P + p`` is cell ``p`` in frames ``g*kt .. g*kt + kt - 1``.
    """
    if temporal_compression < 1 or tokens_per_frame < 1:
        raise ValueError(f"temporal_compression and tokens_per_frame must be positive "
                         f"(got {temporal_compression}, {tokens_per_frame})")
    if x.dim() != 3:
        raise ValueError(f"expected tokens of shape (B, N, D), got {tuple(x.shape)}")
    batch, num_tokens, dim = x.shape
    if num_tokens % tokens_per_frame or (num_tokens // tokens_per_frame) % temporal_compression:
        raise ValueError(
            f"cannot merge frames: {num_tokens} tokens are not whole frames of {tokens_per_frame} tokens in groups "
            f"of temporal_compression={temporal_compression} frames; choose a temporal compression that divides "
            "the number of frames"
        )
    groups = num_tokens // tokens_per_frame // temporal_compression
    x = x.reshape(batch, groups, temporal_compression, tokens_per_frame, dim)  # (B, T/kt, kt, P, D)
    x = x.transpose(2, 3)  # (B, T/kt, P, kt, D): each cell's kt frames side by side
    return x.reshape(batch, groups * tokens_per_frame, temporal_compression * dim)  # (B, T/kt * P, kt*D)


def merged_token_frames(
    num_frames: int, tokens_per_frame: int, temporal_compression: int = 1, token_compression: int = 1
) -> torch.Tensor:
    """The first frame of each video token the projector emits: ``(T * P // (kt * k),)`` long.

    Output token ``n`` merges tokens ``n*k .. n*k + k - 1`` of the frame-merged sequence, whose token ``m``
    is cell ``m % P`` of frames ``(m // P) * kt ..``; its first frame is ``((n * k) // P) * kt``.
    """
    if min(num_frames, tokens_per_frame, temporal_compression, token_compression) < 1:
        raise ValueError("num_frames, tokens_per_frame and both compressions must be positive")
    if num_frames % temporal_compression or (num_frames // temporal_compression * tokens_per_frame) % token_compression:
        raise ValueError(
            f"{num_frames} frames of {tokens_per_frame} tokens cannot be merged by temporal_compression="
            f"{temporal_compression} and token_compression={token_compression}"
        )
    num_out = num_frames * tokens_per_frame // (temporal_compression * token_compression)
    first_merged = torch.arange(num_out) * token_compression  # (N',) first frame-merged token of each output token
    return (first_merged // tokens_per_frame) * temporal_compression  # (N',)


class ModalityProjector(nn.Module):
    """LLaVA-1.5 projector: optional token compression, then Linear(in*k, out) -> GELU -> Linear(out, out).

    Args:
        input_size: width of the encoder's features (``D_enc``).
        output_size: width of the language model (``D``).
        token_compression: ``k``, consecutive tokens merged into one before the MLP (1 = off).
        projector_type: only ``"mlp2x_gelu"`` (see :data:`mimo_lib.config.PROJECTOR_TYPES`).
        temporal_compression: ``kt``, video only: each cell's tokens from ``kt`` consecutive frames
            merged first (1 = off); needs ``tokens_per_frame``.
        tokens_per_frame: ``P``, video tokens per frame (``VisionTowerConfig.tokens_per_frame``).

    Shapes: ``(B, N, input_size) -> (B, N // (kt * k), output_size)``.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        token_compression: int = 1,
        projector_type: str = "mlp2x_gelu",
        temporal_compression: int = 1,
        tokens_per_frame: int | None = None,
    ) -> None:
        super().__init__()
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={projector_type!r} is not one of {PROJECTOR_TYPES}")
        if input_size < 1 or output_size < 1:
            raise ValueError(f"input_size and output_size must be positive (got {input_size}, {output_size})")
        if token_compression < 1 or temporal_compression < 1:
            raise ValueError(f"token_compression and temporal_compression must be at least 1 "
                             f"(got {token_compression}, {temporal_compression})")
        if temporal_compression > 1 and tokens_per_frame is None:
            raise ValueError("temporal_compression > 1 needs tokens_per_frame (video tokens per frame)")
        self.temporal_compression = temporal_compression
        self.tokens_per_frame = tokens_per_frame
        self.input_size = input_size
        self.output_size = output_size
        self.token_compression = token_compression
        self.projector_type = projector_type

        self.linear_fc1 = nn.Linear(input_size * temporal_compression * token_compression, output_size)
        self.activation = nn.GELU()  # the exact (erf) GELU, as LLaVA's nn.GELU()
        self.linear_fc2 = nn.Linear(output_size, output_size)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Decoder positions that ``num_input_tokens`` encoder tokens become."""
        return num_input_tokens // (self.temporal_compression * self.token_compression)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"ModalityProjector expects encoder features of shape (B, N, {self.input_size}), "
                f"got {tuple(x.shape)}; check that input_size matches the encoder's hidden size"
            )
        if self.temporal_compression > 1:
            x = merge_frames(x, self.temporal_compression, self.tokens_per_frame)  # (B, N/kt, kt*D_enc)
        x = merge_tokens(x, self.token_compression)  # (B, N', k*kt*D_enc) with N' = N/(kt*k)
        x = self.linear_fc1(x)  # (B, N', D)
        x = self.activation(x)  # (B, N', D)
        return self.linear_fc2(x)  # (B, N', D)

    def extra_repr(self) -> str:
        text = f"projector_type={self.projector_type!r}, token_compression={self.token_compression}"
        if self.temporal_compression > 1:
            text += f", temporal_compression={self.temporal_compression}"
        return text


def projector_num_parameters(
    input_size: int, output_size: int, token_compression: int = 1, temporal_compression: int = 1
) -> int:
    """Parameters of a :class:`ModalityProjector`, in closed form (weights plus biases of both layers)."""
    first = input_size * temporal_compression * token_compression * output_size + output_size  # linear_fc1
    second = output_size * output_size + output_size  # linear_fc2
    return first + second
