"""Synthetic audio-video clips whose questions need both eyes and ears.

Every clip is made of one or two *events*. An event is a coloured shape that
moves across a dark screen while an instrument plays one note:

    event = (shape, colour, motion)  +  (instrument, pitch)  +  (start_s, end_s)

* **Video**: ``num_frames`` RGB frames, ``(T, 3, H, W)`` uint8, 8 frames of
  64x64 by default. Shapes are drawn anti-aliased (rendered at twice the size,
  then averaged down) on a noisy dark background.
* **Audio**: a mono 16 kHz waveform, ``(N,)`` float32 in [-1, 1], made by four
  tiny synthesisers: a plucked string (Karplus-Strong), a flute (sine with
  vibrato and breath), a drum (a tom: a falling sine plus a noise burst) and a
  piano (decaying harmonics).
* **Two-event clips**: the first half of the clip shows one shape with one
  sound, the second half another shape with another sound. Each event keeps its
  start and end time, so a question can ask what plays while a shape is on
  screen: neither the frames alone nor the audio alone answer it.
* **Conversations** in the LLaVA schema with ``<video>`` and ``<audio>``
  placeholders, one *question type* per sample: ``vision`` (shape, colour),
  ``motion`` (needs several frames), ``audio`` (instrument, pitch), ``both``
  (a yes/no question about sight and sound together) and ``time`` (two-event
  clips). ``caption`` gives description-style answers (used for projector
  alignment in chapter 7) and ``check`` one-attribute yes/no questions ("Is
  the shape a square?"), a training curriculum for ``both``.

Everything is a pure function of a seed: the same seed gives the same bytes on
every machine, which is what lets tests, notebooks and checkpoints agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from mimo_lib.constants import AV_PROMPT, SAMPLE_RATE

if TYPE_CHECKING:  # only for annotations: the data generator does not need the model's config module
    from mimo_lib.config import MIMOConfig

# --------------------------------------------------------------------------- #
# The world the clips are drawn from
# --------------------------------------------------------------------------- #

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: colour name -> RGB. Far apart in RGB so a 64x64 frame shows them plainly.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (45, 190, 70),
    "blue": (55, 95, 235),
    "yellow": (235, 210, 45),
}

MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")

#: motion -> unit direction in image coordinates (x to the right, y downwards).
MOTION_DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}

INSTRUMENTS: tuple[str, ...] = ("acoustic guitar", "flute", "drum", "piano")

#: pitch name -> fundamental frequency in Hz (A3 and E5).
PITCHES: dict[str, float] = {"low": 220.0, "high": 660.0}

#: The question types a sample can have; ``time`` questions use two-event clips.
QUESTION_TYPES: tuple[str, ...] = ("vision", "motion", "audio", "both", "time")
#: Description-style answers ("A red circle moves to the left while ..."), for projector alignment.
CAPTION_TYPE = "caption"
#: Yes/no questions about one attribute ("Is the shape a square?"). Training only: a curriculum for
#: ``both``, whose answer is the AND of four such checks (chapter 7).
CHECK_TYPE = "check"
#: Every type :func:`make_sample` accepts: the task's, then the two that only training uses.
ALL_QUESTION_TYPES: tuple[str, ...] = QUESTION_TYPES + (CAPTION_TYPE, CHECK_TYPE)
#: Requests answered with a *sound* (chapter 10): the answer is ``<audio_out>``, the audio codec's codes of the
#: target note, ``</audio_out>`` (:func:`mimo_lib.audio_output.audio_answer`). Their words ("Play", the code
#: tokens) are not in ``Tokenizer.default()``'s vocabulary: they need ``Tokenizer.with_audio_codes`` (where
#: "Play" is spelled in byte tokens), so they are kept out of :data:`ALL_QUESTION_TYPES`.
#:
#: * ``play_text`` (text -> sound): "Play a low piano note." The target is named in the request; the clip
#:   is an unrelated distractor.
#: * ``play_heard`` (sound -> sound): "Play what you hear." The target is the clip's instrument and pitch.
#: * ``play_shifted`` (sound -> sound, changed): "Play the instrument you hear, but higher." The world has two
#:   pitches (220 and 660 Hz, not an octave apart), so "higher" means *the high note* and is asked only of a
#:   low note (and "lower" only of a high one): the clip's instrument, the other pitch.
#: * ``play_shape`` (video -> sound): "Play the sound of the shape you see." A fixed rule maps what is seen to a
#:   note: the shape picks the instrument (:data:`SHAPE_INSTRUMENTS`), the colour the pitch
#:   (:data:`COLOUR_PITCHES`: warm colours high, cool colours low); the clip's own sound is a distractor.
AUDIO_OUT_TYPES: tuple[str, ...] = ("play_text", "play_heard", "play_shifted", "play_shape")
#: ``play_shape``'s rule: shape -> instrument.
SHAPE_INSTRUMENTS: dict[str, str] = {"circle": "flute", "square": "piano", "triangle": "acoustic guitar"}
#: ``play_shape``'s rule: colour -> pitch.
COLOUR_PITCHES: dict[str, str] = {"red": "high", "yellow": "high", "blue": "low", "green": "low"}

BACKGROUND_RGB = (28, 28, 32)
TRAVEL = 0.40  # how far a moving shape travels during its event, as a fraction of the frame


@dataclass(frozen=True)
class SyntheticConfig:
    """How clips are rendered. The defaults are the book's toy setting."""

    num_frames: int = 8  # video frames per clip, spread evenly over the clip
    image_size: int = 64  # frame height = width, in pixels
    sample_rate: int = SAMPLE_RATE  # audio samples per second
    duration_s: float = 1.0  # clip length in seconds (video and audio)
    pixel_noise_std: float = 4.0  # std of Gaussian noise added to every pixel (0-255 scale)
    audio_noise_std: float = 0.003  # std of background hiss added to the waveform

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be at least 2 (got {self.num_frames}): motion needs two frames")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels (got {self.image_size})")
        if self.sample_rate < 4_000:
            raise ValueError(f"sample_rate must be at least 4000 Hz (got {self.sample_rate})")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive (got {self.duration_s})")

    @property
    def fps(self) -> float:
        """Frames per second implied by ``num_frames`` over ``duration_s``."""
        return self.num_frames / self.duration_s

    @property
    def num_samples(self) -> int:
        """Audio samples per clip."""
        return int(round(self.duration_s * self.sample_rate))


def synthetic_config_for(config: MIMOConfig) -> SyntheticConfig:
    """Render synthetic clips the way ``config``'s model reads them: its frames, image size, clip length and rate."""
    return SyntheticConfig(
        num_frames=config.vision.num_frames,
        image_size=config.vision.image_size,
        duration_s=config.audio.clip_duration_s,
        sample_rate=config.audio.sample_rate,
    )


@dataclass(frozen=True)
class Event:
    """One thing that happens: a shape on screen while an instrument plays."""

    shape: str
    colour: str
    motion: str
    instrument: str
    pitch: str
    start_s: float  # when the shape appears and the note starts
    end_s: float  # when both stop
    start_xy: tuple[float, float] = (0.5, 0.5)  # centre at start_s, as fractions of width/height
    size: float = 0.12  # shape "radius" as a fraction of the frame size

    def position_at(self, t: float) -> tuple[float, float]:
        """Centre of the shape at time ``t`` (seconds), as fractions of the frame."""
        progress = (t - self.start_s) / (self.end_s - self.start_s)
        progress = min(max(progress, 0.0), 1.0)
        dx, dy = MOTION_DIRECTIONS[self.motion]
        return (self.start_xy[0] + dx * TRAVEL * progress, self.start_xy[1] + dy * TRAVEL * progress)

    def is_active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass
class SyntheticClip:
    """A rendered clip: frames, waveform, and the events that made them."""

    clip_id: str
    video: torch.Tensor  # (T, 3, H, W) uint8
    audio: torch.Tensor  # (N,) float32 in [-1, 1]
    events: tuple[Event, ...]
    sample_rate: int
    fps: float

    @property
    def caption(self) -> str:
        return describe(self.events)


@dataclass
class SyntheticSample:
    """A clip plus one conversation about it."""

    clip: SyntheticClip
    question_type: str
    conversations: list[dict[str, str]] = field(default_factory=list)  # LLaVA schema turns

    @property
    def sample_id(self) -> str:
        return self.clip.clip_id


# --------------------------------------------------------------------------- #
# Drawing frames
# --------------------------------------------------------------------------- #


def shape_mask(shape: str, centre_xy: tuple[float, float], radius: float, size: int) -> np.ndarray:
    """Soft (anti-aliased) mask of a shape on a ``size x size`` canvas.

    ``centre_xy`` and ``radius`` are fractions of the frame. Returns an
    ``(size, size)`` float array in [0, 1]: rendered at twice the resolution,
    then each 2x2 block averaged, so edges are smooth.
    """
    hi = 2 * size
    # pixel centres in fractions of the frame, (hi,) each
    coords = (np.arange(hi) + 0.5) / hi
    x = coords[None, :]  # (1, hi)
    y = coords[:, None]  # (hi, 1)
    cx, cy = centre_xy
    r = radius
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    elif shape == "square":
        half = 0.88 * r  # a little smaller, so its area is close to the circle's
        inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    elif shape == "triangle":
        # apex up; larger than r so its area is comparable to the others
        apex = (cx, cy - 1.15 * r)
        left = (cx - 1.15 * r, cy + 0.9 * r)
        right = (cx + 1.15 * r, cy + 0.9 * r)
        inside = _inside_triangle(x, y, apex, left, right)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    inside = np.broadcast_to(inside, (hi, hi)).astype(np.float32)
    return inside.reshape(size, 2, size, 2).mean(axis=(1, 3))  # (size, size)


def _inside_triangle(x, y, a, b, c) -> np.ndarray:
    """Boolean grid: is each point on the same side of all three edges?"""

    def side(p, q):
        return (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1])

    d1, d2, d3 = side(a, b), side(b, c), side(c, a)
    has_neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    has_pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(has_neg & has_pos)


def frame_times(config: SyntheticConfig) -> np.ndarray:
    """Time (seconds) that each frame shows: the centre of its slice of the clip. ``(T,)``"""
    return (np.arange(config.num_frames) + 0.5) * config.duration_s / config.num_frames


def render_video(events: Sequence[Event], config: SyntheticConfig, rng: np.random.Generator) -> torch.Tensor:
    """Draw every frame of a clip. Returns ``(T, 3, H, W)`` uint8."""
    size = config.image_size
    frames = np.empty((config.num_frames, size, size, 3), dtype=np.float32)  # (T, H, W, 3)
    background = np.array(BACKGROUND_RGB, dtype=np.float32)
    for t_index, t in enumerate(frame_times(config)):
        frame = np.broadcast_to(background, (size, size, 3)).copy()  # (H, W, 3)
        for event in events:
            if not event.is_active(t):
                continue
            mask = shape_mask(event.shape, event.position_at(t), event.size, size)[..., None]  # (H, W, 1)
            colour = np.array(COLOURS[event.colour], dtype=np.float32)
            frame = frame * (1.0 - mask) + colour * mask
        frames[t_index] = frame
    frames += rng.normal(0.0, config.pixel_noise_std, size=frames.shape).astype(np.float32)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


# --------------------------------------------------------------------------- #
# Synthesising sound
# --------------------------------------------------------------------------- #


def synthesize_note(
    instrument: str, frequency: float, duration_s: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One note of ``instrument`` at ``frequency`` Hz. Returns ``(N,)`` float32, peak 1."""
    n = max(int(round(duration_s * sample_rate)), 1)
    t = np.arange(n) / sample_rate  # (N,) seconds
    if instrument == "acoustic guitar":
        wave = _karplus_strong(frequency, n, sample_rate, rng)
    elif instrument == "flute":
        vibrato = 1.0 + 0.006 * np.sin(2 * np.pi * 5.0 * t)  # 5 Hz, +-0.6 %
        phase = 2 * np.pi * frequency * np.cumsum(vibrato) / sample_rate
        breath = rng.normal(0.0, 1.0, n)
        breath = np.convolve(breath, np.ones(8) / 8, mode="same")  # soft, low-passed hiss
        wave = np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.05 * breath
        wave *= np.minimum(t / 0.06, 1.0)  # 60 ms attack: a flute breathes in
    elif instrument == "drum":
        # a tom: a sine that falls from 1.5x to 1x its pitch, plus a noise burst
        glide = frequency * (1.0 + 0.5 * np.exp(-t / 0.02))
        phase = 2 * np.pi * np.cumsum(glide) / sample_rate
        body = np.sin(phase) * np.exp(-t / 0.18)
        noise = rng.normal(0.0, 1.0, n) * np.exp(-t / 0.025)
        wave = body + 0.35 * noise
    elif instrument == "piano":
        wave = np.zeros(n)
        for k in range(1, 7):  # six slightly stretched harmonics, higher ones die faster
            partial = k * frequency * (1.0 + 0.0004 * k * k)
            if partial >= sample_rate / 2:
                break
            wave += (1.0 / k) * np.sin(2 * np.pi * partial * t) * np.exp(-t * (1.2 + 0.9 * k))
        wave *= np.minimum(t / 0.004, 1.0)  # hammer: 4 ms attack
    else:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    release = min(n, int(0.01 * sample_rate))  # 10 ms fade-out: no click at the end
    if release > 1:
        wave[-release:] *= np.linspace(1.0, 0.0, release)
    peak = np.max(np.abs(wave))
    return (wave / peak if peak > 0 else wave).astype(np.float32)


def _karplus_strong(frequency: float, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A plucked string: a burst of noise circulating in a delay line that averages (damps) itself.

    ``y[i] = decay * (y[i - p] + y[i - p - 1]) / 2`` with period ``p = sample_rate / frequency``.
    Both taps lie at least ``p`` samples back, so a whole period is computed at once.
    """
    period = max(int(round(sample_rate / frequency)), 2)
    decay = 0.996
    y = np.zeros(n + period + 1)
    # the pluck: one period of a sine (a clear pitch) plus a little noise (the twang)
    pluck = np.sin(2 * np.pi * np.arange(period + 1) / period) + 0.5 * rng.uniform(-1.0, 1.0, period + 1)
    y[: period + 1] = pluck - pluck.mean()
    for start in range(period + 1, n + period + 1, period):
        stop = min(start + period, n + period + 1)
        y[start:stop] = decay * 0.5 * (y[start - period : stop - period] + y[start - period - 1 : stop - period - 1])
    wave = y[period + 1 : period + 1 + n]
    # DC decays slowest in this loop; subtracting a one-period moving average removes
    # it (and any drift) while leaving the note and its harmonics untouched
    drift = np.convolve(wave, np.ones(period) / period, mode="same")
    return wave - drift


def render_audio(events: Sequence[Event], config: SyntheticConfig, rng: np.random.Generator) -> torch.Tensor:
    """Mix the notes of all events into one waveform. Returns ``(N,)`` float32."""
    audio = np.zeros(config.num_samples, dtype=np.float64)
    for event in events:
        start = int(round(event.start_s * config.sample_rate))
        stop = min(int(round(event.end_s * config.sample_rate)), config.num_samples)
        note = synthesize_note(
            event.instrument, PITCHES[event.pitch], (stop - start) / config.sample_rate, config.sample_rate, rng
        )
        gain = rng.uniform(0.5, 0.85)  # loudness varies from clip to clip
        audio[start:stop] += gain * note[: stop - start]
    audio += rng.normal(0.0, config.audio_noise_std, audio.shape)
    return torch.from_numpy(np.clip(audio, -1.0, 1.0).astype(np.float32))


# --------------------------------------------------------------------------- #
# Sampling events and clips
# --------------------------------------------------------------------------- #


def random_event(rng: np.random.Generator, start_s: float, end_s: float, **fixed: str) -> Event:
    """Draw an event with random attributes, except those given in ``fixed``."""
    shape = fixed.get("shape") or str(rng.choice(SHAPES))
    colour = fixed.get("colour") or str(rng.choice(list(COLOURS)))
    motion = fixed.get("motion") or str(rng.choice(MOTIONS))
    instrument = fixed.get("instrument") or str(rng.choice(INSTRUMENTS))
    pitch = fixed.get("pitch") or str(rng.choice(list(PITCHES)))
    size = float(rng.uniform(0.10, 0.14))
    dx, dy = MOTION_DIRECTIONS[motion]

    # start where the whole path stays inside the frame
    def start_coordinate(direction: float) -> float:
        if direction > 0:
            return float(rng.uniform(0.2, 0.35))
        if direction < 0:
            return float(rng.uniform(0.65, 0.8))
        return float(rng.uniform(0.3, 0.7))

    start_xy = (start_coordinate(dx), start_coordinate(dy))
    return Event(shape, colour, motion, instrument, pitch, start_s, end_s, start_xy, size)


def random_events(rng: np.random.Generator, config: SyntheticConfig, two_events: bool) -> tuple[Event, ...]:
    """One event over the whole clip, or two events that split it in half.

    The two events of a clip always differ in instrument and in (shape, colour),
    so "the red circle" and "the flute" each name exactly one event.
    """
    if not two_events:
        return (random_event(rng, 0.0, config.duration_s),)
    middle = config.duration_s / 2
    first = random_event(rng, 0.0, middle)
    while True:
        second = random_event(rng, middle, config.duration_s)
        if second.instrument != first.instrument and (second.shape, second.colour) != (first.shape, first.colour):
            return first, second


def make_clip(
    seed: int | Sequence[int],
    config: SyntheticConfig | None = None,
    two_events: bool = False,
    clip_id: str | None = None,
) -> SyntheticClip:
    """Render one clip, fully determined by ``seed`` (an int or a sequence of ints)."""
    config = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    events = random_events(rng, config, two_events)
    video = render_video(events, config, rng)
    audio = render_audio(events, config, rng)
    if clip_id is None:
        clip_id = "clip-" + "-".join(str(s) for s in np.atleast_1d(seed))
    return SyntheticClip(clip_id, video, audio, events, config.sample_rate, config.fps)


def make_sample(
    seed: int | Sequence[int],
    question_type: str,
    config: SyntheticConfig | None = None,
    num_turns: int = 1,
    sample_id: str | None = None,
    follow_up_types: Sequence[str] | None = None,
    false_claim_attributes: Sequence[str] | None = None,
) -> SyntheticSample:
    """A clip and a conversation of up to ``num_turns`` questions about it.

    The first question is of ``question_type``. Without ``follow_up_types``
    the others are of the same type (``num_turns`` in all). With them, each
    later turn asks a type from ``follow_up_types`` that the clip can answer
    (``time`` needs a two-event clip, the other one-event types a one-event
    clip; ``caption`` fits both) and that was not asked yet, in random order;
    the conversation ends early when no such type is left. Training on such
    conversations gives several answers per rendered clip; the sample's
    ``question_type`` stays the first question's, which evaluation scores.
    ``time`` may follow a first ``time`` question, once: it asks about the
    *other* event (what was said about the first one does not answer it), and
    it comes before a caption, which would. Keep ``both`` and ``check`` out of
    ``follow_up_types``: an earlier answer ("The square is yellow.") would give
    them away. ``false_claim_attributes`` (default :data:`FALSE_CLAIM_ATTRIBUTES`)
    is passed on to :func:`ask`.
    """
    for t in [question_type, *(follow_up_types or ())]:
        if t not in ALL_QUESTION_TYPES + AUDIO_OUT_TYPES:
            raise ValueError(f"unknown question type {t!r}; expected one of {ALL_QUESTION_TYPES + AUDIO_OUT_TYPES}")
    if num_turns < 1:
        raise ValueError(f"num_turns must be at least 1 (got {num_turns})")
    seed_seq = list(np.atleast_1d(seed))
    two_events = question_type == "time"
    clip = make_clip(seed_seq, config, two_events=two_events, clip_id=sample_id)
    rng = np.random.default_rng(seed_seq + [7919])  # questions get their own stream
    asked = [question_type]
    if follow_up_types is None:
        asked += [question_type] * (num_turns - 1)
    else:
        fitting = [t for t in dict.fromkeys(follow_up_types) if t == CAPTION_TYPE or (t == "time") == two_events]
        fresh = [t for t in fitting if t != question_type]
        order = rng.permutation(len(fresh)) if fresh else []
        other_event = ["time"] if two_events and "time" in fitting else []  # first: a caption would answer it
        asked += (other_event + [fresh[int(k)] for k in order])[: num_turns - 1]
    about: dict[int, int] = {}  # turn -> the event its time question asks about (else ask() draws one)
    if two_events and follow_up_types is not None:
        first_event = int(rng.random() >= 0.5)  # the draw ask() would make, so the first turn is unchanged
        about = {0: first_event, 1: 1 - first_event}
    turns: list[dict[str, str]] = []
    for turn, asked_type in enumerate(asked):
        event = about.get(turn) if asked_type == "time" else None
        question, answer = ask(clip.events, asked_type, rng, false_claim_attributes, about=event)
        if turn == 0:
            question = AV_PROMPT + question
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return SyntheticSample(clip, question_type, turns)


# --------------------------------------------------------------------------- #
# Words: questions, answers, captions
# --------------------------------------------------------------------------- #


def article(noun_phrase: str) -> str:
    """'a flute', 'an acoustic guitar'."""
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


#: motion -> how a statement says it ("moves to the left") and how a check question does ("moving to the left").
MOTION_PHRASES: dict[str, tuple[str, str]] = {
    "left": ("moves to the left", "moving to the left"),
    "right": ("moves to the right", "moving to the right"),
    "up": ("moves up", "moving up"),
    "down": ("moves down", "moving down"),
    "still": ("stays still", "still"),
}


def motion_phrase(motion: str) -> str:
    """How a sentence says a motion: 'moves to the left', 'stays still'."""
    return MOTION_PHRASES[motion][0]


def moving_phrase(motion: str) -> str:
    """How a check question says a motion: 'moving to the left', 'still'."""
    return MOTION_PHRASES[motion][1]


def describe(events: Sequence[Event]) -> str:
    """A caption: 'A red circle moves to the left while a flute plays a low note.'"""

    def clause(e: Event) -> str:
        return f"{article(e.colour + ' ' + e.shape)} {motion_phrase(e.motion)} while {article(e.instrument)} plays {article(e.pitch)} note"

    if len(events) == 1:
        text = clause(events[0])
        return text[0].upper() + text[1:] + "."
    return "First " + clause(events[0]) + ", then " + clause(events[1]) + "."


# Paraphrases of each question. Answers have one fixed form each, so that
# "exact match" is a fair score for a small model.
SHAPE_QUESTIONS = ("What shape is on screen?", "Which shape do you see?", "What shape is shown in the video?")
COLOUR_QUESTIONS = ("What colour is the {shape}?", "What colour is the shape?", "Which colour does the {shape} have?")
MOTION_QUESTIONS = (
    "Which way is the {shape} moving?",
    "In which direction does the {colour} {shape} move?",
    "How does the {shape} move?",
)
INSTRUMENT_QUESTIONS = ("What instrument is playing?", "Which instrument do you hear?", "What is making the sound?")
PITCH_QUESTIONS = (
    "Is the note high or low?",
    "Is the sound high or low in pitch?",
    "Do you hear a high or a low note?",
)
BOTH_QUESTIONS = (
    "Is the {instrument} playing while the {colour} {shape} {motion}?",
    "Do you hear {a_instrument} while the {colour} {shape} {motion}?",
)
TIME_INSTRUMENT_QUESTIONS = (
    "Which instrument plays while the {colour} {shape} is on screen?",
    "What do you hear while the {colour} {shape} is shown?",
)
TIME_SHAPE_QUESTIONS = (
    "Which shape is on screen while the {instrument} plays?",
    "What do you see while the {instrument} is playing?",
)
#: The attributes a "both" claim names, any of which a false claim may change.
CLAIM_ATTRIBUTES = ("instrument", "colour", "shape", "motion")
#: Which attribute a false "both" claim changes, drawn uniformly from this tuple: half the time the
#: one heard (the instrument), half the time one of the three seen.
FALSE_CLAIM_ATTRIBUTES = ("instrument", "instrument", "colour", "shape", "motion")
CAPTION_QUESTIONS = ("Describe what you see and hear.", "What happens in this clip?", "Describe the clip.")
#: One-attribute checks, worded with the words the questions above already use (so the tokenizer,
#: and with it the toy vocabulary, stays the same).
CHECK_QUESTIONS = {
    "instrument": ("Is the {instrument} playing?", "Do you hear {a_instrument}?"),
    "colour": ("Is the shape {colour}?",),
    "shape": ("Is the shape {a_shape}?",),
    "motion": ("Is the shape {moving}?",),
}
#: The values each claimed attribute can take (what a false claim or check picks another value from).
CLAIM_VALUES: dict[str, tuple[str, ...]] = {
    "instrument": INSTRUMENTS, "colour": tuple(COLOURS), "shape": SHAPES, "motion": MOTIONS,
}


def instrument_answer(instrument: str) -> str:
    return f"That is {article(instrument)}."


PLAY_TEXT_QUESTIONS = ("Play {a_pitch} {instrument} note.", "Play {a_pitch} note on the {instrument}.")
PLAY_HEARD_QUESTIONS = ("Play what you hear.", "Play the note you hear.")
PLAY_SHIFTED_QUESTIONS = ("Play the instrument you hear, but {direction}.", "Play the {direction} note of the instrument you hear.")
PLAY_SHAPE_QUESTIONS = ("Play the sound of the shape you see.", "Play the note of the shape on screen.")


def audio_out_target(events: Sequence[Event], question_type: str, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """``(request, target)`` of an audio-output type: ``target`` is ``{"instrument", "pitch"}`` of the note to play."""
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    if len(events) != 1:
        raise ValueError(f"{question_type} requests need a one-event clip")
    e = events[0]
    if question_type == "play_text":
        instrument, pitch = pick(INSTRUMENTS), pick(tuple(PITCHES))
        request = pick(PLAY_TEXT_QUESTIONS).format(
            a_pitch=article(pitch), pitch=pitch, instrument=instrument, a_instrument=article(instrument))
        return request, {"instrument": instrument, "pitch": pitch}
    if question_type == "play_heard":
        return pick(PLAY_HEARD_QUESTIONS), {"instrument": e.instrument, "pitch": e.pitch}
    if question_type == "play_shifted":
        higher = e.pitch == "low"  # "higher" only of the low note: the world has one note above it
        request = pick(PLAY_SHIFTED_QUESTIONS).format(direction="higher" if higher else "lower")
        return request, {"instrument": e.instrument, "pitch": "high" if higher else "low"}
    if question_type == "play_shape":
        return pick(PLAY_SHAPE_QUESTIONS), {"instrument": SHAPE_INSTRUMENTS[e.shape], "pitch": COLOUR_PITCHES[e.colour]}
    raise ValueError(f"unknown audio-output type {question_type!r}; expected one of {AUDIO_OUT_TYPES}")


def ask(
    events: Sequence[Event],
    question_type: str,
    rng: np.random.Generator,
    false_claim_attributes: Sequence[str] | None = None,
    about: int | None = None,
) -> tuple[str, str]:
    """One (question, answer) pair of ``question_type`` about ``events``.

    A false ``both`` claim changes one attribute drawn uniformly from ``false_claim_attributes``
    (default :data:`FALSE_CLAIM_ATTRIBUTES`, the task's distribution; training may choose another).
    A ``time`` question asks about event ``about`` (0 or 1), or one drawn at random.
    """
    false_claim_attributes = tuple(false_claim_attributes or FALSE_CLAIM_ATTRIBUTES)
    unknown = set(false_claim_attributes) - set(CLAIM_ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown false-claim attributes {sorted(unknown)}; choose from {', '.join(CLAIM_ATTRIBUTES)}")

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    if question_type == CAPTION_TYPE:
        return pick(CAPTION_QUESTIONS), describe(events)
    if question_type in AUDIO_OUT_TYPES:  # answered with a sound: the codec's codes of the target note
        from mimo_lib.audio_output import audio_answer  # lazily: the codec is only needed for these types

        request, target = audio_out_target(events, question_type, rng)
        return request, audio_answer(target["instrument"], target["pitch"])
    if question_type == "time":
        if len(events) != 2:
            raise ValueError("time questions need a two-event clip")
        if about is None:
            about = int(rng.random() >= 0.5)
        if about not in (0, 1):
            raise ValueError(f"a time question asks about event 0 or 1 (got {about!r})")
        asked = events[about]
        if rng.random() < 0.5:
            question = pick(TIME_INSTRUMENT_QUESTIONS).format(colour=asked.colour, shape=asked.shape)
            return question, instrument_answer(asked.instrument)
        question = pick(TIME_SHAPE_QUESTIONS).format(instrument=asked.instrument)
        return question, f"It is {article(asked.colour + ' ' + asked.shape)}."
    if len(events) != 1:
        raise ValueError(f"{question_type} questions need a one-event clip")
    e = events[0]
    if question_type == "vision":
        if rng.random() < 0.5:
            return pick(SHAPE_QUESTIONS), f"It is {article(e.shape)}."
        return pick(COLOUR_QUESTIONS).format(shape=e.shape), f"The {e.shape} is {e.colour}."
    if question_type == "motion":
        question = pick(MOTION_QUESTIONS).format(shape=e.shape, colour=e.colour)
        return question, f"It {motion_phrase(e.motion)}."
    if question_type == "audio":
        if rng.random() < 0.5:
            return pick(INSTRUMENT_QUESTIONS), instrument_answer(e.instrument)
        return pick(PITCH_QUESTIONS), f"The note is {e.pitch}."
    if question_type == CHECK_TYPE:
        # One attribute, drawn uniformly; half the time the true value, otherwise another one.
        attribute = pick(CLAIM_ATTRIBUTES)
        truth = getattr(e, attribute)
        truthful = rng.random() < 0.5
        value = truth if truthful else pick([v for v in CLAIM_VALUES[attribute] if v != truth])
        question = pick(CHECK_QUESTIONS[attribute]).format(
            instrument=value, a_instrument=article(value), colour=value, a_shape=article(value),
            moving=moving_phrase(value) if attribute == "motion" else value,
        )
        return question, "Yes." if truthful else "No."
    if question_type == "both":
        # Half the time ask about what really happens; otherwise change exactly
        # one attribute, either one that is seen or the one that is heard.
        claim = {"instrument": e.instrument, "colour": e.colour, "shape": e.shape, "motion": e.motion}
        truthful = rng.random() < 0.5
        if not truthful:
            attribute = pick(false_claim_attributes)
            claim[attribute] = pick([v for v in CLAIM_VALUES[attribute] if v != claim[attribute]])
        question = pick(BOTH_QUESTIONS).format(
            instrument=claim["instrument"],
            a_instrument=article(claim["instrument"]),
            colour=claim["colour"],
            shape=claim["shape"],
            motion=motion_phrase(claim["motion"]),
        )
        return question, "Yes." if truthful else "No."
    raise ValueError(f"unknown question type {question_type!r}")


def vocabulary_corpus() -> list[str]:
    """Every sentence the generator can say, plus the chat template's words.

    ``Tokenizer.default()`` learns its word pieces from this list, so every
    word of the synthetic task is a single token.
    """
    texts = ["User:", "Assistant:", "Yes.", "No.", " User: Assistant:"]
    texts += list(SHAPE_QUESTIONS + INSTRUMENT_QUESTIONS + PITCH_QUESTIONS + CAPTION_QUESTIONS)
    for shape in SHAPES:
        texts.append(f"It is {article(shape)}.")
        for colour in COLOURS:
            texts += [t.format(shape=shape) for t in COLOUR_QUESTIONS]
            texts.append(f"The {shape} is {colour}.")
            texts.append(f"It is {article(colour + ' ' + shape)}.")
            texts += [t.format(shape=shape, colour=colour) for t in MOTION_QUESTIONS + TIME_INSTRUMENT_QUESTIONS]
            for motion in MOTIONS:
                for instrument in INSTRUMENTS:
                    for pitch in PITCHES:
                        event = Event(shape, colour, motion, instrument, pitch, 0.0, 1.0)
                        texts.append(describe([event]))
                    texts += [
                        t.format(
                            instrument=instrument,
                            a_instrument=article(instrument),
                            colour=colour,
                            shape=shape,
                            motion=motion_phrase(motion),
                        )
                        for t in BOTH_QUESTIONS
                    ]
    texts += [describe([Event("circle", "red", "left", "flute", "low", 0, 1)] * 2)]
    for motion in MOTIONS:
        texts.append(f"It {motion_phrase(motion)}.")
    for instrument in INSTRUMENTS:
        texts.append(instrument_answer(instrument))
        texts += [t.format(instrument=instrument) for t in TIME_SHAPE_QUESTIONS]
    for pitch in PITCHES:
        texts.append(f"The note is {pitch}.")
    # The chat template puts a space before every answer and before follow-up
    # questions ("Assistant: That ...", "User: In ..."), and a lone space and
    # newlines around the placeholders: learn those pieces too.
    texts += [" " + text for text in texts]
    texts += ["User: ", "What?\nAssistant: Yes.\nUser: What?"]
    return texts


def dominant_frequency(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest peak in the magnitude spectrum of ``waveform`` ``(N,)``."""
    x = np.asarray(waveform, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0  # ignore DC
    return float(np.argmax(spectrum) * sample_rate / len(x))


__all__ = [
    "ALL_QUESTION_TYPES",
    "AUDIO_OUT_TYPES",
    "CAPTION_TYPE",
    "COLOUR_PITCHES",
    "SHAPE_INSTRUMENTS",
    "audio_out_target",
    "CLAIM_VALUES",
    "CHECK_QUESTIONS",
    "CHECK_TYPE",
    "COLOURS",
    "INSTRUMENTS",
    "MOTIONS",
    "MOTION_PHRASES",
    "PITCHES",
    "QUESTION_TYPES",
    "SHAPES",
    "Event",
    "SyntheticClip",
    "SyntheticConfig",
    "SyntheticSample",
    "ask",
    "describe",
    "dominant_frequency",
    "make_clip",
    "make_sample",
    "render_audio",
    "render_video",
    "shape_mask",
    "synthesize_note",
    "synthetic_config_for",
    "vocabulary_corpus",
]
