"""The worked solutions of chapter 10's exercises, run and checked.

The chapter keeps its solutions folded in ``<details>`` blocks (no answer in a stored output); these
tests run the same computations on the library, so a change to the codec, the audio-out vocabulary or
the committed ``mimo_toy_speaks`` that makes a solution wrong fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

from mimo_lib.audio_codec import AudioCodecConfig, load_codec
from mimo_lib.audio_output import AudioJudge, UnclosedAudioSpanError, audio_spans, target_codes
from mimo_lib.checkpoint import load_model, load_tokenizer
from mimo_lib.constants import HELD_OUT_SEED_OFFSET
from mimo_lib.data.synthetic import AUDIO_OUT_TYPES, SyntheticConfig
from mimo_lib.evaluate import build_dataset
from mimo_lib.generate import answer_ids
from mimo_lib.pretrain_towers import make_pretraining_set
from mimo_lib.towers import PRETRAINED_DIR

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

SPEAKS = PRETRAINED_DIR / "mimo_toy_speaks"


@pytest.fixture(scope="module")
def speaks():
    if not SPEAKS.is_dir():
        pytest.skip("mimo_toy_speaks is not committed (python benchmarks/audio_output.py --publish)")
    model = load_model(SPEAKS).eval()
    tokenizer = load_tokenizer(SPEAKS)
    clip = build_dataset(
        "synthetic", model.config, tokenizer, 2 * len(AUDIO_OUT_TYPES), HELD_OUT_SEED_OFFSET + 47, AUDIO_OUT_TYPES
    )[1]  # the chapter's `clip` (section 7)
    return model, tokenizer, clip


def test_exercise_1_tokens_for_ten_seconds():
    cfg, other = AudioCodecConfig(), AudioCodecConfig(codebook_size=1024, downsample=8)
    codes_per_span = 25  # mimo_toy_speaks' span: one second of the shipped codec
    assert cfg.codes_per_second == codes_per_span
    assert (10 * (codes_per_span + 2), round(10 * other.codes_per_second) + 2) == (270, 127)
    assert (cfg.bits_per_second, other.bits_per_second) == (200, 125)


def test_exercise_2_the_codebook_is_used_evenly():
    codec = load_codec()
    clips, _ = make_pretraining_set("audio", 64, HELD_OUT_SEED_OFFSET + 41, SyntheticConfig())
    counts = torch.bincount(codec.encode(clips).flatten(), minlength=codec.config.codebook_size).float()
    p = counts[counts > 0] / counts.sum()
    used, perplexity = int((counts > 0).sum()), math.exp(-(p * p.log()).sum().item())
    assert 1 <= perplexity <= used <= codec.config.codebook_size and perplexity > used / 2


def test_exercise_3_an_unclosed_span_and_the_smallest_budget(speaks):
    model, tokenizer, clip = speaks
    out = model.config.audio_output

    def ask(budget):
        return answer_ids(
            model, tokenizer, "Play a low piano note.", clip["video"], clip["audio"], max_new_tokens=budget
        )

    with pytest.raises(UnclosedAudioSpanError, match="did not close"):
        audio_spans(ask(10), out, tokenizer.eos_id)
    with pytest.raises(UnclosedAudioSpanError):
        audio_spans(ask(out.codes_per_span + 2), out, tokenizer.eos_id)  # the leading space takes one token
    spans = audio_spans(ask(out.codes_per_span + 3), out, tokenizer.eos_id)
    assert len(spans[0]) == out.codes_per_span
    assert tokenizer.id_to_token(ask(2)[0]) == " "


def test_exercise_4_sampling_heard_at_least_as_often_as_exact(speaks):
    model, tokenizer, clip = speaks
    out = model.config.audio_output
    codec, judge = load_codec(), AudioJudge()
    sampled = [
        answer_ids(
            model,
            tokenizer,
            "Play a high flute note.",
            clip["video"],
            clip["audio"],
            max_new_tokens=out.codes_per_span + 4,
            do_sample=True,
            temperature=1.0,
            seed=s,
        )
        for s in range(8)
    ]
    codes = [tuple(audio_spans(ids, out, tokenizer.eos_id)[0]) for ids in sampled]
    verdicts = judge(codec.codes_to_waveform(torch.tensor(codes)))
    target = target_codes("flute", "high")
    exact = sum(c == target for c in codes)
    heard = sum(v == {"instrument": "flute", "pitch": "high"} for v in verdicts)
    assert heard >= exact >= 1
