"""Cutting a full (TP=1) language-model state dict into tensor-parallel shards, and gluing them back.

Tensor parallelism (TP = ``t``) gives every rank ``r`` a slice of each big
matrix. Which slice is decided by how the layer uses the matrix, and this file
is the one place that says it, key by key (the names are megatron-core's, which
are also :class:`mimo_lib.language_model.GPTLanguageModel`'s)::

    key                                        full shape     rank r holds
    embedding.word_embeddings.weight           (V, D)         rows   [r V/t, (r+1) V/t)   vocabulary-parallel
    output_layer.weight                        (V, D)         rows   [r V/t, (r+1) V/t)   column-parallel
    self_attention.linear_qkv.weight / .bias   (3D, D)        rows   [r 3D/t, (r+1) 3D/t) column-parallel, whole heads
    mlp.linear_fc1.weight / .bias  (gelu)      (F, D)         rows   [r F/t, (r+1) F/t)   column-parallel
    mlp.linear_fc1.weight / .bias  (swiglu)    (2F, D)        [gate_r; up_r]              column-parallel, two halves
    self_attention.linear_proj.weight          (D, D)         columns [r D/t, (r+1) D/t)  row-parallel
    mlp.linear_fc2.weight                      (D, F)         columns [r F/t, (r+1) F/t)  row-parallel
    linear_proj.bias, linear_fc2.bias          (D,)           all of it (added once, after the all-reduce)
    norms, position_embeddings                 ...            all of it (replicated)

Two rows of this table deserve a second look:

* **QKV.** Megatron lays the fused QKV rows out *per head*: head 0's q, k, v
  rows, then head 1's, ... (see ``language_model.py``). So a contiguous slice
  of ``3D/t`` rows is exactly ``H/t`` whole heads — each rank attends with its
  own heads and needs nobody else's. With the other common layout ("all q, all
  k, all v") the same slice would be a useless mix; that is why the layout
  matters. The number of heads must divide by ``t``.
* **SwiGLU's fc1.** The full matrix is ``[gate; up]`` and the layer computes
  ``silu(gate) * up`` *on each rank*, so each rank must hold the gate rows and
  the up rows of the *same* ``F/t`` features: ``[gate_r; up_r]``. A plain
  contiguous split would give rank 0 all of ``gate`` and rank 1 all of ``up``,
  which runs without an error and computes nonsense.

:func:`split_state_dict` and :func:`merge_state_dicts` work on any mapping of
these keys (an optional prefix, e.g. ``language_model.``, is allowed), so the
same functions also convert Adam's ``exp_avg`` / ``exp_avg_sq``, which have the
shape of their parameter. ``_extra_state`` entries are dropped. This file needs
nothing but torch: no process group, no megatron-core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mimo_lib.config import LanguageModelConfig
from mimo_lib.errors import MimoInputError


class TensorParallelSizeError(MimoInputError):
    """The tensor-parallel size does not fit the language model's shape."""


# How each kind of tensor is split: (dim, kind). kind: "rows", "glu" (SwiGLU's [gate; up]), "replicated".
_VOCAB_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")
_COLUMN_PARALLEL = ("self_attention.linear_qkv", "mlp.linear_fc1")  # output features split: dim 0
_ROW_PARALLEL = ("self_attention.linear_proj", "mlp.linear_fc2")  # input features split: dim 1 (bias replicated)


def check_tensor_parallel_size(config: LanguageModelConfig, tp_size: int) -> None:
    """Raise :class:`TensorParallelSizeError` unless ``tp_size`` divides heads, hidden size, ffn and padded vocab."""
    if tp_size < 1:
        raise TensorParallelSizeError(f"--tensor-model-parallel-size must be at least 1, got {tp_size}")
    sizes = {
        "num_attention_heads": config.num_attention_heads,
        "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.ffn_hidden_size,
        "padded vocabulary (vocab_size rounded up to make_vocab_size_divisible_by)": config.padded_vocab_size,
    }
    for name, size in sizes.items():
        if size % tp_size:
            divisors = [t for t in (1, 2, 4, 8) if all(s % t == 0 for s in sizes.values())]
            raise TensorParallelSizeError(
                f"--tensor-model-parallel-size {tp_size} does not divide the language model's {name} ({size}); "
                f"choose one of {divisors}, or change the model's shape"
            )


def split_kind(key: str, config: LanguageModelConfig) -> tuple[str, int]:
    """How ``key`` is split: ``("rows", 0)``, ``("glu", 0)``, ``("columns", 1)`` or ``("replicated", -1)``."""
    if any(key.endswith(name) for name in _VOCAB_KEYS):
        return "rows", 0
    module, _, leaf = key.rpartition(".")
    if any(module.endswith(name) for name in _COLUMN_PARALLEL):
        if module.endswith("mlp.linear_fc1") and config.activation == "swiglu":
            return "glu", 0
        return "rows", 0
    if any(module.endswith(name) for name in _ROW_PARALLEL):
        return ("columns", 1) if leaf == "weight" else ("replicated", -1)  # the bias is added after the all-reduce
    return "replicated", -1


def split_tensor(full: torch.Tensor, kind: str, dim: int, tp_size: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s slice of one full tensor (a contiguous copy)."""
    if kind == "replicated":
        return full.clone()
    if kind == "glu":
        gate, up = full.chunk(2, dim=0)  # (F, ...) each
        return torch.cat([gate.chunk(tp_size, dim=0)[rank], up.chunk(tp_size, dim=0)[rank]], dim=0).contiguous()
    if full.shape[dim] % tp_size:
        raise TensorParallelSizeError(f"dimension {dim} of a {tuple(full.shape)} tensor does not split into {tp_size}")
    return full.chunk(tp_size, dim=dim)[rank].contiguous()


def merge_tensors(shards: Sequence[torch.Tensor], kind: str, dim: int) -> torch.Tensor:
    """The inverse of :func:`split_tensor`: one full tensor from every rank's slice, in rank order."""
    if kind == "replicated":
        return shards[0].clone()
    if kind == "glu":
        halves = [shard.chunk(2, dim=0) for shard in shards]  # per rank (gate_r, up_r)
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(list(shards), dim=dim)


def _strip(key: str, prefix: str) -> str | None:
    return key[len(prefix):] if key.startswith(prefix) else None


def split_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: LanguageModelConfig, tp_size: int, prefix: str = ""
) -> list[dict[str, torch.Tensor]]:
    """One state dict per rank from a full (TP=1) one; keys not under ``prefix`` are copied to every rank.

    ``_extra_state`` entries are dropped (see :func:`mimo_lib.megatron_compat.to_megatron_state_dict`).
    """
    check_tensor_parallel_size(config, tp_size)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(tp_size)]
    for key, value in state_dict.items():
        if key.endswith("._extra_state"):
            continue
        inner = _strip(key, prefix)
        kind, dim = split_kind(inner, config) if inner is not None else ("replicated", -1)
        for rank in range(tp_size):
            shards[rank][key] = split_tensor(value, kind, dim, tp_size, rank)
    return shards


def merge_state_dicts(
    shards: Sequence[Mapping[str, torch.Tensor]], config: LanguageModelConfig, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The full (TP=1) state dict from every rank's shard, in rank order (inverse of :func:`split_state_dict`)."""
    if not shards:
        raise ValueError("merge_state_dicts needs at least one shard")
    keys = [k for k in shards[0] if not k.endswith("._extra_state")]
    for rank, shard in enumerate(shards[1:], start=1):
        other = sorted(k for k in shard if not k.endswith("._extra_state"))
        if other != sorted(keys):
            raise ValueError(f"shard {rank} has different keys from shard 0")
    full = {}
    for key in keys:
        inner = _strip(key, prefix)
        kind, dim = split_kind(inner, config) if inner is not None else ("replicated", -1)
        full[key] = merge_tensors([shard[key] for shard in shards], kind, dim)
    return full


__all__ = [
    "TensorParallelSizeError",
    "check_tensor_parallel_size",
    "merge_state_dicts",
    "merge_tensors",
    "split_kind",
    "split_state_dict",
    "split_tensor",
]
