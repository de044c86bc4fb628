"""The synthetic generator: determinism, shapes, and answers that agree with the pixels and samples."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from mimo_lib import evaluate
from mimo_lib.config import get_preset
from mimo_lib.constants import AV_PROMPT
from mimo_lib.data.synthetic import (
    ALL_QUESTION_TYPES,
    BACKGROUND_RGB,
    CAPTION_TYPE,
    CHECK_TYPE,
    COLOURS,
    INSTRUMENTS,
    MOTIONS,
    PITCHES,
    QUESTION_TYPES,
    SHAPES,
    SyntheticConfig,
    article,
    ask,
    describe,
    dominant_frequency,
    instrument_answer,
    make_clip,
    make_sample,
    motion_phrase,
    moving_phrase,
    synthesize_note,
    synthetic_config_for,
    vocabulary_corpus,
)

SEEDS = range(40)


def foreground(frame: torch.Tensor) -> np.ndarray:
    """Boolean (H, W) mask of pixels far from the background colour."""
    rgb = frame.permute(1, 2, 0).numpy().astype(np.float32)
    return np.abs(rgb - np.array(BACKGROUND_RGB)).sum(-1) > 60


def centroid(frame: torch.Tensor) -> np.ndarray:
    ys, xs = np.nonzero(foreground(frame))
    return np.array([xs.mean(), ys.mean()])


def nearest_colour(frame: torch.Tensor) -> str:
    rgb = frame.permute(1, 2, 0).numpy().astype(np.float32)[foreground(frame)].mean(0)
    return min(COLOURS, key=lambda name: np.abs(rgb - np.array(COLOURS[name])).sum())


def classify_shape(frame: torch.Tensor) -> str:
    """Fill ratio of the bounding box: square ~0.9+, circle ~pi/4, triangle ~0.5."""
    mask = foreground(frame)
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = mask.sum() / box
    return "square" if fill > 0.88 else "circle" if fill > 0.65 else "triangle"


def answer(sample) -> str:
    return sample.conversations[1]["value"]


def question(sample) -> str:
    return sample.conversations[0]["value"]


def test_same_seed_same_clip_and_different_seed_different_clip():
    a, b, c = make_clip(3), make_clip(3), make_clip(4)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio) and a.events == b.events
    assert not torch.equal(a.video, c.video)
    assert not torch.equal(a.audio, c.audio)
    s1, s2 = make_sample([1, 2], "both"), make_sample([1, 2], "both")
    assert s1.conversations == s2.conversations


@pytest.mark.parametrize(
    "config", [SyntheticConfig(), SyntheticConfig(num_frames=16, image_size=32, duration_s=2.0, sample_rate=8000)]
)
def test_shapes_and_dtypes(config):
    clip = make_clip(0, config)
    assert clip.video.shape == (config.num_frames, 3, config.image_size, config.image_size)
    assert clip.video.dtype == torch.uint8
    assert clip.audio.shape == (int(config.duration_s * config.sample_rate),)
    assert clip.audio.dtype == torch.float32
    assert clip.audio.abs().max() <= 1.0
    assert clip.fps == pytest.approx(config.num_frames / config.duration_s)


def test_invalid_config_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticConfig(num_frames=1)
    with pytest.raises(ValueError, match="unknown question type"):
        make_sample(0, "smell")


def test_all_attributes_appear_over_many_clips():
    events = [make_clip(s).events[0] for s in range(200)]
    assert {e.shape for e in events} == set(SHAPES)
    assert {e.colour for e in events} == set(COLOURS)
    assert {e.motion for e in events} == set(MOTIONS)
    assert {e.instrument for e in events} == set(INSTRUMENTS)
    assert {e.pitch for e in events} == set(PITCHES)


def test_placeholders_lead_the_first_question_only():
    sample = make_sample(5, "audio", num_turns=3)
    assert len(sample.conversations) == 6
    assert sample.conversations[0]["value"].startswith(AV_PROMPT) and AV_PROMPT == "<video>\n<audio>\n"
    assert all("<video>" not in t["value"] for t in sample.conversations[1:])
    assert [t["from"] for t in sample.conversations] == ["human", "gpt"] * 3


FOLLOW_UPS = ("vision", "motion", "audio", CAPTION_TYPE)


@pytest.mark.parametrize("question_type", QUESTION_TYPES)
def test_follow_up_turns_ask_other_fitting_types_once_each(question_type):
    for seed in range(20):
        sample = make_sample([seed], question_type, num_turns=4, follow_up_types=FOLLOW_UPS)
        questions = [t["value"] for t in sample.conversations[0::2]]
        answers = [t["value"] for t in sample.conversations[1::2]]
        assert sample.question_type == question_type
        # every turn is a question of a fitting type, answered as ask() answers that type on this clip
        asked = [question_type]
        for question, answer in zip(questions[1:], answers[1:]):
            fitting = [t for t in FOLLOW_UPS if t != question_type and t not in asked
                       and (t == CAPTION_TYPE or (t == "time") == (question_type == "time"))]
            matches = [t for t in fitting if _answers_as(sample.clip.events, t, question, answer)]
            assert matches, f"seed {seed}: {question!r} -> {answer!r} is none of {fitting}"
            asked.append(matches[0])
        assert len(set(asked)) == len(asked)  # no type twice
        expected_turns = 2 if question_type == "time" else 4  # a two-event clip only fits a caption after it
        assert len(questions) == expected_turns


def test_a_time_follow_up_asks_about_the_other_event_before_the_caption():
    follow_ups = (*FOLLOW_UPS, "time")
    asked_about = Counter()
    for seed in range(40):
        sample = make_sample([seed], "time", num_turns=4, follow_up_types=follow_ups)
        events = sample.clip.events
        questions = [t["value"] for t in sample.conversations[0::2]]
        answers = [t["value"] for t in sample.conversations[1::2]]
        assert len(questions) == 3  # time, time about the other event, caption (nothing else fits two events)
        assert answers[2] == describe(events)  # the caption last: it would answer the second time question
        about = [_time_event(events, q, a) for q, a in zip(questions[:2], answers[:2])]
        assert sorted(about) == [0, 1], f"seed {seed}: both time questions ask about event {about[0]}"
        asked_about[about[0]] += 1
        # the first turn is the one a single-turn sample (what evaluation asks) would ask
        single = make_sample([seed], "time")
        assert single.conversations[1]["value"] == answers[0] and single.conversations[0]["value"] == questions[0]
        # ...and the same as without the time follow-up
        assert make_sample([seed], "time", num_turns=4, follow_up_types=FOLLOW_UPS).conversations[:2] == sample.conversations[:2]
    assert min(asked_about.values()) >= 10  # the first question's event is still drawn at random
    with pytest.raises(ValueError, match="event 0 or 1"):
        ask(events, "time", np.random.default_rng(0), about=2)
    # a one-event clip never gets a time follow-up
    for question_type in ("vision", "both"):
        sample = make_sample([3], question_type, num_turns=4, follow_up_types=follow_ups)
        assert not any("while the" in t["value"] for t in sample.conversations[2::2])


def _time_event(events, question, answer) -> int:
    """Which event a time question asks about: the one whose instrument or coloured shape the answer names."""
    named = [k for k, e in enumerate(events)
             if answer == instrument_answer(e.instrument) or answer == f"It is {article(e.colour + ' ' + e.shape)}."]
    assert len(named) == 1, (question, answer)
    return named[0]


def _answers_as(events, question_type, question, answer) -> bool:
    """Does some draw of ask(events, question_type) give exactly this question and answer?"""
    return any(ask(events, question_type, np.random.default_rng(k)) == (question, answer) for k in range(200))


def test_false_claims_change_only_the_attributes_asked_for():
    for seed in range(60):
        sample = make_sample([seed], "both", false_claim_attributes=("shape",))
        event = sample.clip.events[0]
        question, answer = sample.conversations[0]["value"], sample.conversations[1]["value"]
        assert event.instrument in question and f" {event.colour} " in question
        assert motion_phrase(event.motion) in question
        assert (f" {event.shape} " in question) == (answer == "Yes.")  # a false claim names another shape
    with pytest.raises(ValueError, match="unknown false-claim attributes"):
        make_sample(1, "both", false_claim_attributes=("smell",))


def test_without_follow_up_types_every_turn_has_the_first_type():
    sample = make_sample(5, "motion", num_turns=3)
    motion = make_sample(5, "motion").clip.events[0].motion
    assert [t["value"] for t in sample.conversations[1::2]] == [f"It {motion_phrase(motion)}."] * 3


@pytest.mark.parametrize("seed", SEEDS)
def test_shape_and_colour_answers_match_the_pixels(seed):
    sample = make_sample([seed], "vision")
    frame = sample.clip.video[0]
    event = sample.clip.events[0]
    assert classify_shape(frame) == event.shape
    assert nearest_colour(frame) == event.colour
    if answer(sample).startswith("It is"):
        assert answer(sample) == f"It is {'an' if event.shape[0] in 'aeiou' else 'a'} {event.shape}."
    else:
        assert answer(sample) == f"The {event.shape} is {event.colour}."


@pytest.mark.parametrize("seed", SEEDS)
def test_motion_answers_match_the_centroid_path(seed):
    sample = make_sample([seed], "motion")
    video = sample.clip.video
    dx, dy = centroid(video[-1]) - centroid(video[0])
    said = answer(sample)
    size = video.shape[-1]
    if "left" in said:
        assert dx < -0.2 * size and abs(dy) < 2
    elif "right" in said:
        assert dx > 0.2 * size and abs(dy) < 2
    elif "up" in said:
        assert dy < -0.2 * size and abs(dx) < 2
    elif "down" in said:
        assert dy > 0.2 * size and abs(dx) < 2
    else:
        assert said == "It stays still." and abs(dx) < 2 and abs(dy) < 2
    # the shape stays fully inside the frame: no foreground touches the border
    for frame in video:
        mask = foreground(frame)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_high_notes_are_higher_than_low_notes(instrument):
    rng = np.random.default_rng(0)
    low = dominant_frequency(synthesize_note(instrument, PITCHES["low"], 1.0, 16_000, rng), 16_000)
    high = dominant_frequency(synthesize_note(instrument, PITCHES["high"], 1.0, 16_000, rng), 16_000)
    assert low == pytest.approx(PITCHES["low"], rel=0.05)
    assert high == pytest.approx(PITCHES["high"], rel=0.05)
    assert high > 2 * low


def envelope_ratio(wave: np.ndarray, sample_rate: int) -> float:
    """Energy in the last half of a note over energy in its first 100 ms (per sample)."""
    head = wave[: sample_rate // 10]
    tail = wave[len(wave) // 2 :]
    return float((tail**2).mean() / (head**2).mean())


def test_instruments_have_their_own_envelopes():
    rng = np.random.default_rng(1)
    ratios = {i: envelope_ratio(synthesize_note(i, 220.0, 1.0, 16_000, rng), 16_000) for i in INSTRUMENTS}
    assert ratios["flute"] > 0.5  # a flute is blown: it sustains
    assert ratios["drum"] < 0.01  # a drum dies away fast
    assert ratios["drum"] < ratios["piano"] < ratios["flute"]
    assert ratios["drum"] < ratios["acoustic guitar"] < ratios["flute"]


@pytest.mark.parametrize("seed", SEEDS)
def test_audio_answers_match_the_waveform(seed):
    sample = make_sample([seed], "audio")
    event = sample.clip.events[0]
    freq = dominant_frequency(sample.clip.audio, sample.clip.sample_rate)
    assert freq == pytest.approx(PITCHES[event.pitch], rel=0.05)
    said = answer(sample)
    if said.startswith("The note is"):
        assert said == f"The note is {event.pitch}."
    else:
        assert event.instrument in said


@pytest.mark.parametrize("seed", SEEDS)
def test_both_questions_say_yes_exactly_when_the_claim_is_true(seed):
    sample = make_sample([seed], "both")
    event = sample.clip.events[0]
    q = question(sample)
    claimed_instrument = next(i for i in INSTRUMENTS if f" {i} " in q)
    claimed = re.search(r"the (\w+) (\w+) (moves|stays)", q)
    claimed_colour, claimed_shape = claimed.group(1), claimed.group(2)
    claimed_motion = next(m for m in MOTIONS if q.endswith(motion_phrase(m) + "?"))
    truth = (claimed_instrument, claimed_colour, claimed_shape, claimed_motion) == (
        event.instrument,
        event.colour,
        event.shape,
        event.motion,
    )
    assert answer(sample) == ("Yes." if truth else "No.")


def test_both_questions_are_balanced():
    answers = [answer(make_sample([s], "both")) for s in range(200)]
    assert 70 < answers.count("Yes.") < 130


def check_claim(question: str) -> tuple[str, str]:
    """(attribute, value) that a check question claims, read back from its words."""
    for instrument in INSTRUMENTS:
        if question.endswith((f"the {instrument} playing?", f" {instrument}?")):
            return "instrument", instrument
    for shape in SHAPES:
        if question.endswith(f" {shape}?"):
            return "shape", shape
    for colour in COLOURS:
        if question.endswith(f" {colour}?"):
            return "colour", colour
    motion = next(m for m in MOTIONS if question.endswith(f"the shape {moving_phrase(m)}?"))
    return "motion", motion


def test_check_questions_ask_one_attribute_and_answer_it_truly():
    asked = []
    for seed in range(200):
        sample = make_sample([seed], CHECK_TYPE)
        event = sample.clip.events[0]
        attribute, value = check_claim(question(sample))
        assert answer(sample) == ("Yes." if getattr(event, attribute) == value else "No.")
        asked.append((attribute, answer(sample)))
    for attribute in ("instrument", "colour", "shape", "motion"):  # every attribute, both answers
        assert (attribute, "Yes.") in asked and (attribute, "No.") in asked
    assert 70 < [a for _, a in asked].count("Yes.") < 130
    with pytest.raises(ValueError, match="one-event"):
        ask(make_clip(3, two_events=True).events, CHECK_TYPE, np.random.default_rng(0))


@pytest.mark.parametrize("seed", SEEDS)
def test_time_questions_follow_the_events(seed):
    sample = make_sample([seed], "time")
    first, second = sample.clip.events
    clip = sample.clip
    half_frames, half_samples = clip.video.shape[0] // 2, clip.audio.shape[0] // 2
    # each half of the clip shows its own event and plays its own note
    assert nearest_colour(clip.video[0]) == first.colour
    assert nearest_colour(clip.video[-1]) == second.colour
    assert classify_shape(clip.video[0]) == first.shape
    assert classify_shape(clip.video[half_frames]) == second.shape
    assert dominant_frequency(clip.audio[:half_samples], clip.sample_rate) == pytest.approx(
        PITCHES[first.pitch], rel=0.06
    )
    assert dominant_frequency(clip.audio[half_samples:], clip.sample_rate) == pytest.approx(
        PITCHES[second.pitch], rel=0.06
    )
    assert first.instrument != second.instrument
    assert first.end_s == pytest.approx(second.start_s)
    q, said = question(sample), answer(sample)
    if "instrument" in q or "hear" in q:
        asked = first if f"{first.colour} {first.shape}" in q else second
        assert f"{asked.colour} {asked.shape}" in q
        assert said.endswith(f" {asked.instrument}.")
    else:
        asked = first if first.instrument in q else second
        assert said == f"It is {'an' if asked.colour[0] in 'aeiou' else 'a'} {asked.colour} {asked.shape}."


def test_caption_describes_every_event():
    one = make_sample(2, CAPTION_TYPE)
    e = one.clip.events[0]
    assert answer(one) == one.clip.caption
    assert e.colour in answer(one) and e.shape in answer(one) and e.instrument in answer(one)
    two = make_clip(9, two_events=True)
    assert two.caption.startswith("First ") and ", then " in two.caption


def test_vocabulary_covers_every_generated_sentence():
    corpus = " ".join(vocabulary_corpus())
    words = set(re.findall(r"[A-Za-z]+", corpus))
    for seed in range(100):
        for qt in ALL_QUESTION_TYPES:
            for turn in make_sample([seed, 1], qt).conversations:
                assert set(re.findall(r"[A-Za-z]+", turn["value"])) <= words | {"video", "audio"}


@pytest.mark.parametrize("preset", ["tiny", "toy", "small"])
def test_synthetic_config_for_renders_what_the_model_reads(preset):
    config = get_preset(preset)
    synthetic = synthetic_config_for(config)
    clip = make_clip(3, synthetic)
    assert tuple(clip.video.shape) == (config.vision.num_frames, 3, config.vision.image_size, config.vision.image_size)
    assert clip.audio.shape == (config.audio.num_samples,)
    assert synthetic.sample_rate == config.audio.sample_rate
    # one helper, re-exported by evaluate (train.py and chapter 7 import it from there)
    assert evaluate.synthetic_config_for is synthetic_config_for
