"""Running megatron-core 0.16.1 on a CPU, and moving weights between it and our GPT.

megatron-core is written for NVIDIA GPUs. Everything it needs to run on a
laptop CPU is collected here, in one place, each with the reason:

1. **A process group.** Megatron's layers ask ``torch.distributed`` and
   ``parallel_state`` for their tensor-parallel group even when there is only
   one process. :func:`init_megatron_cpu` starts a ``gloo`` group (the CPU
   backend; ``nccl`` needs GPUs) of world size 1 on a free local port — or, under
   ``torchrun``, of the size torchrun gives — and calls
   ``initialize_model_parallel``.
2. **Weights made on the CPU.** ``TransformerConfig(use_cpu_initialization=True)``;
   otherwise every layer allocates on ``torch.cuda.current_device()``. (It also
   makes the weights the same for every tensor-parallel size: the full matrix is
   initialised, then split.)
3. **Random number generators.** Dropout runs inside Megatron's CUDA RNG
   tracker. ``model_parallel_cuda_manual_seed(seed)`` alone fails without CUDA;
   ``torch.manual_seed(seed)`` then ``model_parallel_cuda_manual_seed(seed,
   inference_rng_tracker=True)`` works.
4. **A scratch buffer on the CPU.** The local ``DotProductAttention`` takes its
   score matrix from ``parallel_state``'s ``GlobalMemoryBuffer``, which allocates
   on the GPU. :class:`CPUGlobalMemoryBuffer` allocates on the CPU instead.
5. **RoPE angles on the CPU.** ``RotaryEmbedding.get_emb`` moves its inverse
   frequencies to ``torch.cuda.current_device()`` on first use.
   :class:`CPURotaryEmbedding` leaves them where they are.
6. **An explicit causal mask.** With ``attention_mask=None`` Megatron builds its
   causal mask on ``"cuda"``. :func:`causal_attention_mask` makes one on the CPU:
   shape ``(1, 1, S, S)``, **True = masked** (the opposite of
   ``scaled_dot_product_attention``'s convention).
7. **Gathering vocabulary-split logits.** ``GPTModel(parallel_output=False)``
   gathers them through ``_gather_along_last_dim``, which calls
   ``torch.cuda.current_device()``. :func:`gather_vocab_parallel_logits` does the
   same with ``torch.distributed.all_gather`` on the tensor-parallel group.
8. **Data parallelism.** megatron-core's ``DistributedDataParallel`` allocates
   its gradient buffer on CUDA; :mod:`mimo_lib.parallel` uses torch's
   ``DistributedDataParallel`` over Megatron's data-parallel group instead
   (on GPUs too, so both machines run the same code).

Adaptations 2 and 5 are applied only when CUDA is absent (:func:`on_cpu`); with
a GPU, Megatron runs exactly as upstream intends. 1, 4 and 6 are harmless on a
GPU (:func:`mimo_lib.parallel.init_parallel` picks NCCL there and skips the CPU
buffer); 3, 7 and 8 are plain ``torch.distributed`` code that works on both.

What does *not* work on a CPU without Transformer Engine or Apex:
``sequence_parallel=True`` (torch's LayerNorm refuses it) and the fused kernels
(``bias_activation_fusion``, ``masked_softmax_fusion``, ``apply_rope_fusion``;
all off here). ``RMSNorm`` is fine: the local spec builds ``torch.nn.RMSNorm``.

**State-dict keys.** :class:`mimo_lib.language_model.GPTLanguageModel` uses
Megatron's parameter names, so the mapping between the two state dicts is the
identity on every parameter. The one difference: each of Megatron's parallel
linears (``linear_qkv``, ``linear_proj``, ``linear_fc1``, ``linear_fc2``,
``output_layer``) also stores an ``_extra_state`` entry (``None`` here; Transformer
Engine keeps FP8 scales there). So:

=========================================================  ===========================================
ours                                                        megatron-core
=========================================================  ===========================================
every parameter key                                         the same key
(nothing)                                                   ``<parallel linear>._extra_state`` = None
=========================================================  ===========================================

Tensor parallelism splits these matrices across ranks; the table is for the full
(TP=1) state dict.
"""

from __future__ import annotations

import functools
import operator
import os
import socket

import torch
import torch.nn.functional as F

from mimo_lib.config import LanguageModelConfig

try:
    from megatron.core import parallel_state
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.utils import GlobalMemoryBuffer
except ImportError as error:  # pragma: no cover - megatron-core is a dependency, but keep the message clear
    raise ImportError(
        f"mimo_lib.megatron_compat needs megatron-core (pip install 'megatron-core>=0.16'): {error}"
    ) from error

#: The modules that are Megatron parallel linears: each has an ``_extra_state`` entry in the state dict.
PARALLEL_LINEARS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2", "output_layer")
EXTRA_STATE = "._extra_state"


# ----------------------------------------------------------------------------- the CPU adaptations


class CPUGlobalMemoryBuffer(GlobalMemoryBuffer):
    """``GlobalMemoryBuffer`` that allocates on the CPU (adaptation 4).

    Megatron reuses one flat buffer per ``(name, dtype)`` and returns a view of
    its first ``prod(shape)`` elements, growing it when a larger one is asked for.
    """

    def get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):
        needed = functools.reduce(operator.mul, tensor_shape, 1)
        key = (name, dtype)
        if key not in self.buffer or self.buffer[key] is None or self.buffer[key].numel() < needed:
            self.buffer[key] = torch.empty(needed, dtype=dtype, device="cpu", requires_grad=False)
        return self.buffer[key][:needed].view(*tensor_shape)


class CPURotaryEmbedding(RotaryEmbedding):
    """``RotaryEmbedding`` whose angles stay on the CPU (adaptation 5).

    ``get_emb`` returns the angles of positions ``offset .. offset + S - 1`` as
    ``(S, 1, 1, head_dim)``: the ``head_dim / 2`` frequencies laid out twice,
    ``[f_0 .. f_{n-1}, f_0 .. f_{n-1}]`` (non-interleaved, Megatron's default).
    """

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        if self.rotary_interleaved:
            raise NotImplementedError("CPURotaryEmbedding implements the default rotary_interleaved=False only")
        freqs = self.get_freqs_non_repeated(max_seq_len, offset)  # (S, hd/2), on the CPU
        angles = torch.cat([freqs, freqs], dim=-1)  # (S, hd)
        return angles[:, None, None, :]  # (S, 1, 1, hd)


def _free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_cpu_memory_buffer() -> None:
    """Give ``parallel_state`` a :class:`CPUGlobalMemoryBuffer` (adaptation 4); does nothing with CUDA."""
    # Megatron keeps its buffer in a module-level global; there is no public setter.
    if on_cpu() and not isinstance(parallel_state._GLOBAL_MEMORY_BUFFER, CPUGlobalMemoryBuffer):
        parallel_state._GLOBAL_MEMORY_BUFFER = CPUGlobalMemoryBuffer()


def init_megatron_cpu(tensor_model_parallel_size: int = 1, seed: int = 0) -> None:
    """Set up ``torch.distributed`` and megatron-core's parallel state on the CPU (adaptations 1, 3, 4).

    Safe to call twice. In a plain Python process this makes a gloo group of one
    process; under ``torchrun`` (``WORLD_SIZE`` is set) it joins torchrun's group.
    """
    if not torch.distributed.is_initialized():
        if "WORLD_SIZE" in os.environ:  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
            torch.distributed.init_process_group("gloo")
        else:
            torch.distributed.init_process_group(
                "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
            )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_model_parallel_size)
    install_cpu_memory_buffer()
    seed_megatron_cpu(seed)


def seed_megatron_cpu(seed: int) -> None:
    """Seed torch and Megatron's RNG tracker in the way that works without CUDA (adaptation 3)."""
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed, inference_rng_tracker=True)


def destroy_megatron_cpu() -> None:
    """Undo :func:`init_megatron_cpu`."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def causal_attention_mask(seq_len: int) -> torch.Tensor:
    """Megatron's causal mask on the CPU: ``(1, 1, S, S)`` bool, **True = masked** (adaptation 6)."""
    return torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool).triu(diagonal=1)


# ----------------------------------------------------------------------------- building the Megatron model


def on_cpu() -> bool:
    """True when the CPU adaptations apply: there is no CUDA device. With CUDA nothing here changes Megatron."""
    return not torch.cuda.is_available()


def megatron_transformer_config(
    config: LanguageModelConfig, params_dtype: torch.dtype = torch.float32
) -> TransformerConfig:
    """The ``TransformerConfig`` that matches ``config`` field by field (see ``LanguageModelConfig``).

    ``params_dtype`` is the dtype Megatron creates its weights in (``torch.bfloat16`` on GPUs for speed).
    """
    swiglu = config.activation == "swiglu"
    tp_size = (
        parallel_state.get_tensor_model_parallel_world_size() if parallel_state.model_parallel_is_initialized() else 1
    )
    return TransformerConfig(
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        ffn_hidden_size=config.ffn_hidden_size,
        normalization=config.normalization,
        layernorm_epsilon=config.layernorm_epsilon,
        gated_linear_unit=swiglu,
        activation_func=F.silu if swiglu else F.gelu,
        add_bias_linear=config.add_bias_linear,
        hidden_dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
        init_method_std=config.init_method_std,
        tensor_model_parallel_size=tp_size,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        # adaptation 2 (CPU only): on a GPU Megatron initialises each shard on the device, as usual
        use_cpu_initialization=on_cpu(),
        bias_activation_fusion=False,  # fused kernels need a GPU; also, the fused gelu is the tanh approximation
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
    )


def build_megatron_gpt(
    config: LanguageModelConfig, parallel_output: bool = True, params_dtype: torch.dtype = torch.float32
) -> GPTModel:
    """megatron-core's ``GPTModel`` with the local layer spec, shaped like ``GPTLanguageModel(config)``.

    Call :func:`init_megatron_cpu` (or :func:`mimo_lib.parallel.init_parallel`) first.
    ``parallel_output=False`` gathers the vocabulary-split logits of tensor
    parallelism into full rows — on the CPU that gather calls
    ``torch.cuda.current_device()`` and fails at TP > 1: keep ``True`` there and
    use :func:`gather_vocab_parallel_logits`.
    """
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("call init_megatron_cpu() before build_megatron_gpt()")
    model = GPTModel(
        config=megatron_transformer_config(config, params_dtype),
        transformer_layer_spec=get_gpt_layer_local_spec(normalization=config.normalization),
        vocab_size=config.padded_vocab_size,  # Megatron's embedding table already includes the padding rows
        max_sequence_length=config.max_sequence_length,
        position_embedding_type=config.position_embedding_type,
        rotary_base=config.rotary_base,
        share_embeddings_and_output_weights=config.share_embeddings_and_output_weights,
        parallel_output=parallel_output,
    )
    if config.position_embedding_type == "rope" and on_cpu():  # adaptation 5
        model.rotary_pos_emb = CPURotaryEmbedding(
            kv_channels=config.head_dim,
            rotary_percent=1.0,
            rotary_base=config.rotary_base,
            use_cpu_initialization=True,
        )
    return model


class _GatherVocabParallel(torch.autograd.Function):
    """All-gather the last dimension over the tensor-parallel group; backward keeps this rank's slice.

    Megatron's ``_GatherFromModelParallelRegion`` does the same, but calls
    ``torch.cuda.current_device()`` on the way (adaptation 7). The backward is
    right when every rank computes the same thing from the gathered tensor, as
    with replicated code after a gather.
    """

    @staticmethod
    def forward(ctx, shard: torch.Tensor) -> torch.Tensor:
        group = parallel_state.get_tensor_model_parallel_group()
        size = torch.distributed.get_world_size(group)
        ctx.rank, ctx.width = torch.distributed.get_rank(group), shard.shape[-1]
        parts = [torch.empty_like(shard) for _ in range(size)]
        torch.distributed.all_gather(parts, shard.contiguous(), group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[..., ctx.rank * ctx.width : (ctx.rank + 1) * ctx.width].contiguous()


def gather_vocab_parallel_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(..., V / TP)`` vocabulary-split logits -> ``(..., V)`` full rows on every rank (identity at TP=1)."""
    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return logits
    return _GatherVocabParallel.apply(logits)


def megatron_logits(model: GPTModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Run Megatron's ``GPTModel`` on ``(B, S)`` ids with positions ``0 .. S-1``: ``(B, S, V)`` logits.

    Megatron works sequence-first internally but returns batch-first logits.
    """
    batch, seq_len = input_ids.shape
    position_ids = torch.arange(seq_len).expand(batch, seq_len)  # (B, S)
    return model(input_ids, position_ids, causal_attention_mask(seq_len))  # (B, S, V)


# ----------------------------------------------------------------------------- state dicts


def to_megatron_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """Our state dict -> one ``GPTModel.load_state_dict(..., strict=True)`` accepts (TP=1).

    Parameter keys are kept as they are; an ``_extra_state`` entry (``None``) is
    added for every parallel linear, including ``output_layer`` when the output
    weights are tied (Megatron keeps the module, without a weight).
    """
    result: dict[str, torch.Tensor | None] = dict(state_dict)
    for key in state_dict:
        module = key.rsplit(".", 1)[0]
        if module.rsplit(".", 1)[-1] in PARALLEL_LINEARS:
            result[module + EXTRA_STATE] = None
    result["output_layer" + EXTRA_STATE] = None
    return result


def from_megatron_state_dict(state_dict: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """A (TP=1) ``GPTModel`` state dict -> ours: the same keys without the ``_extra_state`` entries."""
    result = {}
    for key, value in state_dict.items():
        if key.endswith(EXTRA_STATE):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"Megatron state dict entry {key!r} is not a tensor ({type(value).__name__})")
        result[key] = value
    return result
