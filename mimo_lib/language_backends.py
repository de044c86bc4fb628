"""One seam for the language model: the book's own GPT (``local``) or megatron-core's ``GPTModel`` (``megatron``).

:class:`mimo_lib.model.MIMOModel` asks :func:`build_language_model` for its
decoder and relies on this contract only (what :class:`GPTLanguageModel` does):

* ``config`` — the :class:`LanguageModelConfig`;
* ``embed_tokens(input_ids (B, L)) -> (B, L, D)`` — word embeddings, nothing else;
* ``forward(decoder_input (B, S, D), position_ids (B, S), attention_mask (B, S)
  bool True = real token, labels (B, S) *unshifted* with ``ignore_index``)`` →
  an output with ``.logits`` ``(B, S, padded_vocab_size)`` and ``.loss``, the mean
  next-token cross-entropy over labels that are not ``ignore_index``;
* for generation, ``forward(..., past_key_values=..., use_cache=True)`` returns a
  ``.past_key_values`` to pass back with the next token.

Backend ``megatron`` is :class:`MegatronLanguageModel`, a thin adapter around
megatron-core's ``GPTModel`` (local layer spec: no Transformer Engine, no Apex)
that does every conversion between the two worlds in one place:

=============================  =================================  ====================================
                               this book                          megatron-core
=============================  =================================  ====================================
activations                    batch-first ``(B, S, D)``          sequence-first ``(S, B, D)``
labels                         unshifted, ``ignore_index``        shifted by one, ``loss_mask``
attention mask                 ``(B, S)`` True = real token       ``(B, 1, S, S)`` True = *masked*
logits at TP > 1               full rows ``(B, S, V)``            vocabulary-split ``(B, S, V / TP)``
KV cache for generation        per-layer keys and values          none here: recomputed (see below)
=============================  =================================  ====================================

Its parameters have the same names as ``GPTLanguageModel``'s (megatron-core's
own; Megatron's ``_extra_state`` entries are left out of ``state_dict()`` and
filled in on load), so at TP=1 a state dict moves between the backends as is;
at TP > 1 each rank holds its shard (:mod:`mimo_lib.tp_convert` cuts and glues,
:mod:`mimo_lib.parallel` gathers over processes).

**Generation without a KV cache.** Megatron's inference path needs its
``InferenceContext`` and CUDA kernels. The adapter's "cache" is the sequence
so far: each step runs the whole sequence again and returns the logits of the
new positions. Same answers as the local backend's cached generation, just
O(S^2) work per answer instead of O(S).

**Positions.** megatron-core's ``GPTModel`` asks its rotary module for the
angles of positions ``0 .. S-1``. The adapter answers with the angles of the
``position_ids`` it was given instead (:func:`rope_at`), one row per sample, so
left-padded generation and the time-aware ids of chapter 8
(``MIMOConfig.av_positions="time"``) rotate exactly as on the local backend.

:func:`build_megatron_mimo` goes one step further: megatron-core's own
``MimoModel`` built from this book's towers and projectors, to show that the
book's model *is* the engine's model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from mimo_lib.config import LanguageModelConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.language_model import GPTLanguageModel, LanguageModelOutput, attention_mask_for, check_token_ids

if TYPE_CHECKING:  # pragma: no cover
    from mimo_lib.model import MIMOModel

#: The language-model backends :func:`build_language_model` knows.
LANGUAGE_BACKENDS = ("local", "megatron")


class BackendError(MimoInputError):
    """An unknown backend, or a backend that cannot run here."""


def build_language_model(
    config: LanguageModelConfig, backend: str = "local", params_dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The decoder for ``backend``: ``"local"`` (:class:`GPTLanguageModel`) or ``"megatron"`` (:class:`MegatronLanguageModel`).

    The megatron backend uses megatron-core's parallel state; if nobody set it
    up yet (a notebook, a single process), a one-process TP=1 group is started
    here (:func:`mimo_lib.parallel.init_parallel`). ``params_dtype`` applies to
    the megatron backend (cast a local model with ``.to(dtype)``).
    """
    if backend == "local":
        return GPTLanguageModel(config)
    if backend == "megatron":
        from mimo_lib.parallel import check_megatron_core, ensure_parallel

        check_megatron_core()
        ensure_parallel()
        return MegatronLanguageModel(config, params_dtype=params_dtype)
    raise BackendError(f"unknown language-model backend {backend!r}; choose one of {LANGUAGE_BACKENDS}")


@dataclass
class RecomputeCache:
    """What :class:`MegatronLanguageModel` hands back as ``past_key_values``: the inputs so far, to run again."""

    inputs: torch.Tensor  # (B, S_past, D) decoder inputs, before position embeddings
    position_ids: torch.Tensor  # (B, S_past)


@contextmanager
def rope_at(rotary: nn.Module | None, position_ids: torch.Tensor):
    """Make megatron-core's ``RotaryEmbedding`` rotate each token by its own position id for one forward.

    ``GPTModel`` asks its rotary module for the angles of positions 0 .. S-1, shape ``(S, 1, 1, d)``, shared by
    every row. Here it answers with the angles of ``position_ids`` instead, ``(S, B, 1, d)`` (the shape
    megatron-core's multimodal RoPE uses, which its rotation broadcasts over the heads), so time-aware ids
    (chapter 8) and left padding rotate as on the local backend. With ``position_ids`` = 0 .. S-1 the angles
    are the ones ``RotaryEmbedding`` computes itself.
    """
    if rotary is None:  # learned absolute positions: nothing to rotate
        yield
        return
    freqs = position_ids.to(rotary.inv_freq.dtype)[..., None] * rotary.inv_freq  # (B, S, d/2)
    if getattr(rotary, "rotary_interleaved", False):
        angles = torch.stack([freqs, freqs], dim=-1).flatten(-2)  # (B, S, d): f0 f0 f1 f1 ...
    else:
        angles = torch.cat([freqs, freqs], dim=-1)  # (B, S, d): f0 f1 ... f0 f1 ...
    angles = angles.transpose(0, 1)[:, :, None, :]  # (S, B, 1, d)
    rotary.forward = lambda *args, **kwargs: angles  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        del rotary.forward


class MegatronLanguageModel(nn.Module):
    """megatron-core's ``GPTModel`` behind :class:`GPTLanguageModel`'s interface (see the module docstring).

    The ``GPTModel`` itself is kept out of the module tree, and its four
    children (``embedding``, ``rotary_pos_emb``, ``decoder``, ``output_layer``)
    are registered here directly, so parameter names carry no extra prefix.

    ``gather_output`` (default True): return full-vocabulary logits at TP > 1,
    gathered over the tensor-parallel group. Training needs only the loss, which
    is computed on the vocabulary-split logits; set it to False to skip the
    gather, and ``.logits`` are then this rank's ``(B, S, V / TP)`` slice.
    """

    def __init__(self, config: LanguageModelConfig, params_dtype: torch.dtype = torch.float32):
        super().__init__()
        from megatron.core import parallel_state

        from mimo_lib import megatron_compat as mc
        from mimo_lib.tp_convert import check_tensor_parallel_size

        self.config = config
        self.tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.tp_rank = parallel_state.get_tensor_model_parallel_rank()
        check_tensor_parallel_size(config, self.tp_size)
        self.gather_output = True
        gpt = mc.build_megatron_gpt(config, parallel_output=True, params_dtype=params_dtype)
        object.__setattr__(self, "gpt", gpt)  # not a child: its children are ours (no "gpt." prefix)
        for name, child in gpt.named_children():
            self.add_module(name, child)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)  # GPTModel skips its own with decoder_input
        self._extra_state_keys = [k for k in gpt.state_dict() if k.endswith(mc.EXTRA_STATE)]
        self.register_state_dict_post_hook(_drop_empty_extra_state)
        self.register_load_state_dict_pre_hook(_add_empty_extra_state)

    def train(self, mode: bool = True) -> MegatronLanguageModel:
        super().train(mode)
        self.gpt.training = mode  # the GPTModel object itself is not a child
        return self

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings only: ``(B, L)`` ids -> ``(B, L, D)`` (vocabulary-parallel, all-reduced at TP > 1)."""
        check_token_ids(input_ids, self.config.padded_vocab_size)
        return self.embedding.word_embeddings(input_ids)  # (B, L, D)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        decoder_input: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: RecomputeCache | None = None,
        use_cache: bool = False,
        ignore_index: int = -100,
    ) -> LanguageModelOutput:
        """The same arguments and result as :meth:`GPTLanguageModel.forward` (``past_key_values``: a :class:`RecomputeCache`)."""
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        from mimo_lib.megatron_compat import gather_vocab_parallel_logits

        config = self.config
        if (input_ids is None) == (decoder_input is None):
            raise ValueError("give exactly one of input_ids (B, S) and decoder_input (B, S, D)")
        x = self.embed_tokens(input_ids) if input_ids is not None else decoder_input  # (B, S, D)
        if x.dim() != 3 or x.shape[-1] != config.hidden_size:
            raise ValueError(f"decoder_input must be (B, S, {config.hidden_size}), got shape {tuple(x.shape)}")
        B, S, _ = x.shape
        num_past = 0 if past_key_values is None else past_key_values.inputs.shape[1]
        total = num_past + S
        if position_ids is None:
            position_ids = torch.arange(num_past, total, device=x.device).expand(B, S)  # (B, S)
        if position_ids.shape != (B, S):
            raise ValueError(f"position_ids must be (B, S) = {(B, S)}, got shape {tuple(position_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones(B, total, dtype=torch.bool, device=x.device)
        if attention_mask.shape != (B, total) or attention_mask.dtype != torch.bool:
            raise ValueError(
                f"attention_mask must be a (B, S_past + S) = {(B, total)} bool tensor (True = real token), "
                f"got {attention_mask.dtype} {tuple(attention_mask.shape)}"
            )
        if past_key_values is not None:  # recompute: run the whole sequence again
            x = torch.cat([past_key_values.inputs, x], dim=1)  # (B, total, D)
            position_ids = torch.cat([past_key_values.position_ids, position_ids], dim=1)  # (B, total)
        cache = RecomputeCache(x, position_ids) if use_cache else None

        hidden = x
        if self.embedding.add_position_embedding:  # as the local backend: every position gets one
            hidden = hidden + self.embedding.position_embeddings(position_ids)  # (B, total, D)
        hidden = self.embedding_dropout(hidden)
        # Megatron: True = masked; the local backend's mask (padding keys hidden, each query sees itself), inverted
        mask = ~attention_mask_for(attention_mask, total)  # (B, 1, total, total)
        with rope_at(getattr(self, "rotary_pos_emb", None), position_ids):  # RoPE at the given ids, not 0 .. S-1
            logits = self.gpt(
                input_ids=None,
                position_ids=position_ids,
                attention_mask=mask,
                decoder_input=hidden.transpose(0, 1).contiguous(),  # (total, B, D): Megatron is sequence-first
            )  # (B, total, V / TP), batch-first again
        logits = logits[:, num_past:]  # (B, S, V / TP): the new positions only

        loss = None
        if labels is not None:
            if labels.shape != (B, S):
                raise ValueError(f"labels must be (B, S) = {(B, S)}, got shape {tuple(labels.shape)}")
            # Megatron scores logits[:, t] against labels[:, t] — shift here, and mask instead of ignore_index
            shifted = torch.cat([labels[:, 1:], labels.new_full((B, 1), ignore_index)], dim=1)  # (B, S)
            loss_mask = shifted != ignore_index  # (B, S)
            targets = shifted.masked_fill(~loss_mask, 0)  # any valid id; masked out below
            # Megatron's cross-entropy works in place on the logits it gets: give it a float32 copy
            work = logits.clone() if logits.dtype == torch.float32 else logits.float()
            per_token = vocab_parallel_cross_entropy(work, targets)  # (B, S), vocabulary-parallel at TP > 1
            loss = (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)
        if self.gather_output:
            logits = gather_vocab_parallel_logits(logits)  # (B, S, V)
        return LanguageModelOutput(logits=logits, loss=loss, past_key_values=cache)

    def num_parameters(self) -> int:
        """Parameters held by *this rank* (a TP shard; tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())


def _drop_empty_extra_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: leave out Megatron's ``_extra_state`` entries that hold nothing (safetensors can't store None)."""
    for key in module._extra_state_keys:
        if state_dict.get(prefix + key, 0) is None:
            del state_dict[prefix + key]


def _add_empty_extra_state(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: put back the empty ``_extra_state`` entries Megatron's strict load asks for."""
    for key in module._extra_state_keys:
        state_dict.setdefault(prefix + key, None)


# ----------------------------------------------------------------------------- megatron-core's own MimoModel


class TokensProjector(nn.Module):
    """A projector behind megatron-core's flat interface: ``(items * N, Dv) -> (items * N', D)``.

    ``ModalitySubmodules`` flattens an encoder's ``(items, N, Dv)`` output to
    rows before its input projection; this book's projectors merge neighbouring
    tokens, so they need the ``(items, N, Dv)`` shape back.
    """

    def __init__(self, projector: nn.Module, tokens_per_item: int, add_time=None):
        super().__init__()
        self.projector = projector
        self.tokens_per_item = tokens_per_item
        self.add_time = add_time  # (items, N', D) -> (items, N', D): the model's time embedding, or None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        items = rows.view(-1, self.tokens_per_item, rows.shape[-1])  # (items, N, Dv)
        out = self.projector(items)  # (items, N', D)
        if self.add_time is not None:
            out = self.add_time(out)  # (items, N', D) with each chunk's time vector
        return out.reshape(-1, out.shape[-1])  # (items * N', D)


def build_megatron_mimo(model: MIMOModel):
    """megatron-core's ``MimoModel`` made of ``model``'s own towers, projectors and decoder (shared, not copied).

    The modality submodules are ``"video"`` (``VisionModalitySubmodules``: encoder
    ``"tower"`` = the vision tower, input projection = the vision projector) and
    ``"audio"`` (likewise); ``special_token_ids`` are the config's placeholder ids.
    ``model`` must use the megatron backend. Run it with :func:`megatron_mimo_loss`.
    """
    import warnings

    from megatron.core.models.mimo import MimoModel, MimoModelConfig
    from megatron.core.models.mimo.submodules.audio import AudioModalitySubmodules
    from megatron.core.models.mimo.submodules.vision import VisionModalitySubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec

    if not isinstance(model.language_model, MegatronLanguageModel):
        raise BackendError("build_megatron_mimo needs a MIMOModel built with backend='megatron'")
    config = model.config
    gpt = model.language_model.gpt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "MimoModel is experimental"
        # The parts already exist, so they are put in place rather than built from specs: the language
        # model spec is a function (build_module leaves it unbuilt), the modality dict is filled after.
        mimo_config = MimoModelConfig(
            language_model_spec=ModuleSpec(module=lambda: gpt, params={"config": gpt.config}),
            modality_submodules_spec={},
            special_token_ids={"video": config.video_token_id, "audio": config.audio_token_id},
        )
        mimo = MimoModel(mimo_config)
        mimo.modality_submodules["video"] = VisionModalitySubmodules(
            encoders={"tower": model.vision_tower},
            input_projections=[TokensProjector(
                model.vision_projector, config.vision.num_tokens,
                lambda tokens: model.add_time_embedding(config.video_token_id, tokens),
            )],
        )
        mimo.modality_submodules["audio"] = AudioModalitySubmodules(
            encoders={"tower": model.audio_tower},
            input_projections=[TokensProjector(
                model.audio_projector, config.audio.audio_seq_len,
                lambda tokens: model.add_time_embedding(config.audio_token_id, tokens),
            )],
        )
    mimo.language_model = gpt  # the module in the function's place
    return mimo


def megatron_mimo_loss(mimo, model: MIMOModel, input_ids, video=None, audio=None, labels=None, attention_mask=None):
    """Mean next-token loss of megatron-core's ``MimoModel`` on a batch in :meth:`MIMOModel.forward`'s format.

    The placeholders are expanded by :meth:`MIMOModel.combine` (its
    ``CombinedInputs.input_ids``: one placeholder id per modality token, which
    ``align_embeddings_by_token_positions`` needs); the media go to each
    modality's tower only for the samples whose text holds its placeholder.
    Labels are shifted and turned into a ``loss_mask`` here, Megatron's way.
    """
    config = model.config
    combined = model.combine(input_ids, video, audio, attention_mask, labels)
    ids = combined.input_ids  # (B, S) expanded
    B, S = ids.shape
    modality_inputs = {}
    for name, token_id, media in (("video", config.video_token_id, video), ("audio", config.audio_token_id, audio)):
        rows = (input_ids == token_id).any(dim=1)  # (B,) samples that use this modality
        if media is not None and bool(rows.any()):
            argument = "video" if name == "video" else "waveform"  # the towers' forward() argument names
            modality_inputs[name] = {"tower": {argument: media[rows]}}
    shifted = torch.cat([combined.labels[:, 1:], combined.labels.new_full((B, 1), config.ignore_index)], dim=1)
    loss_mask = shifted != config.ignore_index  # (B, S)
    mask = ~attention_mask_for(combined.attention_mask, S)  # (B, 1, S, S) True = masked
    with rope_at(getattr(model.language_model, "rotary_pos_emb", None), combined.position_ids):  # as MIMOModel's
        per_token, loss_mask = mimo(
            input_ids=ids,
            position_ids=combined.position_ids,
            attention_mask=mask,
            loss_mask=loss_mask,
            labels=shifted.masked_fill(~loss_mask, 0),
            modality_inputs=modality_inputs,
        )  # (B, S) per-token loss
    return (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)


__all__ = [
    "LANGUAGE_BACKENDS",
    "BackendError",
    "MegatronLanguageModel",
    "RecomputeCache",
    "TokensProjector",
    "build_language_model",
    "build_megatron_mimo",
    "megatron_mimo_loss",
]
