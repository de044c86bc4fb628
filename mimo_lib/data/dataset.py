"""Datasets of clips and conversations, and the collate function that batches them.

Two sources, one sample format:

* :class:`SyntheticAVDataset` renders clips on the fly from a seed (no files).
* :class:`AVFolderDataset` reads a folder of media files plus a
  ``conversations.jsonl`` in the LLaVA conversation schema — the format that
  LLaVA, Video-LLaVA and audio-visual instruction sets already use::

      {"id": "clip-01", "video": "clip-01.mp4",
       "conversations": [{"from": "human", "value": "<video>\\n<audio>\\nWhat instrument is playing?"},
                         {"from": "gpt", "value": "That is an acoustic guitar."}]}

  ``"audio"`` may name a separate wav/flac file; without it, ``<audio>`` takes
  the video's own audio track. A single JSON array (``conversations.json``)
  works too. Optional ``"question_type"`` is kept for per-type evaluation.

  **Both senses see the same time window** of each file: ``clip_duration_s``
  seconds, from 0 s or centred on the clip (``clip_window``), frames spread
  over the window and audio cut to it, padded alike (black frames, silence)
  where the window runs past the file; see :func:`mimo_lib.data.media.read_clip`.
  Without ``clip_duration_s`` both senses get the whole file.

Every sample is a dict::

    {"id": str, "video": (T, 3, H, W) uint8 or None, "audio": (N,) float32 or None,
     "conversations": [...], "question_type": str or None,
     "input_ids": (L,) int64, "labels": (L,) int64}     # the last two only with a tokenizer

Problems in the annotation file are found when the dataset is built, before
any training starts, and every error names the file, the line and the sample.
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from mimo_lib.constants import PAD_TOKEN_ID
from mimo_lib.data.conversation import IGNORE_INDEX, encode_conversation, validate_turns
from mimo_lib.data.media import DEFAULT_SAMPLE_RATE, read_audio, read_clip, read_video_frames
from mimo_lib.data.synthetic import QUESTION_TYPES, SyntheticConfig, make_sample
from mimo_lib.errors import DatasetFormatError, MediaError
from mimo_lib.tokenizer import Tokenizer

ANNOTATION_FILES = ("conversations.jsonl", "conversations.json")
#: The keys a record may have; any other is warned about (and ignored).
RECORD_KEYS = ("id", "video", "audio", "conversations", "question_type")
VIDEO_PLACEHOLDER = "<video>"
AUDIO_PLACEHOLDER = "<audio>"
IMAGE_PLACEHOLDER = "<image>"


# --------------------------------------------------------------------------- #
# Reading and checking the annotation file
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class AnnotatedSample:
    """One checked record of an annotation file."""

    sample_id: str
    conversations: list[dict[str, str]]
    video_path: Path | None  # the video file, if the record names one
    audio_path: Path | None  # a separate audio file, if the record names one
    question_type: str | None
    where: str  # "conversations.jsonl:4 (id 'clip-03')": used in every error about it

    @property
    def wants_audio(self) -> bool:
        """True when the conversation has an ``<audio>`` placeholder."""
        return any(AUDIO_PLACEHOLDER in t["value"] for t in self.conversations)

    @property
    def wants_video(self) -> bool:
        return any(VIDEO_PLACEHOLDER in t["value"] for t in self.conversations)


def find_annotation_file(data_path: str | Path) -> Path:
    """The annotation file for ``--data-path``: the path itself, or the one inside the folder."""
    path = Path(data_path)
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".json"):
            raise DatasetFormatError(
                f"data path {path} is a {path.suffix or 'suffix-less'} file, not an annotation file: pass the "
                f"folder holding {' or '.join(ANNOTATION_FILES)} (or that file itself)"
            )
        return path
    if not path.exists():
        raise DatasetFormatError(
            f"data path {path} does not exist: pass a folder with conversations.jsonl, or 'synthetic'"
        )
    for name in ANNOTATION_FILES:
        if (path / name).is_file():
            return path / name
    raise DatasetFormatError(
        f"no annotation file in {path}: expected one of {', '.join(ANNOTATION_FILES)} "
        "(see README, 'Bring your own clips')"
    )


def read_annotation_text(annotation_file: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark; any other encoding is a clear error."""
    data = annotation_file.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetFormatError(
            f"{annotation_file}: is UTF-16 encoded; save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"
        )
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark (Windows editors write one) is dropped
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetFormatError(
            f"{annotation_file}:{line}: is not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); it "
            "looks like Latin-1 or another legacy encoding: save it as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)"
        ) from None


def _parse_json(text: str, where: str, expected: str, one_line: bool = False) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        place = f"{where}: line is" if one_line else f"{where}:{error.lineno}:"
        raise DatasetFormatError(f"{place} not valid JSON ({error.msg}); {expected}") from None
    except RecursionError:
        raise DatasetFormatError(f"{where}: JSON nested too deeply to be a sample; {expected}") from None


def _read_records(annotation_file: Path) -> list[tuple[str, Any]]:
    """``(where, record)`` pairs; ``where`` is ``"file:line"`` for jsonl, ``"file[i]"`` for a JSON array."""
    text = read_annotation_text(annotation_file)
    stripped = text.lstrip()
    if annotation_file.suffix == ".json" or stripped.startswith("["):
        records = _parse_json(text, str(annotation_file), "expected a JSON array of samples")
        if not isinstance(records, list):
            raise DatasetFormatError(
                f"{annotation_file}: expected a JSON array of samples, got {type(records).__name__}"
            )
        return [(f"{annotation_file.name}[{i}]", r) for i, r in enumerate(records)]
    pairs = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are harmless
        record = _parse_json(
            line, f"{annotation_file}:{line_number}", "each line of a .jsonl file must be one JSON object", one_line=True
        )
        pairs.append((f"{annotation_file.name}:{line_number}", record))
    return pairs


def _media_path(value: Any, key: str, root: Path, where: str) -> Path:
    """The file a record names. Relative paths start at the annotation file's folder and may leave it
    (``../media/x.mp4``), as absolute paths may: the annotation file is trusted to name the files to read."""
    if isinstance(value, list):
        if len(value) != 1:
            raise DatasetFormatError(f"{where}: {len(value)} {key} files given; one {key} per sample is supported")
        value = value[0]
    if not isinstance(value, str) or not value:
        raise DatasetFormatError(f"{where}: '{key}' must be a file name (string), got {value!r}")
    path = Path(value) if Path(value).is_absolute() else root / value
    if not path.is_file():
        raise MediaError(f"{where}: {key} file {path} not found; check the path (relative to {root})")
    return path


def _sample_id(record: dict, where: str) -> str:
    """A record's id: a non-empty string or an integer (``null``, booleans, lists ... are refused)."""
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
        raise DatasetFormatError(f"{where}: 'id' must be a non-empty string or an integer, got {json.dumps(value)}")
    return str(value)


def _warn_unknown_keys(unknown: dict[str, list[str]], annotation_file: Path) -> None:
    """One warning per unknown key (a typo such as ``"audios"`` would otherwise be ignored without a word)."""
    for key, places in unknown.items():
        warnings.warn(
            f"{annotation_file}: unknown key {key!r} in {len(places)} sample(s) (first at {places[0]}) is ignored; "
            f"known keys: {', '.join(RECORD_KEYS)}",
            UserWarning,
            stacklevel=3,
        )


def load_annotations(data_path: str | Path) -> list[AnnotatedSample]:
    """Read and check every record of a dataset's annotation file.

    Checks, each with an error naming the line: UTF-8 text (a byte-order mark
    is fine); valid JSON; an object with ``id`` (a non-empty string or an
    integer) and ``conversations``; turns alternating human/gpt and ending on
    an answer; media files exist; no more ``<video>``/``<audio>`` placeholders
    than media to fill them; media given without a placeholder; unique ids.
    Unknown keys are warned about. Media paths are relative to the annotation
    file's folder (``../`` may leave it) or absolute.
    """
    annotation_file = find_annotation_file(data_path)
    root = annotation_file.parent
    samples: list[AnnotatedSample] = []
    seen: dict[str, str] = {}
    unknown: dict[str, list[str]] = {}
    for where, record in _read_records(annotation_file):
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{where}: each sample must be a JSON object, got {type(record).__name__}")
        for key in ("id", "conversations"):
            if key not in record:
                raise DatasetFormatError(f"{where}: sample is missing the required field '{key}'")
        sample_id = _sample_id(record, where)
        where = f"{where} (id {sample_id!r})"
        for key in record:
            if key not in RECORD_KEYS and key != "image":
                unknown.setdefault(str(key), []).append(where)
        if sample_id in seen:
            raise DatasetFormatError(f"{where}: duplicate id, first used at {seen[sample_id]}")
        seen[sample_id] = where
        try:
            validate_turns(record["conversations"], where)
        except ValueError as error:
            raise DatasetFormatError(str(error)) from None
        turns = record["conversations"]
        if len(turns) % 2:
            raise DatasetFormatError(
                f"{where}: the conversation ends on a human turn; every question needs its answer (a 'gpt' turn) "
                "to train on; add the answer or remove the last question"
            )
        if any(VIDEO_PLACEHOLDER in t["value"] or AUDIO_PLACEHOLDER in t["value"] for t in turns if t["from"] == "gpt"):
            raise DatasetFormatError(f"{where}: placeholders belong in human turns, not in the answer")
        if any(IMAGE_PLACEHOLDER in t["value"] for t in turns) or "image" in record:
            raise DatasetFormatError(
                f"{where}: image samples are not supported; store the image as a one-frame video and use <video>"
            )
        video_path = _media_path(record["video"], "video", root, where) if record.get("video") is not None else None
        audio_path = _media_path(record["audio"], "audio", root, where) if record.get("audio") is not None else None

        num_video = sum(t["value"].count(VIDEO_PLACEHOLDER) for t in turns)
        num_audio = sum(t["value"].count(AUDIO_PLACEHOLDER) for t in turns)
        available_video = 1 if video_path else 0
        available_audio = 1 if (audio_path or video_path) else 0  # a video brings its own audio track
        if num_video > available_video or num_audio > available_audio:
            raise DatasetFormatError(
                f"{where}: more placeholders than media: {num_video} <video> for {available_video} video file(s), "
                f"{num_audio} <audio> for {available_audio} audio source(s); "
                "remove the extra placeholders or add the media"
            )
        if video_path and num_video == 0:
            raise DatasetFormatError(
                f"{where}: a video is given but no turn has a <video> placeholder; add '<video>\\n' to the first question"
            )
        if audio_path and num_audio == 0:
            raise DatasetFormatError(
                f"{where}: an audio file is given but no turn has an <audio> placeholder; add '<audio>\\n' to the first question"
            )
        question_type = record.get("question_type")
        samples.append(
            AnnotatedSample(
                sample_id, turns, video_path, audio_path, None if question_type is None else str(question_type), where
            )
        )
    if not samples:
        raise DatasetFormatError(f"{annotation_file}: no samples found")
    _warn_unknown_keys(unknown, annotation_file)
    return samples


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #


def fit_audio_length(audio: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Crop or zero-pad ``(N,)`` audio at the end to exactly ``num_samples``: the audio tower's rule
    (:func:`mimo_lib.audio_tower.fit_waveform`), for one clip."""
    from mimo_lib.audio_tower import fit_waveform  # the rule lives with the tower that reads the audio

    return fit_waveform(audio, num_samples)[0]  # (num_samples,)


def _with_tokens(sample: dict, tokenizer: Tokenizer | None) -> dict:
    if tokenizer is not None:
        input_ids, labels = encode_conversation(tokenizer, sample["conversations"])
        sample["input_ids"] = torch.tensor(input_ids, dtype=torch.long)  # (L,)
        sample["labels"] = torch.tensor(labels, dtype=torch.long)  # (L,)
    return sample


class AVFolderDataset(Dataset):
    """Clips and conversations from a folder (or an annotation file) on disk.

    Args:
        data_path: folder holding ``conversations.jsonl`` (or ``.json``) and the media, or the file itself.
        num_frames: frames sampled uniformly over each clip's time window.
        image_size: frames become ``image_size x image_size`` (shorter side resized, then centre-cropped) so batches stack (None keeps them).
        sample_rate: audio is converted to mono at this rate.
        clip_duration_s: the time window both senses read, in seconds (the model's ``audio.clip_duration_s``);
            None: the whole file (frames over all of it, all its audio), for looking at data, not for a model.
        clip_window: where the window starts: ``"start"`` (0 s) or ``"center"`` (``MIMOConfig.clip_window``).
        tokenizer: if given, samples carry ``input_ids`` and ``labels``.
        allow_missing_audio: a video without an audio track gives silence (with a warning) instead of an error.

    Frames are resized so that their shorter side is ``image_size`` and then centre-cropped to a square
    (CLIP's preprocessing), so a 4:3 or a portrait clip keeps its proportions; a phone video's rotation
    metadata is applied first (see :func:`mimo_lib.data.media.read_video_frames`).
    """

    def __init__(
        self,
        data_path: str | Path,
        num_frames: int = 8,
        image_size: int | None = 64,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        clip_duration_s: float | None = None,
        tokenizer: Tokenizer | None = None,
        allow_missing_audio: bool = False,
        clip_window: str = "start",
    ) -> None:
        self.annotations = load_annotations(data_path)
        self.num_frames = num_frames
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.clip_duration_s = clip_duration_s
        self.clip_window = clip_window
        self.tokenizer = tokenizer
        self.allow_missing_audio = allow_missing_audio

    def __len__(self) -> int:
        return len(self.annotations)

    def check_media(self, progress: bool = True) -> None:
        """Decode every sample's needed streams once, as training will, so that a broken clip fails now.

        A file with a readable header can still have no audio track, an empty one, a corrupt middle, or
        be an audio file named as a video: only decoding finds out. Every bad sample is collected, and
        one :class:`MediaError` lists them all (``progress``: a bar on stderr while decoding).
        """
        from tqdm.auto import tqdm

        problems = []
        for index in tqdm(range(len(self)), desc="checking media", unit="clip", disable=not progress, file=sys.stderr):
            try:
                self._read_media(self.annotations[index])
            except MediaError as error:
                problems.append(str(error))
        if problems:
            listing = "\n  ".join(problems)
            raise MediaError(
                f"{len(problems)} of {len(self)} samples have media that cannot be read; fix or remove them:\n  {listing}"
            )

    def _read_media(self, a: AnnotatedSample) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(video (T, 3, H, W) uint8 or None, audio (N,) float32 or None)`` of one sample, errors naming it."""
        video_path = a.video_path if a.wants_video else None
        audio_path = (a.audio_path or a.video_path) if a.wants_audio else None
        try:
            if self.clip_duration_s is not None:  # one time window for both senses
                return read_clip(
                    video_path, audio_path, self.num_frames, self.image_size, self.sample_rate,
                    self.clip_duration_s, self.clip_window, self.allow_missing_audio,
                )  # (T, 3, H, W) uint8 or None, (N,) float32 or None
            video = read_video_frames(video_path, self.num_frames, self.image_size) if video_path else None
            audio = (
                read_audio(audio_path, self.sample_rate, allow_missing_audio=self.allow_missing_audio)  # (N,)
                if audio_path
                else None
            )
        except MediaError as error:
            raise MediaError(f"{a.where}: {error}") from None
        return video, audio

    def __getitem__(self, index: int) -> dict:
        a = self.annotations[index]
        video, audio = self._read_media(a)
        sample = {
            "id": a.sample_id,
            "video": video,
            "audio": audio,
            "conversations": a.conversations,
            "question_type": a.question_type,
        }
        return _with_tokens(sample, self.tokenizer)


def split_dataset(dataset: Dataset, valid_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """``(train, valid)``: a random ``valid_fraction`` of the samples held out, the same for the same ``seed``.

    The split depends only on ``len(dataset)``, ``valid_fraction`` and ``seed``, so a resumed run and
    ``python -m mimo_lib.evaluate`` hold out the very samples the run held out. ``valid_fraction`` 0 gives
    ``(dataset, None)``; otherwise at least one sample goes to each side.
    """
    if isinstance(valid_fraction, bool) or not 0 <= valid_fraction < 1:
        raise DatasetFormatError(f"the validation fraction must be at least 0 and below 1, got {valid_fraction!r}")
    if valid_fraction == 0:
        return dataset, None
    n = len(dataset)
    num_valid = max(1, round(n * valid_fraction))
    if n - num_valid < 1:
        raise DatasetFormatError(
            f"cannot hold out {valid_fraction:g} of {n} sample(s) and keep one to train on; add samples or lower the fraction"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    valid = sorted(order[:num_valid])
    train = sorted(order[num_valid:])
    return Subset(dataset, train), Subset(dataset, valid)


class SyntheticAVDataset(Dataset):
    """``num_samples`` synthetic clips with conversations, rendered on demand.

    Sample ``i`` is a pure function of ``(seed, i)``; question types cycle
    through ``question_types`` so every type is equally common. With
    ``num_turns > 1`` each conversation asks more questions about its clip:
    of the same type, or, with ``follow_up_types``, of other types the clip
    can answer (see :func:`~mimo_lib.data.synthetic.make_sample`).
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        config: SyntheticConfig | None = None,
        question_types: Sequence[str] = QUESTION_TYPES,
        num_turns: int = 1,
        tokenizer: Tokenizer | None = None,
        follow_up_types: Sequence[str] | None = None,
        false_claim_attributes: Sequence[str] | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive (got {num_samples})")
        if not question_types:
            raise ValueError("question_types must name at least one type")
        self.num_samples = num_samples
        self.seed = seed
        self.config = config or SyntheticConfig()
        self.question_types = tuple(question_types)
        self.num_turns = num_turns
        self.tokenizer = tokenizer
        self.follow_up_types = None if follow_up_types is None else tuple(follow_up_types)
        self.false_claim_attributes = None if false_claim_attributes is None else tuple(false_claim_attributes)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        question_type = self.question_types[index % len(self.question_types)]
        s = make_sample(
            [self.seed, index], question_type, self.config, self.num_turns,
            sample_id=f"synthetic-{self.seed}-{index}", follow_up_types=self.follow_up_types,
            false_claim_attributes=self.false_claim_attributes,
        )
        sample = {
            "id": s.sample_id,
            "video": s.clip.video,  # (T, 3, H, W) uint8
            "audio": s.clip.audio,  # (N,) float32
            "conversations": s.conversations,
            "question_type": s.question_type,
            "events": s.clip.events,
        }
        return _with_tokens(sample, self.tokenizer)


# --------------------------------------------------------------------------- #
# Batching
# --------------------------------------------------------------------------- #


@dataclass
class Batch:
    """Samples stacked by :func:`collate_av_batch`: what the model, the loss and the evaluation read.

    A field a batch does not have is None (no sample has a video; samples without a tokenizer have no
    ``input_ids``), never missing. :class:`~mimo_lib.feature_cache.TowerFeatureCache` gives the same
    type with ``video_features`` / ``audio_features`` instead of ``video`` / ``audio``.
    """

    id: list[str]  # sample ids, for error messages and reports
    question_type: list[str | None]  # each sample's question type (None where the annotation has none)
    conversations: list[list[dict]]  # each sample's turns, LLaVA's {"from", "value"} dicts
    has_video: torch.Tensor  # (B,) bool: the sample has a video
    has_audio: torch.Tensor  # (B,) bool: the sample has audio
    video: torch.Tensor | None = None  # (B, T, 3, H, W) uint8, black where not has_video; None if no sample has one
    audio: torch.Tensor | None = None  # (B, N_max) float32, zero-padded on the right; None if no sample has audio
    input_ids: torch.Tensor | None = None  # (B, L_max) int64, right-padded with pad_id; None without a tokenizer
    labels: torch.Tensor | None = None  # (B, L_max) int64: answers only, IGNORE_INDEX elsewhere and on padding
    attention_mask: torch.Tensor | None = None  # (B, L_max) bool, True on real tokens
    video_features: torch.Tensor | None = None  # (B, Nv, Dv) vision tower outputs, used instead of video
    audio_features: torch.Tensor | None = None  # (B, Na, Da) audio tower outputs, used instead of audio

    def to(self, device: str | torch.device) -> Batch:
        """The same batch with every tensor on ``device`` (lists stay as they are)."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {name: value.to(device) for name, value in tensors.items() if isinstance(value, torch.Tensor)}
        return replace(self, **moved)


def check_same_video_shape(samples: Sequence[dict]) -> None:
    """Videos of one batch are stacked, so they must share ``(T, 3, H, W)``."""
    shapes = {tuple(s["video"].shape) for s in samples if s.get("video") is not None}
    if len(shapes) > 1:
        detail = ", ".join(f"{s['id']}: {tuple(s['video'].shape)}" for s in samples if s.get("video") is not None)
        raise DatasetFormatError(
            f"videos in one batch differ in shape ({detail}); "
            "set num_frames and image_size so every clip is resized alike"
        )


def collate_av_batch(samples: Sequence[dict], pad_id: int = PAD_TOKEN_ID) -> Batch:
    """Stack samples into a :class:`Batch`: videos stacked (black frames where a sample has none), audio
    zero-padded on the right to the longest clip, token ids right-padded with ``pad_id`` and labels with
    ``IGNORE_INDEX`` (when the samples are tokenized)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    check_same_video_shape(samples)
    B = len(samples)
    videos = [s.get("video") for s in samples]
    audios = [s.get("audio") for s in samples]
    batch = Batch(
        id=[s["id"] for s in samples],
        question_type=[s.get("question_type") for s in samples],
        conversations=[s["conversations"] for s in samples],
        has_video=torch.tensor([v is not None for v in videos]),  # (B,)
        has_audio=torch.tensor([a is not None for a in audios]),  # (B,)
    )

    if batch.has_video.any():
        shape = next(v.shape for v in videos if v is not None)  # (T, 3, H, W)
        batch.video = torch.stack([v if v is not None else torch.zeros(shape, dtype=torch.uint8) for v in videos])

    if batch.has_audio.any():
        longest = max(a.shape[0] for a in audios if a is not None)
        batch.audio = torch.zeros(B, longest, dtype=torch.float32)  # (B, N_max)
        for row, a in enumerate(audios):
            if a is not None:
                batch.audio[row, : a.shape[0]] = a

    if all("input_ids" in s for s in samples):
        max_len = max(s["input_ids"].shape[0] for s in samples)
        batch.input_ids = torch.full((B, max_len), pad_id, dtype=torch.long)  # (B, L)
        batch.labels = torch.full((B, max_len), IGNORE_INDEX, dtype=torch.long)  # (B, L)
        batch.attention_mask = torch.zeros(B, max_len, dtype=torch.bool)  # (B, L)
        for row, s in enumerate(samples):
            n = s["input_ids"].shape[0]
            batch.input_ids[row, :n] = s["input_ids"]
            batch.labels[row, :n] = s["labels"]
            batch.attention_mask[row, :n] = True
    return batch
