"""Tests for the time-interleaved layout and time-aware position ids (mimo_lib.combine, issue 11).

The same invariants as the block layout (tests/test_combine.py), checked against a slow per-token
reference, plus: every token of chunk k precedes every token of chunk k+1, tokens of the same instant
share their time index, text continues at max + 1, and generation with a KV cache keeps working.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimo_lib.combine import (
    AUDIO,
    PADDING,
    TEXT,
    VIDEO,
    CombineError,
    TokenTiming,
    combine_multimodal_inputs,
    interleave_offsets,
    time_position_ids,
)
from mimo_lib.config import ConfigError, MIMOConfig, ProjectorConfig, get_preset
from mimo_lib.constants import AUDIO_TOKEN_ID, PAD_TOKEN_ID, VIDEO_TOKEN_ID
from mimo_lib.data.conversation import IGNORE_INDEX, build_prompt
from mimo_lib.errors import MimoInputError
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]

VID, AUD, PAD = VIDEO_TOKEN_ID, AUDIO_TOKEN_ID, PAD_TOKEN_ID
CODE = {VID: VIDEO, AUD: AUDIO}
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)
MODES = [("block", "time"), ("interleaved", "sequence"), ("interleaved", "time")]


# --------------------------------------------------------------------------- a random batch with clocks


@dataclass
class TimedBatch:
    rows: list[list[int]]
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L)
    text: torch.Tensor  # (B, L, D)
    items: dict[int, torch.Tensor]  # id -> (num_items, tokens_per_item, D)
    timing: TokenTiming


@st.composite
def timed_batches(draw) -> TimedBatch:
    """1-4 samples of 0-8 text tokens with at most one <video> and one <audio> each, anywhere; random clocks."""
    batch = draw(st.integers(1, 4))
    rows = []
    for _ in range(batch):
        row = draw(st.lists(st.integers(5, 30), max_size=8))
        for token_id in (VID, AUD):
            if draw(st.booleans()):
                row.insert(draw(st.integers(0, len(row))), token_id)
        rows.append(row)
    tokens = {VID: draw(st.integers(1, 6)), AUD: draw(st.integers(1, 6))}
    times = {  # sorted start times in [0, 1) s, repeats allowed (several tokens of one frame)
        t: torch.tensor(sorted(draw(st.lists(st.integers(0, 19), min_size=n, max_size=n))), dtype=torch.float64) / 20
        for t, n in tokens.items()
    }
    timing = TokenTiming(times, chunk_seconds=draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 2.0])),
                         ticks_per_second=draw(st.sampled_from([25.0, 10.0, 4.0])))
    width, extra, left = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.booleans())
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    length = max(len(r) for r in rows) + extra
    input_ids = torch.full((batch, length), PAD, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, row in enumerate(rows):
        cols = slice(length - len(row), length) if left else slice(0, len(row))
        input_ids[b, cols] = torch.tensor(row, dtype=torch.long)
        labels[b, cols] = torch.tensor([IGNORE_INDEX if t in (VID, AUD) else t + 100 for t in row], dtype=torch.long)
        mask[b, cols] = True
    text = torch.randn(batch, length, width, generator=generator)
    items = {t: torch.randn(sum(r.count(t) for r in rows), tokens[t], width, generator=generator) for t in (VID, AUD)}
    return TimedBatch(rows, input_ids, mask, labels, text, items, timing)


def combine(batch: TimedBatch, layout: str, positions: str, **kwargs):
    return combine_multimodal_inputs(
        batch.input_ids, batch.text, batch.items, attention_mask=batch.attention_mask, labels=batch.labels,
        layout=layout, positions=positions, timing=batch.timing, **kwargs,
    )


def reference(batch: TimedBatch, layout: str, positions: str, padding_side: str) -> dict[str, torch.Tensor]:
    """The layout and the ids the slow, obvious way: one sample at a time, one token at a time."""
    timing, next_item = batch.timing, {VID: 0, AUD: 0}
    chunk = {t: [int(c) for c in timing.chunks(t)] for t in (VID, AUD)}
    tick = {t: [int(c) for c in timing.ticks(t)] for t in (VID, AUD)}
    samples = []
    for b, row in enumerate(batch.rows):
        cols = batch.attention_mask[b].nonzero().flatten().tolist()
        paired = layout == "interleaved" and VID in row and AUD in row
        tokens = []  # (embedding, id, label, modality, tick)
        for col in cols:
            token_id = int(batch.input_ids[b, col])
            if token_id not in (VID, AUD):
                tokens.append((batch.text[b, col], token_id, int(batch.labels[b, col]), TEXT, -1))
                continue
            if paired and token_id != row[min(row.index(VID), row.index(AUD))]:
                continue  # the second placeholder of a pair: its tokens are in the first one's span
            span = [(token_id, i) for i in range(batch.items[token_id].shape[1])]
            if paired:
                span = [(VID, i) for i in range(batch.items[VID].shape[1])] + [
                    (AUD, i) for i in range(batch.items[AUD].shape[1])]
                span.sort(key=lambda m: (chunk[m[0]][m[1]], m[0] != VID))  # stable: order kept within a chunk
            for modality_id, i in span:
                item = batch.items[modality_id][next_item[modality_id]]
                tokens.append((item[i], modality_id, IGNORE_INDEX, CODE[modality_id], tick[modality_id][i]))
            for modality_id in {m for m, _ in span}:
                next_item[modality_id] += 1
        ids = []
        start = None
        for _, _, _, modality, t in tokens:
            if positions == "sequence":
                ids.append(len(ids))
            elif modality == TEXT:
                ids.append(max(ids, default=-1) + 1)
            else:
                start = max(ids, default=-1) + 1 if start is None else start
                ids.append(start + t)
        samples.append((tokens, ids))
    seq_len = max(len(t) for t, _ in samples)
    batch_size, width = len(samples), batch.text.shape[-1]
    out = {
        "embeddings": torch.zeros(batch_size, seq_len, width),
        "input_ids": torch.full((batch_size, seq_len), PAD, dtype=torch.long),
        "labels": torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long),
        "modality_map": torch.full((batch_size, seq_len), PADDING, dtype=torch.long),
        "attention_mask": torch.zeros(batch_size, seq_len, dtype=torch.bool),
        "position_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "ticks": torch.full((batch_size, seq_len), -1, dtype=torch.long),
    }
    for b, (tokens, ids) in enumerate(samples):
        first = seq_len - len(tokens) if padding_side == "left" else 0
        for k, ((emb, token_id, label, modality, t), position) in enumerate(zip(tokens, ids)):
            for key, value in (("embeddings", emb), ("input_ids", token_id), ("labels", label),
                               ("modality_map", modality), ("attention_mask", True), ("position_ids", position),
                               ("ticks", t)):
                out[key][b, first + k] = value
    return out


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(batch=timed_batches(), mode=st.sampled_from(MODES), padding_side=st.sampled_from(["right", "left"]))
def test_matches_the_per_token_reference(batch: TimedBatch, mode, padding_side: str):
    out = combine(batch, *mode, padding_side=padding_side)
    expected = reference(batch, *mode, padding_side)
    for key, value in expected.items():
        assert torch.equal(getattr(out, key), value), key


@PROPERTY_SETTINGS
@given(batch=timed_batches(), mode=st.sampled_from(MODES), padding_side=st.sampled_from(["right", "left"]))
def test_time_invariants(batch: TimedBatch, mode, padding_side: str):
    layout, positions = mode
    out = combine(batch, layout, positions, padding_side=padding_side)
    # the block layout's invariants: every text token once, in order, with its label; every media token once
    for b, row in enumerate(batch.rows):
        real = out.attention_mask[b]
        assert int(real.sum()) == len(row) - row.count(VID) - row.count(AUD) + sum(
            batch.items[t].shape[1] for t in (VID, AUD) if t in row)
        text_cols = (out.modality_map[b] == TEXT).nonzero().flatten()
        assert out.input_ids[b, text_cols].tolist() == [t for t in row if t not in (VID, AUD)]
        assert (out.labels[b][out.modality_map[b] != TEXT] == IGNORE_INDEX).all()
        assert (out.modality_map[b][~real] == PADDING).all() and (out.position_ids[b][~real] == 0).all()
        media = ((out.modality_map[b] == VIDEO) | (out.modality_map[b] == AUDIO)).nonzero().flatten()
        if len(media) == 0:
            continue
        ticks = out.ticks[b, media]
        modality = out.modality_map[b, media]
        if layout == "interleaved" and VID in row and AUD in row:
            # one contiguous span; chunk k entirely before chunk k+1, each chunk's video before its audio
            assert media.tolist() == list(range(int(media[0]), int(media[-1]) + 1))
            order = [(int(torch.floor(torch.tensor(t) / batch.timing.chunk_seconds + 1e-6)), int(m == AUDIO))
                     for t, m in zip(_media_times(out, b, batch), modality.tolist())]
            assert order == sorted(order)  # (chunk, video before audio) never goes back
        if positions == "time":
            ids = out.position_ids[b, media]
            assert len(set((ids - ticks).tolist())) == 1  # same instant, same id: s + tick for every media token
            real_ids = out.position_ids[b][real].tolist()
            kinds = out.modality_map[b][real].tolist()
            for k, (i, kind) in enumerate(zip(real_ids, kinds)):
                if kind == TEXT:
                    assert i == max(real_ids[:k], default=-1) + 1  # text continues after the largest id so far


def _media_times(out, b: int, batch: TimedBatch) -> list[float]:
    """Start time of each media token of row ``b``, read back through its embedding (items are random)."""
    times = []
    media = ((out.modality_map[b] == VIDEO) | (out.modality_map[b] == AUDIO)).nonzero().flatten()
    for col in media.tolist():
        token_id = int(out.input_ids[b, col])
        hits = (batch.items[token_id] == out.embeddings[b, col]).all(dim=-1).nonzero()  # (n, 2): item, token
        times.append(float(batch.timing.times[token_id][int(hits[0, 1])]))
    return times


@PROPERTY_SETTINGS
@given(batch=timed_batches(), padding_side=st.sampled_from(["right", "left"]))
def test_block_with_sequence_positions_ignores_the_timing(batch: TimedBatch, padding_side: str):
    """The default mode with a timing is the old zipper bit for bit (the timing only fills ``ticks``)."""
    timed = combine(batch, "block", "sequence", padding_side=padding_side)
    plain = combine_multimodal_inputs(batch.input_ids, batch.text, batch.items, attention_mask=batch.attention_mask,
                                      labels=batch.labels, padding_side=padding_side)
    for key in ("embeddings", "attention_mask", "position_ids", "labels", "modality_map", "input_ids"):
        assert torch.equal(getattr(timed, key), getattr(plain, key)), key
    assert plain.ticks is None


@PROPERTY_SETTINGS
@given(batch=timed_batches(), mode=st.sampled_from(MODES), cut=st.integers(1, 6))
def test_truncation_keeps_a_prefix_of_the_whole_row(batch: TimedBatch, mode, cut: int):
    full = combine(batch, *mode)
    longest = int(full.lengths.max())
    limit = max(1, longest - cut)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = combine(batch, *mode, max_length=limit, truncate=True)
    for key in ("embeddings", "position_ids", "labels", "modality_map", "input_ids", "ticks"):
        assert torch.equal(getattr(short, key), getattr(full, key)[:, :limit]), key


# --------------------------------------------------------------------------- worked examples


def test_interleave_offsets_chunk_by_chunk_video_first():
    video, audio = interleave_offsets(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 2]))
    layout = [None] * 10
    for i, o in enumerate(video.tolist()):
        layout[o] = f"v{i}"
    for j, o in enumerate(audio.tolist()):
        layout[o] = f"a{j}"
    assert layout == ["v0", "v1", "a0", "a1", "a2", "v2", "v3", "a3", "a4", "a5"]


def test_time_position_ids_worked_example():
    #            <bos> User :  v  v  a  a  a  \n  What
    modality = torch.tensor([[TEXT, TEXT, TEXT, VIDEO, VIDEO, AUDIO, AUDIO, AUDIO, TEXT, TEXT]])
    ticks = torch.tensor([[-1, -1, -1, 0, 12, 0, 8, 16, -1, -1]])
    ids = time_position_ids(modality, ticks, torch.ones_like(modality, dtype=torch.bool))
    assert ids.tolist() == [[0, 1, 2, 3, 15, 3, 11, 19, 20, 21]]


def test_toy_model_timing_and_layout():
    """The toy model with 0.25-s chunks: 2 frames (16 cells) and 7, 6, 6, 6 audio tokens per chunk."""
    config = MIMOConfig(av_layout="interleaved", av_positions="time",
                        projector=ProjectorConfig(vision_temporal_compression=2))
    model = MIMOModel(config)
    timing = model.token_timing()
    assert timing.times[VID].tolist() == [0.0] * 16 + [0.25] * 16 + [0.5] * 16 + [0.75] * 16
    assert timing.ticks(AUD).tolist() == list(range(25))  # 25 audio tokens per second: one per 40 ms
    assert timing.ticks(VID).unique().tolist() == [0, 6, 12, 18]
    tokenizer = Tokenizer.default()
    ids = torch.tensor([build_prompt(tokenizer, "What plays?")])
    video, audio = torch.zeros(1, 8, 3, 64, 64, dtype=torch.uint8), torch.zeros(1, 16_000)
    out = model.combine(ids, video, audio)
    kinds = out.modality_map[0].tolist()
    runs = []  # (modality, run length)
    for k in kinds:
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    assert runs[1:9] == [[VIDEO, 16], [AUDIO, 7], [VIDEO, 16], [AUDIO, 6], [VIDEO, 16], [AUDIO, 6], [VIDEO, 16],
                         [AUDIO, 6]]
    start = int(out.position_ids[0, runs[0][1]])  # s: one past the prompt's text before the clip
    media = out.modality_map[0] > 0
    assert torch.equal(out.position_ids[0][media] - start, out.ticks[0][media])
    after = (~media).nonzero().flatten()
    after = after[after > media.nonzero().max()]
    assert out.position_ids[0, after].tolist() == list(range(start + 25, start + 25 + len(after)))


# --------------------------------------------------------------------------- the model: generation and config


def tiny_config(layout: str, positions: str) -> MIMOConfig:
    base = get_preset("tiny")  # 4 frames over 1 s, 5 audio tokens
    return replace(base, av_layout=layout, av_positions=positions, chunk_seconds=0.5)


@pytest.mark.parametrize("layout,positions", MODES)
def test_generation_with_a_cache_equals_recomputing_and_batches_equal_single_prompts(layout, positions):
    torch.manual_seed(0)
    model = MIMOModel(tiny_config(layout, positions)).eval()
    tokenizer = Tokenizer.default()
    prompts = [build_prompt(tokenizer, "What plays?"), build_prompt(tokenizer, "Which shape is on while it plays?")]
    longest = max(map(len, prompts))
    ids = torch.full((2, longest), PAD, dtype=torch.long)
    mask = torch.zeros(2, longest, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, :len(p)], mask[b, :len(p)] = torch.tensor(p), True
    video = torch.randint(0, 255, (2, 4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    audio = torch.randn(2, 16_000, generator=torch.Generator().manual_seed(2))
    cached = model.generate(ids, video, audio, attention_mask=mask, max_new_tokens=6, eos_token_id=1)
    recomputed = model.generate(ids, video, audio, attention_mask=mask, max_new_tokens=6, eos_token_id=1,
                                use_cache=False)
    assert torch.equal(cached, recomputed)
    for b, p in enumerate(prompts):
        alone = model.generate(torch.tensor([p]), video[b:b + 1], audio[b:b + 1], max_new_tokens=6, eos_token_id=1)
        assert torch.equal(alone[0], cached[b])


def test_the_next_text_token_continues_after_the_largest_id():
    """Generation's new token sits at max(id) + 1 (not last id + 1), Qwen's rule: equal to a full forward there."""
    torch.manual_seed(0)
    model = MIMOModel(tiny_config("block", "time")).eval()
    tokenizer = Tokenizer.default()
    ids = torch.tensor([build_prompt(tokenizer, "What plays?")])
    video, audio = torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8), torch.randn(1, 16_000)
    combined = model.combine(ids, video, audio, padding_side="left")
    first = model.generate(ids, video, audio, max_new_tokens=2, eos_token_id=1)[0]
    lm = model.language_model
    step = torch.cat([combined.embeddings, lm.embed_tokens(first[:1][None])], dim=1)
    positions = torch.cat([combined.position_ids, combined.position_ids.max()[None, None] + 1], dim=1)
    logits = lm(decoder_input=step, position_ids=positions).logits[0, -1]
    logits[lm.config.vocab_size:] = float("-inf")
    assert int(logits.argmax()) == int(first[1])


def test_config_field_defaults_old_checkpoints_and_errors():
    data = MIMOConfig().to_dict()
    for key in ("av_layout", "av_positions", "chunk_seconds", "ticks_per_second"):
        data.pop(key)
    old = MIMOConfig.from_dict(data)  # a checkpoint saved before the fields existed
    assert (old.av_layout, old.av_positions) == ("block", "sequence")
    assert MIMOConfig.from_dict(tiny_config("interleaved", "time").to_dict()).av_layout == "interleaved"
    with pytest.raises(ConfigError, match="vision_temporal_compression one of \\[1, 2\\]"):
        MIMOConfig(av_layout="interleaved")  # the toy projector merges all 8 frames: across four 0.25-s chunks
    with pytest.raises(ConfigError, match="av_layout"):
        MIMOConfig(av_layout="zigzag")
    with pytest.raises(ConfigError, match="av_positions"):
        MIMOConfig(av_positions="mrope")
    with pytest.raises(ConfigError, match="chunk_seconds"):
        MIMOConfig(chunk_seconds=0)
    assert issubclass(ConfigError, MimoInputError)


MEGATRON_TIME_IDS = """
import warnings
warnings.filterwarnings("ignore")
import torch
from mimo_lib import parallel
from mimo_lib.config import get_preset
from mimo_lib.model import MIMOModel
from mimo_lib.scale_demo import demo_batch, run_model
parallel.init_parallel(tensor_model_parallel_size=1)
torch.manual_seed(0)
config = get_preset("toy")
assert config.av_positions == "time"
local = MIMOModel(config).eval()
megatron = MIMOModel(config, backend="megatron").eval()
megatron.load_state_dict(local.state_dict())
batch = demo_batch(config)
with torch.no_grad():
    a, b = run_model(local, batch), run_model(megatron, batch)
real = a.combined.attention_mask
assert not torch.equal(a.combined.position_ids[real], torch.arange(int(real.sum())))  # time ids, not counted
print((a.logits - b.logits).abs()[real].max().item(), abs(a.loss.item() - b.loss.item()))
"""


def test_megatron_backend_rotates_at_the_time_ids_as_the_local_one():
    pytest.importorskip("megatron.core")
    done = subprocess.run([sys.executable, "-c", MEGATRON_TIME_IDS], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    logits_diff, loss_diff = map(float, done.stdout.split()[-2:])
    assert logits_diff < 1e-5 and loss_diff < 1e-5


def test_two_clips_of_one_modality_in_a_sample_are_refused_by_name():
    timing = TokenTiming({VID: torch.zeros(2, dtype=torch.float64), AUD: torch.zeros(1, dtype=torch.float64)})
    ids = torch.tensor([[5, VID, 6, VID, AUD]])
    text = torch.zeros(1, 5, 2)
    items = {VID: torch.zeros(2, 2, 2), AUD: torch.zeros(1, 1, 2)}
    with pytest.raises(CombineError, match="sample 'clip-a'.*<video> placeholders"):
        combine_multimodal_inputs(ids, text, items, layout="interleaved", timing=timing, sample_ids=["clip-a"])
    with pytest.raises(ValueError, match="needs a timing"):
        combine_multimodal_inputs(ids[:, :3], text[:, :3], {VID: items[VID][:1]}, positions="time")
    with pytest.raises(ValueError, match="layout must be one of"):
        combine_multimodal_inputs(ids[:, :3], text[:, :3], {VID: items[VID][:1]}, layout="zigzag", timing=timing)
    wrong = TokenTiming({VID: torch.zeros(3, dtype=torch.float64), AUD: torch.zeros(1, dtype=torch.float64)})
    with pytest.raises(CombineError, match="video items have 2 tokens but the timing gives"):
        combine_multimodal_inputs(ids[:, :3], text[:, :3], {VID: items[VID][:1]}, layout="interleaved", timing=wrong)
