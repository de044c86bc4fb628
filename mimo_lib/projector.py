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

Parameters (weights and biases, closed form in :func:`projector_num_parameters`)::

    linear_fc1: (input_size * k) * output_size + output_size
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


class ModalityProjector(nn.Module):
    """LLaVA-1.5 projector: optional token compression, then Linear(in*k, out) -> GELU -> Linear(out, out).

    Args:
        input_size: width of the encoder's features (``D_enc``).
        output_size: width of the language model (``D``).
        token_compression: ``k``, consecutive tokens merged into one before the MLP (1 = off).
        projector_type: only ``"mlp2x_gelu"`` (see :data:`mimo_lib.config.PROJECTOR_TYPES`).

    Shapes: ``(B, N, input_size) -> (B, N // k, output_size)``.
    """

    def __init__(
        self, input_size: int, output_size: int, token_compression: int = 1, projector_type: str = "mlp2x_gelu"
    ) -> None:
        super().__init__()
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={projector_type!r} is not one of {PROJECTOR_TYPES}")
        if input_size < 1 or output_size < 1:
            raise ValueError(f"input_size and output_size must be positive (got {input_size}, {output_size})")
        if token_compression < 1:
            raise ValueError(f"token_compression must be at least 1 (got {token_compression})")
        self.input_size = input_size
        self.output_size = output_size
        self.token_compression = token_compression
        self.projector_type = projector_type

        self.linear_fc1 = nn.Linear(input_size * token_compression, output_size)
        self.activation = nn.GELU()  # the exact (erf) GELU, as LLaVA's nn.GELU()
        self.linear_fc2 = nn.Linear(output_size, output_size)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Decoder positions that ``num_input_tokens`` encoder tokens become."""
        return num_input_tokens // self.token_compression

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"ModalityProjector expects encoder features of shape (B, N, {self.input_size}), "
                f"got {tuple(x.shape)}; check that input_size matches the encoder's hidden size"
            )
        x = merge_tokens(x, self.token_compression)  # (B, N/k, k*D_enc)
        x = self.linear_fc1(x)  # (B, N/k, D)
        x = self.activation(x)  # (B, N/k, D)
        return self.linear_fc2(x)  # (B, N/k, D)

    def extra_repr(self) -> str:
        return f"projector_type={self.projector_type!r}, token_compression={self.token_compression}"


def projector_num_parameters(input_size: int, output_size: int, token_compression: int = 1) -> int:
    """Parameters of a :class:`ModalityProjector`, in closed form (weights plus biases of both layers)."""
    first = input_size * token_compression * output_size + output_size  # linear_fc1
    second = output_size * output_size + output_size  # linear_fc2
    return first + second
