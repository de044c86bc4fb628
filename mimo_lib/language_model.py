"""A GPT decoder that maps one-to-one onto megatron-core's ``GPTModel`` (local layer spec).

The language model is the part of MIMO that reads the combined sequence — text
embeddings with video and audio embeddings scattered in — and predicts the next
text token. It is a plain pre-norm GPT, written so that every module and every
parameter has the name megatron-core gives it. The scale-out chapter copies a
state dict between the two *without renaming a single key*::

    embedding.word_embeddings.weight                         (padded_vocab_size, D)
    embedding.position_embeddings.weight                     (max_sequence_length, D)   learned_absolute only
    decoder.layers.{i}.input_layernorm.weight / .bias        (D,)          .bias: LayerNorm only
    decoder.layers.{i}.self_attention.linear_qkv.weight      (3 D, D)      fused q, k, v (layout below)
    decoder.layers.{i}.self_attention.linear_qkv.bias        (3 D,)        add_bias_linear only
    decoder.layers.{i}.self_attention.linear_proj.weight     (D, D)
    decoder.layers.{i}.self_attention.linear_proj.bias       (D,)          add_bias_linear only
    decoder.layers.{i}.pre_mlp_layernorm.weight / .bias      (D,)          .bias: LayerNorm only
    decoder.layers.{i}.mlp.linear_fc1.weight                 (F, D) for gelu, (2 F, D) for swiglu: [gate; up]
    decoder.layers.{i}.mlp.linear_fc1.bias                   (F,) or (2 F,) add_bias_linear only
    decoder.layers.{i}.mlp.linear_fc2.weight                 (D, F)
    decoder.layers.{i}.mlp.linear_fc2.bias                   (D,)          add_bias_linear only
    decoder.final_layernorm.weight / .bias                   (D,)          .bias: LayerNorm only
    output_layer.weight                                      (padded_vocab_size, D)     absent when tied

How each piece matches megatron-core 0.16.1 (read from its source):

* **Fused QKV layout.** ``linear_qkv`` produces ``3 D`` features. Megatron views
  them as ``(heads, 3 * head_dim)``: for each head, its query rows, then its key
  rows, then its value rows (``SelfAttention.get_query_key_value_tensors`` with
  one query group per head). So rows ``[h*3*hd, h*3*hd + hd)`` are head ``h``'s
  query — *not* "all queries, then all keys, then all values" as in many other
  codebases.
* **RoPE.** Megatron's default ``rotary_interleaved=False``: the frequencies
  ``base ** (-2i / head_dim)`` for ``i < head_dim / 2`` are laid out twice,
  ``[f_0 .. f_{n-1}, f_0 .. f_{n-1}]``, and applied as
  ``x * cos + rotate_half(x) * sin`` with ``rotate_half([x1, x2]) = [-x2, x1]``
  over the whole head dimension (``rotary_percent=1.0``), to queries and keys
  after the QKV split. Cached keys are stored already rotated.
* **Attention.** softmax scale ``1 / sqrt(head_dim)``, causal.
* **MLP.** gelu is the exact (erf) ``F.gelu``. For swiglu (``gated_linear_unit``
  + silu) ``linear_fc1`` holds ``[gate; up]``: Megatron does
  ``gate, up = torch.chunk(fc1(x), 2, dim=-1)`` then ``silu(gate) * up``.
* **Biases and norms.** ``add_bias_linear`` switches the bias of all four
  linears in a layer (qkv, proj, fc1, fc2). ``output_layer`` never has a bias.
  The norms are ``torch.nn.LayerNorm`` (weight and bias, whatever
  ``add_bias_linear`` says) or ``torch.nn.RMSNorm`` (weight only), which is what
  the local spec's ``WrappedTorchNorm`` builds.
* **Vocabulary padding.** The embedding table and the logits have
  ``padded_vocab_size`` rows/columns (``vocab_size`` rounded up to a multiple of
  ``make_vocab_size_divisible_by``). The extra ids are never real tokens:
  :func:`generate` sets their logits to ``-inf`` so they are never produced.

Differences from megatron-core, on purpose:

* Tensors are batch-first ``(B, S, D)``; Megatron's are sequence-first ``(S, B, D)``.
* RoPE angles come from ``position_ids`` (so left-padded prompts and a KV cache
  get the right positions); Megatron's training path uses ``0 .. S-1``. The two
  agree for the default ``position_ids``.
* With ``decoder_input`` and ``learned_absolute`` positions we still add the
  position embeddings (so video and audio positions get positions too);
  ``GPTModel(decoder_input=...)`` adds nothing, and Megatron's MIMO adds them at
  text positions only. With ``rope`` (the default) there is no difference.
* A query at a padding position attends to itself (see
  :func:`attention_mask_for`) so no softmax row is empty; Megatron has no
  padding mask in its GPT path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimo_lib.config import LanguageModelConfig
from mimo_lib.constants import IGNORE_INDEX

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer ``(k, v)``, each ``(B, heads, S_total, head_dim)``; keys are stored already rotated by RoPE."""


# ----------------------------------------------------------------------------- building blocks


def make_norm(config: LanguageModelConfig) -> nn.Module:
    """``torch.nn.LayerNorm`` or ``torch.nn.RMSNorm`` over the hidden size, as Megatron's ``WrappedTorchNorm``."""
    if config.normalization == "LayerNorm":
        return nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
    return nn.RMSNorm(config.hidden_size, eps=config.layernorm_epsilon)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the RoPE angles, laid out as Megatron's non-interleaved ``RotaryEmbedding``.

    Args:
        position_ids: ``(B, S)`` integer positions.
        head_dim: size of one attention head (even).
        base: ``rotary_base``.
    Returns:
        ``cos, sin``, each ``(B, 1, S, head_dim)`` in float32, ready to broadcast over heads.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    device = position_ids.device
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))  # (hd/2,)
    angles = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, S, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, S, hd): [f_0..f_{n-1}, f_0..f_{n-1}]
    return angles.cos()[:, None], angles.sin()[:, None]  # (B, 1, S, hd) each


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (each half is ``head_dim / 2`` wide)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` ``(B, H, S, hd)`` by the angles in ``cos, sin`` ``(B, 1, S, hd)``."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # Megatron casts the angles to the activation dtype too
    return x * cos + rotate_half(x) * sin


def attention_mask_for(attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """The boolean mask for ``scaled_dot_product_attention``: True where a query may look at a key.

    A query may look at a key if the key is not in its future (causal) and the key
    is a real token (``attention_mask``). The queries are the last ``query_length``
    positions (earlier ones sit in the KV cache). A query at a left-padding
    position would then see no key at all, and an all-masked softmax row is NaN,
    which can leak into real positions through later layers; so every query also
    sees itself. Real queries are unaffected: they are real keys anyway.

    Args:
        attention_mask: ``(B, S_total)`` bool, True = real token.
        query_length: ``S``, the number of new positions (``S <= S_total``).
    Returns:
        ``(B, 1, S, S_total)`` bool.
    """
    batch, total = attention_mask.shape
    past = total - query_length
    device = attention_mask.device
    query_index = torch.arange(past, total, device=device)[:, None]  # (S, 1) absolute positions of the queries
    key_index = torch.arange(total, device=device)[None, :]  # (1, S_total)
    causal = key_index <= query_index  # (S, S_total)
    is_self = key_index == query_index  # (S, S_total)
    allowed = causal[None] & (attention_mask[:, None, :] | is_self[None])  # (B, S, S_total)
    return allowed[:, None]  # (B, 1, S, S_total)


def check_token_ids(input_ids: torch.Tensor, vocab: int) -> None:
    """Token ids must be ``torch.long`` and inside the padded vocabulary ``[0, vocab)`` (every backend's rule)."""
    if input_ids.dtype != torch.long:
        raise TypeError(f"input_ids must be torch.long, got {input_ids.dtype}")
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
        raise ValueError(
            f"input_ids must lie in [0, {vocab}) (padded vocabulary); got values from "
            f"{input_ids.min().item()} to {input_ids.max().item()}"
        )


class Embedding(nn.Module):
    """Megatron's ``LanguageModelEmbedding``: word embeddings, plus learned positions if asked."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.position_embeddings = None
        if config.position_embedding_type == "learned_absolute":
            self.position_embeddings = nn.Embedding(config.max_sequence_length, config.hidden_size)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with Megatron's fused QKV layout, RoPE and a KV cache."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.use_rope = config.position_embedding_type == "rope"
        self.rotary_base = config.rotary_base
        self.attention_dropout = config.attention_dropout
        d = config.hidden_size
        self.linear_qkv = nn.Linear(d, 3 * d, bias=config.add_bias_linear)
        self.linear_proj = nn.Linear(d, d, bias=config.add_bias_linear)

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend over the cached and the new positions.

        Args:
            x: ``(B, S, D)`` normalised hidden states of the new positions.
            position_ids: ``(B, S)``, used for RoPE.
            mask: ``(B, 1, S, S_total)`` bool from :func:`attention_mask_for`.
            past: cached ``(k, v)``, each ``(B, H, S_past, hd)``, or None.
        Returns:
            ``(B, S, D)`` output, and the ``(k, v)`` of all ``S_total`` positions.
        """
        B, S, D = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = self.linear_qkv(x)  # (B, S, 3D)
        # Megatron's layout: per head, [q rows; k rows; v rows], hd rows each
        qkv = qkv.view(B, S, H, 3 * hd)  # (B, S, H, 3hd)
        q, k, v = qkv.split(hd, dim=-1)  # (B, S, H, hd) each
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, S, hd) each
        if self.use_rope:
            cos, sin = rope_cos_sin(position_ids, hd, self.rotary_base)  # (B, 1, S, hd)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, S_total, hd)
            v = torch.cat([past[1], v], dim=2)
        if mask.shape != (B, 1, S, k.shape[2]):
            raise ValueError(f"attention mask has shape {tuple(mask.shape)}, expected {(B, 1, S, k.shape[2])}")
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, S, hd)
        y = y.transpose(1, 2).reshape(B, S, D)  # (B, S, D): heads side by side, as Megatron's context
        return self.linear_proj(y), (k, v)


class MLP(nn.Module):
    """``linear_fc1`` -> gelu or swiglu -> ``linear_fc2``."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.gated = config.activation == "swiglu"
        fc1_out = 2 * config.ffn_hidden_size if self.gated else config.ffn_hidden_size
        self.linear_fc1 = nn.Linear(config.hidden_size, fc1_out, bias=config.add_bias_linear)
        self.linear_fc2 = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.add_bias_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_fc1(x)  # (B, S, F) or (B, S, 2F)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)  # (B, S, F) each: fc1 rows are [gate; up], as Megatron's glu
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)  # exact (erf) gelu, Megatron's default activation_func
        return self.linear_fc2(h)  # (B, S, D)


class TransformerLayer(nn.Module):
    """One pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.input_layernorm = make_norm(config)
        self.self_attention = SelfAttention(config)
        self.pre_mlp_layernorm = make_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn, kv = self.self_attention(self.input_layernorm(x), position_ids, mask, past)
        x = x + self.dropout(attn)  # (B, S, D)
        x = x + self.dropout(self.mlp(self.pre_mlp_layernorm(x)))  # (B, S, D)
        return x, kv


class TransformerBlock(nn.Module):
    """Megatron's ``decoder``: the layers, then ``final_layernorm``."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(config) for _ in range(config.num_layers)])
        self.final_layernorm = make_norm(config)


# ----------------------------------------------------------------------------- argument checks
# Every check here guards the caller's code, not the user's data (which combine_multimodal_inputs and the
# dataset check first), so they raise plain ValueError / TypeError: a wrong call is a bug with a traceback.


def check_inputs(
    config: LanguageModelConfig,
    input_ids: torch.Tensor | None,
    decoder_input: torch.Tensor | None,
    past_key_values: KVCache | None,
) -> None:
    """Exactly one of ``input_ids`` ``(B, S)`` and ``decoder_input`` ``(B, S, D)``; a cache with one entry per layer."""
    if (input_ids is None) == (decoder_input is None):
        raise ValueError("give exactly one of input_ids (B, S) and decoder_input (B, S, D)")
    if input_ids is not None and input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, S), got shape {tuple(input_ids.shape)}")
    if decoder_input is not None and (decoder_input.dim() != 3 or decoder_input.shape[-1] != config.hidden_size):
        raise ValueError(
            f"decoder_input must be (B, S, {config.hidden_size}), got shape {tuple(decoder_input.shape)}"
        )
    if past_key_values is not None and len(past_key_values) != config.num_layers:
        raise ValueError(f"past_key_values has {len(past_key_values)} layers, the model {config.num_layers}")


def check_positions_masks_labels(
    config: LanguageModelConfig,
    B: int,
    S: int,
    total: int,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    learned_positions: bool,
) -> None:
    """``position_ids`` ``(B, S)`` (inside the table if learned), mask ``(B, S_total)`` bool, labels ``(B, S)``."""
    if position_ids.shape != (B, S):
        raise ValueError(f"position_ids must be (B, S) = {(B, S)}, got shape {tuple(position_ids.shape)}")
    if attention_mask.shape != (B, total):
        raise ValueError(
            f"attention_mask must be (B, S_past + S) = {(B, total)} (cached and new positions), "
            f"got shape {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool:
        raise TypeError(f"attention_mask must be torch.bool (True = real token), got {attention_mask.dtype}")
    if learned_positions and position_ids.numel():
        low, high = position_ids.min().item(), position_ids.max().item()
        if low < 0 or high >= config.max_sequence_length:
            raise ValueError(
                f"position_ids must lie in [0, max_sequence_length={config.max_sequence_length}) for learned "
                f"position embeddings; got values from {low} to {high}"
            )
    if labels is not None and labels.shape != (B, S):
        raise ValueError(f"labels must be (B, S) = {(B, S)}, got shape {tuple(labels.shape)}")


def check_generate_arguments(
    config: LanguageModelConfig,
    decoder_input: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    eos_token_id: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
) -> None:
    """Left-padded ``(B, S, D)`` prompts with a ``(B, S)`` bool mask and positions; eos, temperature, top_k in range."""
    vocab_size = config.vocab_size
    if decoder_input.dim() != 3:
        raise ValueError(f"decoder_input must be (B, S, D), got shape {tuple(decoder_input.shape)}")
    B, S = decoder_input.shape[:2]
    if attention_mask.shape != (B, S) or attention_mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be a (B, S) = {(B, S)} bool tensor, got {attention_mask.dtype} "
            f"{tuple(attention_mask.shape)}"
        )
    if position_ids.shape != (B, S):
        raise ValueError(f"position_ids must be (B, S) = {(B, S)}, got shape {tuple(position_ids.shape)}")
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be LEFT-padded: the last position of every row must be a real token")
    if not 0 <= eos_token_id < vocab_size:
        raise ValueError(f"eos_token_id {eos_token_id} is not in the vocabulary [0, {vocab_size})")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be in [1, vocab_size={vocab_size}], got {top_k}")


# ----------------------------------------------------------------------------- the model


@dataclass
class LanguageModelOutput:
    """What :meth:`GPTLanguageModel.forward` returns."""

    logits: torch.Tensor  # (B, S, padded_vocab_size)
    loss: torch.Tensor | None  # mean next-token cross-entropy over labels != ignore_index, or None without labels
    past_key_values: KVCache | None  # per layer (k, v), each (B, heads, S_total, head_dim); None unless use_cache


class GPTLanguageModel(nn.Module):
    """A GPT decoder with megatron-core ``GPTModel``'s structure and parameter names.

    Weight init is Megatron's: every linear and embedding weight is
    ``normal(0, init_method_std)``, except the two projections that write into
    the residual stream (``linear_proj`` and ``linear_fc2``), whose std is divided
    by ``sqrt(2 * num_layers)`` so the residual stream does not grow with depth
    (GPT-2's trick; Megatron's ``output_layer_init_method``). Biases are zero,
    norm weights one.
    """

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.decoder = TransformerBlock(config)
        self.output_layer = None
        if not config.share_embeddings_and_output_weights:
            self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Megatron's initialisation (see the class docstring)."""
        std = self.config.init_method_std
        scaled_std = std / math.sqrt(2.0 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_output = name.endswith(("linear_proj", "linear_fc2"))
                nn.init.normal_(module.weight, mean=0.0, std=scaled_std if is_residual_output else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def output_weight(self) -> torch.Tensor:
        """The ``(padded_vocab_size, D)`` matrix that turns hidden states into logits."""
        if self.output_layer is None:  # tied: share_embeddings_and_output_weights
            return self.embedding.word_embeddings.weight
        return self.output_layer.weight

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings only (no positions, no dropout): ``(B, L)`` ids -> ``(B, L, D)``.

        The multimodal model embeds its text with this, scatters the video and
        audio embeddings in, and passes the result as ``decoder_input``.
        """
        check_token_ids(input_ids, self.config.padded_vocab_size)
        return self.embedding.word_embeddings(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        decoder_input: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> LanguageModelOutput:
        """Logits for every position, and optionally the loss and a KV cache.

        After checking the arguments: the inputs become hidden states (word embeddings, plus learned
        positions if any), run through the decoder layers (extending the cache), are normalised and
        turned into logits; with labels, the next-token loss.

        Args:
            input_ids: ``(B, S)`` token ids. Give exactly one of ``input_ids`` and ``decoder_input``.
            decoder_input: ``(B, S, D)`` already-embedded inputs (what the multimodal model passes).
            position_ids: ``(B, S)`` long; default ``0 .. S-1`` offset by the cache length.
                Used for RoPE, and for the position embeddings when ``learned_absolute``.
            attention_mask: ``(B, S_total)`` bool, True = real token, over the cached *and* the
                new positions (``S_total = S_past + S``); default all True. Attention is causal
                and never looks at a padding key.
            labels: ``(B, S)`` long, *not* shifted: as in Hugging Face, the model shifts them, so
                ``logits[:, t]`` is scored against ``labels[:, t + 1]``. Positions whose label is
                ``ignore_index`` do not count; the loss is the mean over the rest (0 if none).
            past_key_values: the cache a previous call returned (``use_cache=True``), or None.
            use_cache: return the keys and values of all positions for the next call.
            ignore_index: the label value to skip.
        Returns:
            :class:`LanguageModelOutput`.
        """
        # ---- check the arguments, fill in the defaults
        check_inputs(self.config, input_ids, decoder_input, past_key_values)
        x = self.embed_tokens(input_ids) if input_ids is not None else decoder_input  # (B, S, D)
        B, S, _ = x.shape
        num_past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        total = num_past + S
        if position_ids is None:
            position_ids = torch.arange(num_past, total, device=x.device).expand(B, S)  # (B, S)
        if attention_mask is None:
            attention_mask = torch.ones(B, total, dtype=torch.bool, device=x.device)  # (B, S_total)
        learned_positions = self.embedding.position_embeddings is not None
        check_positions_masks_labels(self.config, B, S, total, position_ids, attention_mask, labels, learned_positions)

        # ---- inputs -> hidden states (B, S, D)
        if learned_positions:
            x = x + self.embedding.position_embeddings(position_ids)  # (B, S, D)
        x = self.embedding_dropout(x)

        # ---- the decoder
        mask = attention_mask_for(attention_mask, S)  # (B, 1, S, S_total)
        new_cache: KVCache = []
        for i, layer in enumerate(self.decoder.layers):
            past = past_key_values[i] if past_key_values is not None else None
            x, kv = layer(x, position_ids, mask, past)  # (B, S, D)
            new_cache.append(kv)
        x = self.decoder.final_layernorm(x)  # (B, S, D)
        logits = F.linear(x, self.output_weight())  # (B, S, padded_vocab_size)

        # ---- next-token loss
        loss = None if labels is None else next_token_loss(logits, labels, ignore_index)
        return LanguageModelOutput(logits=logits, loss=loss, past_key_values=new_cache if use_cache else None)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]``, skipping ``ignore_index``.

    Computed in float32. If every label is ``ignore_index`` the loss is 0 (not
    NaN), still connected to the graph so ``backward()`` works.
    """
    shifted_logits = logits[:, :-1].float()  # (B, S-1, V)
    shifted_labels = labels[:, 1:]  # (B, S-1)
    total = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
    )
    count = (shifted_labels != ignore_index).sum()
    return total / count.clamp(min=1)


def language_model_num_parameters(config: LanguageModelConfig) -> int:
    """The parameter count of ``GPTLanguageModel(config)``, in closed form (nothing is built).

    With ``D`` hidden, ``F`` ffn, ``L`` layers, ``V`` padded vocabulary:

    * embeddings: ``V D`` (+ ``max_sequence_length * D`` for learned positions)
    * per layer: attention ``3 D^2 + D^2`` (+ ``3 D + D`` biases), MLP ``D F + F D`` for gelu
      or ``2 D F + F D`` for swiglu (+ ``F + D`` or ``2 F + D`` biases), two norms of
      ``D`` (LayerNorm: ``2 D``) each
    * final norm, and an output layer ``V D`` unless tied to the word embeddings.
    """
    d, f, v = config.hidden_size, config.ffn_hidden_size, config.padded_vocab_size
    bias = config.add_bias_linear
    norm = 2 * d if config.normalization == "LayerNorm" else d
    fc1_out = 2 * f if config.activation == "swiglu" else f

    attention = (d * 3 * d + (3 * d if bias else 0)) + (d * d + (d if bias else 0))
    mlp = (d * fc1_out + (fc1_out if bias else 0)) + (f * d + (d if bias else 0))
    per_layer = norm + attention + norm + mlp

    total = v * d + config.num_layers * per_layer + norm
    if config.position_embedding_type == "learned_absolute":
        total += config.max_sequence_length * d
    if not config.share_embeddings_and_output_weights:
        total += v * d
    return total


# ----------------------------------------------------------------------------- generation


def make_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: ``(B, S)`` bool -> ``(B, S)`` long.

    For a left-padded row ``[pad, pad, a, b]`` this gives ``[0, 0, 0, 1]``, so the
    prompt gets the same positions it would have alone. Padding positions get 0.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _choose_tokens(
    logits: torch.Tensor,
    vocab_size: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick one token per row from ``(B, padded_vocab_size)`` logits; never a padding id."""
    logits = logits.float().clone()  # (B, V)
    logits[:, vocab_size:] = float("-inf")  # ids >= vocab_size only pad the table: never emit them
    if not do_sample:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits / temperature
    if top_k is not None:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


class DecodingConstraint:
    """What each row of a batch may produce next, for :func:`generate`'s ``constraint``.

    ``allowed(vocab)`` returns a ``(B, vocab)`` bool mask (True: may be chosen) for the next step;
    ``update(token)`` is told the ``(B,)`` tokens chosen, so the next mask can depend on them. A row's
    mask must allow at least one id below the model's ``vocab_size``.
    """

    def allowed(self, vocab: int) -> torch.Tensor:
        raise NotImplementedError

    def update(self, token: torch.Tensor) -> None:
        raise NotImplementedError


@torch.no_grad()
def generate(
    model: GPTLanguageModel,
    decoder_input: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    constraint: DecodingConstraint | None = None,
) -> torch.Tensor:
    """Continue each prompt greedily or by sampling; returns ``(B, max_new_tokens)`` token ids.

    After checking the arguments: run the whole prompt once (prefill), then each step choose one
    token per row (a finished row repeats ``eos_token_id``), stop once every row is done, and feed
    the new tokens back (one position against the KV cache, or the whole sequence again without).

    Args:
        model: the language model (run in eval mode here; its mode is restored after).
        decoder_input: ``(B, S, D)`` embedded prompts, LEFT-padded so that every row's
            last position is a real token.
        attention_mask: ``(B, S)`` bool, True = real token (False at the padded start).
        position_ids: ``(B, S)`` long, e.g. :func:`make_position_ids`, or time-aware ids
            (:mod:`mimo_lib.combine`). Each new token gets its row's largest position + 1
            (Qwen2.5-Omni's rule; for counting ids the largest is the last).
        max_new_tokens: how many tokens to produce.
        eos_token_id: once a row emits it, the row is done and keeps emitting it.
        do_sample: sample (True) or take the most likely token (False).
        temperature: logits are divided by this before sampling.
        top_k: sample among the ``top_k`` most likely tokens only.
        generator: the random generator for sampling (same seed -> same tokens).
        use_cache: keep a KV cache and feed one new token per step (fast); False
            recomputes the whole sequence every step (the reference the cache is tested against).
        constraint: rules on what each row may produce next (a :class:`DecodingConstraint`, e.g.
            :class:`mimo_lib.audio_output.AudioSpanConstraint`); ids it forbids get ``-inf`` before the choice.
    Returns:
        ``(B, max_new_tokens)`` long. The result always has ``max_new_tokens`` columns:
        generation stops as soon as every row is done, and the remaining columns are
        filled with ``eos_token_id``. Ids ``>= vocab_size`` (vocabulary padding) are
        never produced.
    """
    check_generate_arguments(
        model.config, decoder_input, attention_mask, position_ids, eos_token_id, do_sample, temperature, top_k
    )
    vocab_size = model.config.vocab_size
    B = decoder_input.shape[0]

    was_training = model.training
    model.eval()
    try:
        out = torch.full((B, max_new_tokens), eos_token_id, dtype=torch.long, device=decoder_input.device)
        done = torch.zeros(B, dtype=torch.bool, device=decoder_input.device)
        next_position = position_ids.masked_fill(~attention_mask, 0).max(dim=1).values  # (B,) largest id of each prompt

        # the sequence so far, for the no-cache path
        inputs, mask, positions = decoder_input, attention_mask, position_ids
        # prefill: the whole prompt
        result = model(decoder_input=inputs, attention_mask=mask, position_ids=positions, use_cache=use_cache)
        for step in range(max_new_tokens):
            logits = result.logits[:, -1]  # (B, V)
            if constraint is not None:  # ids a row may not produce now can never be chosen
                logits = logits.float().masked_fill(~constraint.allowed(logits.shape[-1]), float("-inf"))
            token = _choose_tokens(logits, vocab_size, do_sample, temperature, top_k, generator)
            token = torch.where(done, torch.full_like(token, eos_token_id), token)  # (B,) finished rows: eos
            out[:, step] = token
            if constraint is not None:
                constraint.update(token)
            done = done | (token == eos_token_id)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            # feed the new token back
            new_embedding = model.embed_tokens(token[:, None])  # (B, 1, D)
            next_position = next_position + 1
            new_mask = torch.ones(B, 1, dtype=torch.bool, device=mask.device)
            mask = torch.cat([mask, new_mask], dim=1)  # (B, S_total + 1)
            if use_cache:
                result = model(
                    decoder_input=new_embedding,
                    attention_mask=mask,
                    position_ids=next_position[:, None],
                    past_key_values=result.past_key_values,
                    use_cache=True,
                )
            else:
                inputs = torch.cat([inputs, new_embedding], dim=1)  # (B, S_total + 1, D)
                positions = torch.cat([positions, next_position[:, None]], dim=1)
                result = model(decoder_input=inputs, attention_mask=mask, position_ids=positions)
        return out
    finally:
        model.train(was_training)
