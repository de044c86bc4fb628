"""A learned vector per time chunk, added to every video and audio token of that chunk (chapter 8).

    projected tokens (items, N, D) + weight[chunk of each token] (N, D)  ->  (items, N, D)

Time-aware position ids (``av_positions="time"``) tell *attention* how far apart two tokens are in time,
but RoPE rotates queries and keys only: nothing in a token's own vector says *when* it is. A two-event
``time`` question ("which instrument plays while the blue triangle is on screen?") needs exactly that
binding, and a decoder with only the rotation learns it late, in a jump whose step varies with the seed.
This embedding writes the chunk into the tokens themselves, as Video-LLaMA's frame position embeddings
and the block layout's "per-frame temporal embeddings" of issue 11 do: a video token and an audio token
of the same half-second then carry the same vector, which attention can match by content.

It starts at zero (the model computes exactly what it did without it, and no random number is drawn, so
adding it changes no other weight's initialisation) and belongs with the decoder's parameters: it is
frozen while only the projectors align on captions and learns when the language model learns.
"""

from __future__ import annotations

import torch
from torch import nn


class TimeEmbedding(nn.Module):
    """``num_chunks`` learned vectors of width ``hidden_size``, one per time chunk of the clip window."""

    def __init__(self, num_chunks: int, hidden_size: int) -> None:
        super().__init__()
        if num_chunks < 1 or hidden_size < 1:
            raise ValueError(f"need at least one chunk and one channel (got {num_chunks}, {hidden_size})")
        self.weight = nn.Parameter(torch.zeros(num_chunks, hidden_size))  # (chunks, D), zero: no change at start

    def forward(self, tokens: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """``tokens`` (items, N, D) of one modality, ``chunks`` (N,) the chunk of each -> (items, N, D)."""
        if chunks.shape != tokens.shape[1:2]:
            raise ValueError(f"{tokens.shape[1]} tokens per item but {tuple(chunks.shape)} chunk indices")
        if len(chunks) and not 0 <= int(chunks.min()) <= int(chunks.max()) < len(self.weight):
            raise ValueError(f"chunk indices {int(chunks.min())}..{int(chunks.max())} outside 0..{len(self.weight) - 1}")
        return tokens + self.weight[chunks.to(self.weight.device)].to(tokens.dtype)  # (items, N, D)

    def extra_repr(self) -> str:
        return f"chunks={self.weight.shape[0]}, hidden_size={self.weight.shape[1]}"
