"""The model answers with a sound: audio-out tokens, generation that switches modality, and the tower's verdict.

Chapter 10's library side. :mod:`mimo_lib.audio_codec` turns a second of sound into 25 integers from a
codebook of 256; here those integers become words the GPT decoder can say::

    ids 0 .. 358      the text vocabulary of Tokenizer.default() (unchanged)
    id  359           <audio_out>          opens a sound
    id  360           </audio_out>         closes it
    ids 361 .. 616    <audio_code_0> .. <audio_code_255>: one per codebook entry

An answer such as ``<audio_out><audio_code_17>...(25 codes)...</audio_out>`` is trained with the same
next-token loss as any answer, and at generation the codes between the delimiters go through the codec's
decoder and Griffin-Lim to a waveform.

* **Extending a trained model** (:func:`extend_model`): the embedding table and the output layer grow by
  ``2 + codebook_size`` rows (and to Megatron's padded size); every old row is copied bit for bit, so the
  logits of the text ids are exactly what they were. The new *output* rows start as copies of ``<pad>``'s
  row: a token the model learned never to say (padding is never a target), so at first no new id can win
  the argmax of a text answer; the new *input* rows start as the decoder's init, ``normal(0, std)``.
  :func:`extend_config` records in ``MIMOConfig.audio_output`` where the new ids are, so generation knows.
* **Constrained decoding** (:func:`generate_with_audio`): outside a span only text ids and ``<audio_out>``
  may be produced; inside, only audio codes until exactly ``codes_per_span`` (25: one second) have been
  produced, then only ``</audio_out>``. A span therefore always has the right length, and a code can
  never appear in text nor text inside a sound. :meth:`mimo_lib.model.MIMOModel.generate` uses it for every
  model whose config has ``audio_output``.
* **Tasks** (:data:`mimo_lib.data.synthetic.AUDIO_OUT_TYPES`): the answer is :func:`audio_answer`, the
  codec's codes of the target note rendered once (deterministically) by the synthetic generator.
* **The honest check** (:func:`evaluate_audio_output`): the generated codes become a waveform, and the
  chapter-3 audio tower, zero-shot (its caption embeddings, no training on generated sound), says which
  instrument and pitch it hears; compared with the target, per task.

**How this maps onto Megatron's ``MimoModel``.** Megatron-core's MIMO keeps outputs apart from the language
model: it declares per-modality *output projections* (hidden states of the LLM -> a modality decoder's
input space) and *modality decoders* that would generate the non-text output, and its ``decode()`` is not
implemented yet. This book takes the other road, that of Chameleon, AnyGPT or the discrete "codec LM"
(AudioLM, VALL-E): the decoder's own output layer *is* the output projection (its rows for the audio ids
project the hidden state onto the codebook), and the codec's decoder plus Griffin-Lim is the modality
decoder, run after generation instead of inside the model. In Megatron's layout one would register the
codec as the ``audio`` output decoder and the 258 extra rows of ``output_layer`` (a vocabulary-parallel
linear, split over tensor-parallel ranks like the text rows) as its projection; nothing in the GPT stack
itself changes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mimo_lib.audio_codec import SHIPPED_CODEC, AudioCodec, AudioCodeError, load_codec
from mimo_lib.config import AudioOutputConfig, ConfigError, MIMOConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.language_model import DecodingConstraint, generate
from mimo_lib.tokenizer import AUDIO_OUT_END_TOKEN, AUDIO_OUT_TOKEN, Tokenizer, audio_code_token

#: Training stages whose data needs the audio-out tokens: loading a text-only model extends it.
AUDIO_OUT_STAGES = ("speak",)
#: Seed of the rendering of every target note (one fixed rendering per instrument and pitch).
TARGET_SEED = 1010
#: A target note lasts one second: 25 codes of the toy codec.
TARGET_DURATION_S = 1.0


class AudioOutputError(MimoInputError):
    """A request for sound that cannot be met: a text-only model, an unclosed span, a codec that does not fit."""


class TextOnlyModelError(AudioOutputError):
    """Audio output was asked of a model without audio-out tokens."""


class UnclosedAudioSpanError(AudioOutputError):
    """An ``<audio_out>`` span did not close before the generation budget ran out."""


# --------------------------------------------------------------------------- #
# The vocabulary: config, tokenizer, model
# --------------------------------------------------------------------------- #


def extend_config(config: MIMOConfig, codebook_size: int = 256, codes_per_span: int = 25) -> MIMOConfig:
    """``config`` with ``2 + codebook_size`` audio-out ids after its text vocabulary (a config that has them: as is)."""
    if config.audio_output is not None:
        if config.audio_output.codebook_size != codebook_size:
            raise ConfigError(
                f"the model already has audio-out tokens for a codebook of {config.audio_output.codebook_size}, "
                f"not {codebook_size}"
            )
        return config
    lm = config.language_model
    audio_output = AudioOutputConfig(codebook_size, start_id=lm.vocab_size, codes_per_span=codes_per_span)
    return dataclasses.replace(
        config, language_model=dataclasses.replace(lm, vocab_size=audio_output.stop_id), audio_output=audio_output
    )


def tokenizer_for(config: MIMOConfig) -> Tokenizer:
    """The tokenizer of a model: :meth:`Tokenizer.default`, or :meth:`Tokenizer.with_audio_codes` if it speaks."""
    out = config.audio_output
    tokenizer = Tokenizer.default() if out is None else Tokenizer.with_audio_codes(out.codebook_size)
    if tokenizer.vocab_size != config.language_model.vocab_size or (
        out is not None and tokenizer.audio_out_id != out.start_id
    ):
        raise ConfigError(
            f"the model's vocab_size {config.language_model.vocab_size} does not fit the book's tokenizer "
            f"({tokenizer.vocab_size} ids); build the config from a preset (and extend_config for audio output)"
        )
    return tokenizer


@torch.no_grad()
def extend_model(model, codebook_size: int = 256, codes_per_span: int = 25, seed: int = 0):
    """Give a trained text model audio-out tokens, in place; returns ``model`` (already extended: unchanged).

    Every old row of the word embeddings and the output layer is kept bit for bit (text logits are exactly
    the same); new output rows are copies of ``<pad>``'s row, new input rows ``normal(0, init_method_std)``
    drawn from ``seed``. Only the local backend's decoder (:class:`mimo_lib.language_model.GPTLanguageModel`).
    """
    new_config = extend_config(model.config, codebook_size, codes_per_span)
    if new_config is model.config:
        return model
    lm = model.language_model
    if not hasattr(lm, "embedding") or not hasattr(lm.embedding, "word_embeddings"):
        raise AudioOutputError("extending the vocabulary needs the local backend's decoder; load the model locally")
    old_rows = lm.config.vocab_size  # real ids; rows up to padded_vocab_size only padded the table
    new_lm_config = new_config.language_model
    old_embedding = lm.embedding.word_embeddings
    weight = old_embedding.weight
    generator = torch.Generator().manual_seed(seed)
    new_embedding = nn.Embedding(new_lm_config.padded_vocab_size, new_lm_config.hidden_size).to(weight)
    new_embedding.weight.copy_(
        torch.randn(new_embedding.weight.shape, generator=generator) * new_lm_config.init_method_std)
    new_embedding.weight[:old_rows] = weight[:old_rows]
    new_embedding.weight.requires_grad_(weight.requires_grad)
    if lm.output_layer is not None:
        old_out = lm.output_layer.weight  # (V_old_padded, D)
        new_out = nn.Linear(new_lm_config.hidden_size, new_lm_config.padded_vocab_size, bias=False).to(old_out)
        new_out.weight.copy_(old_out[model.config.pad_token_id].expand_as(new_out.weight))  # "never say it"
        new_out.weight[:old_rows] = old_out[:old_rows]
        new_out.weight.requires_grad_(old_out.requires_grad)
        lm.output_layer = new_out
    else:  # tied: the input rows are the output rows; pad's row plus the random rows keeps codes distinguishable
        pad_row = weight[model.config.pad_token_id]
        new_embedding.weight[old_rows:] = pad_row + new_embedding.weight[old_rows:] * 0.1
    lm.embedding.word_embeddings = new_embedding
    lm.config = new_lm_config
    model.config = new_config
    return model


# --------------------------------------------------------------------------- #
# Generation that switches modality
# --------------------------------------------------------------------------- #


def allowed_tokens(
    inside: torch.Tensor, count: torch.Tensor, out: AudioOutputConfig, padded_vocab_size: int
) -> torch.Tensor:
    """``(B, padded_vocab_size)`` bool: what each row may produce next.

    ``inside`` ``(B,)``: the row is inside an ``<audio_out>`` span; ``count`` ``(B,)``: codes in it so far.
    Outside a span: every id below ``start_id`` (text) and ``<audio_out>``. Inside: audio codes while
    ``count < codes_per_span``, then only ``</audio_out>``.
    """
    batch = inside.shape[0]
    ids = torch.arange(padded_vocab_size, device=inside.device)  # (V,)
    text = (ids < out.start_id) | (ids == out.start_id)  # (V,)
    codes = (ids >= out.first_code_id) & (ids < out.stop_id)  # (V,)
    close = ids == out.end_id  # (V,)
    full = (count >= out.codes_per_span)[:, None]  # (B, 1)
    in_span = torch.where(full, close[None, :], codes[None, :])  # (B, V)
    return torch.where(inside[:, None], in_span, text[None, :].expand(batch, -1))


class AudioSpanConstraint(DecodingConstraint):
    """:func:`allowed_tokens`' rules for :func:`mimo_lib.language_model.generate`, tracked per row.

    Each chosen token updates whether the row is inside an ``<audio_out>`` span and how many codes the
    span holds so far.
    """

    def __init__(self, audio_output: AudioOutputConfig, batch: int, device: torch.device | str = "cpu") -> None:
        self.audio_output = audio_output
        self.inside = torch.zeros(batch, dtype=torch.bool, device=device)  # (B,) inside a span
        self.count = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) codes in the open span

    def allowed(self, vocab: int) -> torch.Tensor:
        return allowed_tokens(self.inside, self.count, self.audio_output, vocab)  # (B, V)

    def update(self, token: torch.Tensor) -> None:
        out = self.audio_output
        is_code = (token >= out.first_code_id) & (token < out.stop_id)
        self.count = torch.where(token == out.start_id, torch.zeros_like(self.count), self.count + is_code.long())
        self.inside = (self.inside | (token == out.start_id)) & (token != out.end_id)


@torch.no_grad()
def generate_with_audio(
    model,
    decoder_input: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    audio_output: AudioOutputConfig,
    max_new_tokens: int,
    eos_token_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """:func:`mimo_lib.language_model.generate` with constrained decoding for audio spans (see :func:`allowed_tokens`).

    The same loop and arguments, with an :class:`AudioSpanConstraint`: before each choice the ids a row may
    not produce are set to ``-inf``. Returns ``(B, max_new_tokens)`` ids; a span still open when the budget
    runs out stays open (:func:`audio_spans` reports it).
    """
    constraint = AudioSpanConstraint(audio_output, decoder_input.shape[0], decoder_input.device)
    return generate(
        model, decoder_input, attention_mask, position_ids, max_new_tokens, eos_token_id, do_sample=do_sample,
        temperature=temperature, top_k=top_k, generator=generator, use_cache=use_cache, constraint=constraint,
    )


def audio_spans(ids: Sequence[int], audio_output: AudioOutputConfig, eos_token_id: int) -> list[list[int]]:
    """The codes (0 .. codebook_size - 1) of every ``<audio_out>`` span in generated ``ids``, up to ``<eos>``.

    Raises :class:`UnclosedAudioSpanError` for a span still open at the end, and
    :class:`~mimo_lib.audio_codec.AudioCodeError` for a non-code id inside a span.
    """
    spans: list[list[int]] = []
    current: list[int] | None = None
    for position, token in enumerate(int(t) for t in ids):
        if current is None:
            if token == eos_token_id:
                break
            if token == audio_output.start_id:
                current = []
            elif token == audio_output.end_id:
                raise AudioCodeError(f"{AUDIO_OUT_END_TOKEN} at answer position {position} closes no open span")
            continue
        if token == audio_output.end_id:
            spans.append(current)
            current = None
        elif audio_output.first_code_id <= token < audio_output.stop_id:
            current.append(token - audio_output.first_code_id)
        else:
            raise AudioCodeError(
                f"unknown audio code id {token} at answer position {position}: inside {AUDIO_OUT_TOKEN} only ids "
                f"{audio_output.first_code_id}..{audio_output.stop_id - 1} (codes 0..{audio_output.codebook_size - 1}) "
                "may appear"
            )
    if current is not None:
        raise UnclosedAudioSpanError(
            f"the answer opened {AUDIO_OUT_TOKEN} but did not close it within the token budget ({len(current)} of "
            f"{audio_output.codes_per_span} codes); raise --max-new-tokens (a sound needs "
            f"{audio_output.codes_per_span + 2} tokens)"
        )
    return spans


def require_audio_output(config: MIMOConfig, where: str = "this model") -> AudioOutputConfig:
    """``config.audio_output``, or :class:`TextOnlyModelError` with what to do instead."""
    if config.audio_output is None:
        raise TextOnlyModelError(
            f"{where} is a text-only model (no audio-out tokens in its vocabulary), so it cannot answer with a "
            "sound; load a model trained with --stage speak, e.g. mimo_lib/pretrained/mimo_toy_speaks"
        )
    return config.audio_output


def check_codec_fits(codec: AudioCodec, config: MIMOConfig) -> None:
    """The codec's codebook is the one the model's audio tokens stand for."""
    out = require_audio_output(config)
    if codec.config.codebook_size != out.codebook_size:
        raise AudioOutputError(
            f"the codec has {codec.config.codebook_size} codebook entries, the model's audio tokens stand for "
            f"{out.codebook_size}: use the codec the model was trained with"
        )


@functools.lru_cache(maxsize=4)
def _cached_codec(path: str) -> AudioCodec:
    return load_codec(path)


def shipped_codec(path: str | Path = SHIPPED_CODEC) -> AudioCodec:
    """The codec at ``path`` (default: the shipped toy codec), loaded once per process."""
    return _cached_codec(str(path))


# --------------------------------------------------------------------------- #
# The tasks' answers
# --------------------------------------------------------------------------- #


def target_waveform(instrument: str, pitch: str, sample_rate: int = 16_000) -> torch.Tensor:
    """The one rendering of a target note: ``(N,)`` float32, ``TARGET_DURATION_S`` long, deterministic.

    Rendered as the synthetic clips' sound is (:func:`~mimo_lib.data.synthetic.render_audio`: the note, a
    loudness drawn from 0.5-0.85 and the background hiss), from a seed of its own per instrument and pitch.
    """
    from mimo_lib.data.synthetic import INSTRUMENTS, PITCHES, Event, SyntheticConfig, render_audio

    if instrument not in INSTRUMENTS or pitch not in PITCHES:
        raise ValueError(f"unknown target note {instrument!r} {pitch!r}")
    rng = np.random.default_rng([TARGET_SEED, INSTRUMENTS.index(instrument), list(PITCHES).index(pitch)])
    config = SyntheticConfig(sample_rate=sample_rate, duration_s=TARGET_DURATION_S)
    return render_audio([Event("circle", "red", "still", instrument, pitch, 0.0, TARGET_DURATION_S)], config, rng)


@functools.lru_cache(maxsize=64)
def _target_codes(instrument: str, pitch: str, codec_path: str) -> tuple[int, ...]:
    codec = shipped_codec(codec_path)
    return tuple(codec.encode(target_waveform(instrument, pitch, codec.config.sample_rate))[0].tolist())


def target_codes(instrument: str, pitch: str, codec_path: str | Path = SHIPPED_CODEC) -> tuple[int, ...]:
    """The codec's codes of :func:`target_waveform` (25 for the toy codec), computed once per process."""
    return _target_codes(instrument, pitch, str(codec_path))


def audio_answer(instrument: str, pitch: str, codec_path: str | Path = SHIPPED_CODEC) -> str:
    """The answer text of an audio-output request: ``<audio_out>`` + the target's code tokens + ``</audio_out>``."""
    codes = target_codes(instrument, pitch, codec_path)
    return AUDIO_OUT_TOKEN + "".join(audio_code_token(c) for c in codes) + AUDIO_OUT_END_TOKEN


def target_of_answer(answer: str, codec_path: str | Path = SHIPPED_CODEC) -> dict[str, str]:
    """``{"instrument", "pitch"}`` of a reference answer written by :func:`audio_answer`."""
    from mimo_lib.data.synthetic import INSTRUMENTS, PITCHES

    for instrument in INSTRUMENTS:
        for pitch in PITCHES:
            if answer.strip() == audio_answer(instrument, pitch, codec_path):
                return {"instrument": instrument, "pitch": pitch}
    raise ValueError(f"not the answer of any target note: {answer[:60]!r}...")


# --------------------------------------------------------------------------- #
# The judge: the chapter-3 audio tower, zero-shot
# --------------------------------------------------------------------------- #


class AudioJudge:
    """Which instrument and pitch does the chapter-3 audio tower hear? Its nearest caption, zero-shot."""

    def __init__(self, path: str | Path | None = None) -> None:
        from mimo_lib.pretrain_towers import load_pretrainer
        from mimo_lib.towers import shipped_checkpoint

        self.pretrainer = load_pretrainer(path or shipped_checkpoint("audio")).eval()
        with torch.no_grad():
            self.captions = self.pretrainer.caption_embeddings()  # (C, E)

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor, batch_size: int = 64) -> list[dict[str, str]]:
        """``(B, N)`` waveforms -> ``[{"instrument", "pitch"}, ...]``: the attributes of each one's best caption."""
        predicted = []
        for start in range(0, len(waveforms), batch_size):
            clips = self.pretrainer.clip_embeddings(waveforms[start : start + batch_size])  # (b, E)
            predicted += (clips @ self.captions.T).argmax(-1).tolist()
        return [dict(self.pretrainer.caption_attributes[p]) for p in predicted]


def fit_length(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Cut or zero-pad ``(B, N)`` audio to ``num_samples`` (the tower reads a fixed window)."""
    if waveform.shape[-1] >= num_samples:
        return waveform[..., :num_samples]
    return torch.nn.functional.pad(waveform, (0, num_samples - waveform.shape[-1]))


def score(judged: Sequence[dict[str, str] | None], targets: Sequence[dict[str, str]]) -> dict[str, float]:
    """``instrument``, ``pitch`` and ``both`` accuracy; ``None`` (no sound produced) is wrong on all three."""
    n = max(1, len(targets))
    hits = {"instrument": 0, "pitch": 0, "both": 0}
    for got, want in zip(judged, targets):
        if got is None:
            continue
        instrument, pitch = got["instrument"] == want["instrument"], got["pitch"] == want["pitch"]
        hits["instrument"] += instrument
        hits["pitch"] += pitch
        hits["both"] += instrument and pitch
    return {k: v / n for k, v in hits.items()}


@torch.no_grad()
def predict_audio(
    model,
    dataset,
    tokenizer: Tokenizer,
    codec: AudioCodec,
    judge: AudioJudge,
    batch_size: int = 16,
    media_transform=None,
) -> list[dict[str, Any]]:
    """Answer the first request of every sample, turn each answer's sound into a waveform and judge it.

    One dict per sample: ``id, question_type, question, target, judged`` (None: no sound, or a span that
    did not decode), ``exact`` (the codes equal the target's) and ``text`` (what was said outside spans).
    """
    from mimo_lib.data.dataset import collate_av_batch
    from mimo_lib.evaluate import _questions

    out = require_audio_output(model.config)
    check_codec_fits(codec, model.config)
    device = next(model.parameters()).device
    num_samples = model.config.audio.num_samples
    results: list[dict[str, Any]] = []
    pending: list[dict] = []

    def flush() -> None:
        batch = collate_av_batch(pending, tokenizer.pad_id)
        if media_transform is not None:
            batch = media_transform(batch)
        new_tokens = model.generate(
            batch.input_ids.to(device),
            None if batch.video is None else batch.video.to(device),
            None if batch.audio is None else batch.audio.to(device),
            attention_mask=batch.attention_mask.to(device),
            max_new_tokens=out.codes_per_span + 4,
            eos_token_id=tokenizer.eos_id,
        )  # (B, budget)
        rows, codes = [], []
        for item, ids in zip(pending, new_tokens.tolist()):
            reference = target_of_answer(item["reference"])
            record = {"id": item["id"], "question_type": item["question_type"], "question": item["question"],
                      "target": reference, "judged": None, "exact": False}
            try:
                spans = audio_spans(ids, out, tokenizer.eos_id)
            except MimoInputError:
                spans = []
            if spans and len(spans[0]) > 0:
                record["exact"] = tuple(spans[0]) == target_codes(reference["instrument"], reference["pitch"])
                rows.append(len(results))
                codes.append(torch.tensor(spans[0]))
            results.append(record)
        if codes:
            waves = codec.codes_to_waveform(torch.stack(codes))  # constrained: every span has codes_per_span codes
            for row, verdict in zip(rows, judge(fit_length(waves, num_samples))):
                results[row]["judged"] = verdict
        pending.clear()

    for index in range(len(dataset)):
        pending.append(_questions(dataset[index], tokenizer)[0])
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return results


def accuracy_by_task(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{question_type: {"instrument", "pitch", "both", "exact", "n"}}`` from :func:`predict_audio`."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_type.setdefault(r["question_type"], []).append(r)
    table = {}
    for name, rows in by_type.items():
        scores = score([r["judged"] for r in rows], [r["target"] for r in rows])
        scores["exact"] = sum(r["exact"] for r in rows) / len(rows)
        scores["n"] = len(rows)
        table[name] = scores
    return table


def evaluate_audio_output(
    model, dataset, tokenizer: Tokenizer, codec: AudioCodec | None = None, judge: AudioJudge | None = None,
    batch_size: int = 16, media_transform=None,
) -> dict[str, dict[str, float]]:
    """Held-out accuracy of the generated sound, judged by the chapter-3 audio tower, per task."""
    return accuracy_by_task(predict_audio(
        model, dataset, tokenizer, codec or shipped_codec(), judge or AudioJudge(), batch_size, media_transform))


def answer_to_waveform(ids: Sequence[int], config: MIMOConfig, eos_token_id: int, codec: AudioCodec) -> torch.Tensor | None:
    """The waveform ``(N,)`` of the sound spans of one generated answer, one after the other; None if it has none."""
    out = require_audio_output(config)
    check_codec_fits(codec, config)
    spans = audio_spans(ids, out, eos_token_id)
    if not spans:
        return None
    waves = [codec.codes_to_waveform(torch.tensor(span))[0] for span in spans]
    return torch.cat(waves)


__all__ = [
    "AUDIO_OUT_STAGES",
    "AudioJudge",
    "AudioOutputError",
    "TextOnlyModelError",
    "UnclosedAudioSpanError",
    "accuracy_by_task",
    "AudioSpanConstraint",
    "allowed_tokens",
    "answer_to_waveform",
    "audio_answer",
    "audio_spans",
    "check_codec_fits",
    "evaluate_audio_output",
    "extend_config",
    "extend_model",
    "fit_length",
    "generate_with_audio",
    "predict_audio",
    "require_audio_output",
    "score",
    "shipped_codec",
    "target_codes",
    "target_of_answer",
    "target_waveform",
    "tokenizer_for",
]
