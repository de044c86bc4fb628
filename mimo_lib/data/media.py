"""Read and write real media files: mp4 video (with its audio track), wav and flac.

Everything else in ``mimo_lib`` works on tensors. This module is the border
between those tensors and the files on disk:

* ``probe(path)`` looks inside a file without decoding all of it.
* ``read_video_frames(path)`` returns ``num_frames`` RGB frames sampled evenly
  over the whole clip, shape ``(T, 3, H, W)`` uint8.
* ``read_audio(path)`` returns one mono waveform, shape ``(N,)`` float32 in
  [-1, 1] at the sample rate you ask for (16 kHz by default).
* ``read_clip(...)`` reads what the model sees of one file: frames and audio
  from the **same time window** (below). The dataset, ``generate``,
  ``evaluate`` and the feature cache all read files through it.
* ``write_video`` and ``write_audio`` go the other way, so the book can make
  its own sample clips and tests can build their inputs.

Design choices, and why
-----------------------
**PyAV for decoding and encoding.** PyAV (the ``av`` package) is a Python
binding to FFmpeg, and its wheels *bundle* FFmpeg's libraries, with the
H.264 (libx264) and AAC encoders. ``pip install av`` is therefore all a reader
needs: no system FFmpeg, no ``apt-get``, no version clash between the FFmpeg
on the machine and the one a Python package was built against.

**torchaudio only for resampling.** Audio is decoded by PyAV to float, mixed
to mono by averaging the channels (one line of tensor code you can read), and
then resampled with ``torchaudio.functional.resample``, a windowed-sinc
resampler that works on plain tensors. Stereo, 44.1 kHz and 48 kHz files are
converted, never rejected.

**Uniform frame sampling without keeping every frame.** A model sees a fixed
number of frames per clip, spread evenly over the clip: frame indices
``round(linspace(0, N - 1, num_frames))`` over the ``N`` frames in the file.
We first learn ``N`` from the container's header (or, if the header does not
say, by *demuxing* -- reading the compressed packets without decoding them),
then decode once and convert to an RGB array only the frames we keep. A
ten-minute clip therefore costs eight frames of memory, not eighteen thousand.

**Frames keep their proportions.** ``image_size=S`` resizes each frame so that
its *shorter* side is ``S`` and then cuts the centre ``S x S`` square, as CLIP's
own preprocessing does: a 160x120 clip loses a strip on the left and right, it
is never squashed. A phone video's rotation metadata (the display matrix every
player honours) is applied first, so a portrait clip stored as 160x96 with
"rotate 90" is read as the 96x160 picture a player shows. Rotations that are
not a multiple of 90 degrees are refused.

**One time window for both senses.** A model reads a fixed span of time:
``clip_duration_s`` seconds (``AudioTowerConfig.clip_duration_s``, ``--clip-duration``).
``read_clip`` cuts that window out of a file for the eyes and the ears alike,
where ``MIMOConfig.clip_window`` (``--clip-window``) says:

* ``"start"`` (the default): the window is ``[0, clip_duration_s)``, the first seconds of the file;
* ``"center"``: the window is centred on the file, ``[(L - D) / 2, (L + D) / 2)`` for a file of
  ``L`` seconds and a window of ``D``.

Inside the window of ``D`` seconds, frame ``k`` of ``F`` stands for the time span
``[k D / F, (k + 1) D / F)`` and is the frame on screen at its middle, ``(k + 0.5) D / F``
(the last frame whose timestamp is not later); audio sample ``n`` is at ``n / sample_rate``, as it
is in the file. So an event at time ``t`` of the window lands in frame ``floor(t F / D)`` and in audio
token ``floor(t A / D)`` of ``A``: the same time chunk. Where the window runs past the file (a clip
shorter than the window, or a centred window on a short clip), both senses get *nothing*: black
frames and silence, at the same times. Where the file is longer, both lose the same part.
Times count from each stream's first frame or sample (0 s in an mp4 written by any common tool).
``read_video_frames`` without a window keeps its own rule (``num_frames`` frames spread over the
whole file, first and last included), for looking at files, not for the model.

**Loud failures.** Every bad input raises ``mimo_lib.errors.MediaError`` with a
message naming the file, the problem and what to do: a missing file, a file
that is not media, a truncated or corrupt file, a video without an audio
track, a wav asked for video frames, an empty audio track. In particular, a
truncated file that decodes far fewer frames than its header promises is
reported instead of quietly returning frames from the wrong places.

**Atomic writes.** ``write_video`` and ``write_audio`` encode into a temporary
file in the destination folder and only then ``os.replace`` it onto the final
name. ``os.replace`` within one folder is atomic, so a crash or an encoder
error never leaves a half-written file, and never destroys an existing one.

**AAC padding.** An AAC encoder adds "priming" samples before the audio and
pads the last frame of 1024 samples with silence. FFmpeg's mp4 reader already
skips the priming samples (the mp4 file records how many); we cut the padding
at the end using the stream's duration, which the mp4 header stores exactly.
So a waveform written with ``write_video`` reads back with the same length.
"""

from __future__ import annotations

import math
import numbers
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF
import torchvision.transforms.v2.functional as TF

from mimo_lib.config import CLIP_WINDOWS
from mimo_lib.errors import MediaError

__all__ = [
    "CLIP_WINDOWS",
    "DEFAULT_SAMPLE_RATE",
    "MediaInfo",
    "TimeWindow",
    "clip_window",
    "cut_audio_window",
    "probe",
    "read_audio",
    "read_clip",
    "read_video_frames",
    "write_audio",
    "write_video",
]

DEFAULT_SAMPLE_RATE = 16_000
"""Sample rate (Hz) of every waveform the model sees, unless you ask otherwise."""

# A file that decodes fewer than this fraction of the frames (or samples) its
# header promises is treated as truncated or corrupt. A small shortfall is
# tolerated, because a few containers only estimate their length.
_MIN_DECODED_FRACTION = 0.95

# The most samples of end padding we trim from a decoded track. An AAC encoder
# pads at most one frame (1024 samples); anything much larger means the
# header's duration is unreliable, and then we keep everything we decoded.
_MAX_PADDING_SAMPLES = 4096

# Sample rates the AAC encoder in FFmpeg accepts.
_AAC_SAMPLE_RATES = (
    7350,
    8000,
    11025,
    12000,
    16000,
    22050,
    24000,
    32000,
    44100,
    48000,
    64000,
    88200,
    96000,
)

# File suffix -> FFmpeg container format for write_audio.
_AUDIO_FORMATS = {".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac")}

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------


@dataclass
class MediaInfo:
    """What ``probe()`` finds out about a file without decoding all of it."""

    path: Path
    has_video: bool
    has_audio: bool
    duration_s: float  # container or stream duration in seconds (0.0 if unknown)
    num_video_frames: int  # 0 if no video stream
    fps: float  # 0.0 if no video
    audio_sample_rate: int  # 0 if no audio
    audio_channels: int  # 0 if no audio


@dataclass(frozen=True)
class TimeWindow:
    """A span of a file's time that the model reads: ``[start_s, start_s + duration_s)``.

    ``start_s`` may be negative, and the window may end after the file: those parts are black frames
    and silence for both senses alike.
    """

    start_s: float  # seconds from the file's first frame / sample
    duration_s: float  # the model's clip length (AudioTowerConfig.clip_duration_s)

    def frame_times(self, num_frames: int) -> list[float]:
        """The instant each of ``num_frames`` frames shows: the middle of its ``1 / num_frames`` of the window."""
        return [self.start_s + (k + 0.5) * self.duration_s / num_frames for k in range(num_frames)]


def clip_window(clip_seconds: float, duration_s: float, where: str = "start") -> TimeWindow:
    """The window of ``duration_s`` seconds to read from a file of ``clip_seconds``.

    ``where="start"``: ``[0, duration_s)``; ``"center"``: centred on the file (a file shorter than the
    window is then padded equally before and after). See the module docstring.
    """
    if where not in CLIP_WINDOWS:
        raise ValueError(f"clip window {where!r} is not one of {CLIP_WINDOWS} (--clip-window)")
    if not duration_s > 0:
        raise ValueError(f"the window must last a positive number of seconds, got {duration_s!r} (--clip-duration)")
    start = 0.0 if where == "start" else (clip_seconds - duration_s) / 2
    return TimeWindow(start, float(duration_s))


# ---------------------------------------------------------------------------
# Opening files, with every PyAV failure turned into a MediaError
# ---------------------------------------------------------------------------


@contextmanager
def _open_media(path: Path) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading; raise ``MediaError`` if that is impossible."""
    if not path.exists():
        raise MediaError(f"{path}: file not found. Check the path (relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise MediaError(f"{path}: is not a file (a folder?). Pass the path of one media file.")
    try:
        container = av.open(str(path), mode="r")
    except av.error.InvalidDataError as err:
        raise MediaError(
            f"{path}: is not a media file FFmpeg can read, or its header is damaged "
            f"(a truncated mp4 often loses the index at its end). "
            f"Re-export or re-download the file. FFmpeg said: {err}"
        ) from err
    except (av.FFmpegError, OSError) as err:
        raise MediaError(f"{path}: could not be opened as media: {err}") from err
    try:
        yield container
    finally:
        container.close()


def _as_path(path: PathLike) -> Path:
    return Path(os.fspath(path))


def _video_frame_count(path: Path, container: av.container.InputContainer) -> int:
    """Frames in the first video stream: from the header, else by demuxing packets.

    Demuxing reads the compressed packets but does not decode them, so it is
    much cheaper than decoding. It uses a fresh container so that the caller's
    container still starts at the beginning of the file.
    """
    stream = container.streams.video[0]
    if stream.frames > 0:
        return int(stream.frames)
    count = 0
    with _open_media(path) as counting:
        try:
            for packet in counting.demux(counting.streams.video[0]):
                if packet.size > 0:  # the demuxer ends with an empty "flush" packet
                    count += 1
        except av.FFmpegError as err:
            raise MediaError(f"{path}: is truncated or corrupt: reading its video packets failed ({err}).") from err
    return count


def _stream_seconds(stream: av.stream.Stream) -> float:
    """A stream's duration in seconds, or 0.0 if the file does not say."""
    if stream.duration is None or stream.time_base is None:
        return 0.0
    return float(stream.duration * stream.time_base)


def _container_seconds(container: av.container.InputContainer) -> float:
    """The container's duration in seconds, or 0.0 if the file does not say."""
    if container.duration is None:
        return 0.0
    return container.duration / av.time_base  # container.duration counts microseconds


def _video_seconds(path: Path, container: av.container.InputContainer) -> float:
    """How long the video lasts: stream duration, else frames / fps, else container."""
    stream = container.streams.video[0]
    seconds = _stream_seconds(stream)
    if seconds > 0:
        return seconds
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if fps > 0:
        return _video_frame_count(path, container) / fps
    return _container_seconds(container)


# ---------------------------------------------------------------------------
# probe
# ---------------------------------------------------------------------------


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file from its header (and, if needed, its packets).

    Nothing is decoded, so this is fast even for long files. Raises
    ``MediaError`` if the file is missing or is not a media file. Because it
    only reads the header, ``probe`` does not notice a truncated file whose
    header survived; ``read_video_frames`` and ``read_audio`` do.
    """
    path = _as_path(path)
    with _open_media(path) as container:
        has_video = len(container.streams.video) > 0
        has_audio = len(container.streams.audio) > 0

        num_frames, fps = 0, 0.0
        if has_video:
            video = container.streams.video[0]
            num_frames = _video_frame_count(path, container)
            fps = float(video.average_rate or video.guessed_rate or 0)

        sample_rate, channels = 0, 0
        if has_audio:
            audio = container.streams.audio[0]
            sample_rate = int(audio.sample_rate or 0)
            channels = int(audio.channels or 0)

        duration = _container_seconds(container)
        if duration <= 0:
            duration = max((_stream_seconds(s) for s in container.streams), default=0.0)

    return MediaInfo(
        path=path,
        has_video=has_video,
        has_audio=has_audio,
        duration_s=duration,
        num_video_frames=num_frames,
        fps=fps,
        audio_sample_rate=sample_rate,
        audio_channels=channels,
    )


# ---------------------------------------------------------------------------
# Reading video frames
# ---------------------------------------------------------------------------


def _uniform_indices(num_available: int, num_frames: int) -> list[int]:
    """``round(linspace(0, N - 1, num_frames))``: evenly spread, first and last included.

    If the clip has fewer frames than asked for, some indices repeat, so every
    clip still yields exactly ``num_frames`` frames.
    """
    positions = np.linspace(0, num_available - 1, num_frames)
    return [int(i) for i in np.round(positions)]


def _check_image_size(image_size: int | tuple[int, int] | None) -> list[int] | None:
    """Turn ``image_size`` into ``[H, W]`` (or ``None``), rejecting nonsense early."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = [image_size, image_size]
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = [int(image_size[0]), int(image_size[1])]
    else:
        raise ValueError(f"image_size must be an int S or a pair (H, W), got {image_size!r}")
    if min(size) <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


def _apply_rotation(image: torch.Tensor, degrees: float, path: Path) -> torch.Tensor:
    """Turn a ``(3, H, W)`` frame the way its display matrix says (``degrees`` counter-clockwise, as PyAV reports)."""
    degrees = round(degrees or 0) % 360
    if degrees == 0:
        return image
    if degrees % 90:
        raise MediaError(
            f"{path}: its rotation metadata asks for {degrees} degrees; only multiples of 90 are supported. "
            "Re-export the video upright (e.g. `ffmpeg -i in.mp4 out.mp4` applies the rotation)."
        )
    return torch.rot90(image, k=degrees // 90, dims=(1, 2)).contiguous()  # counter-clockwise, as np.rot90


def resize_and_center_crop(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``(3, H, W)`` -> ``(3, size[0], size[1])``: scale until the frame covers ``size``, then cut its centre.

    CLIP's preprocessing (resize the shorter side, centre crop) for a square ``size``; proportions are
    kept, never squashed.
    """
    height, width = image.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    covering = [max(size[0], round(height * scale)), max(size[1], round(width * scale))]
    if covering != [height, width]:
        image = TF.resize(image, covering, antialias=True)  # (3, >= S_h, >= S_w) uint8
    return TF.center_crop(image, size)  # (3, S_h, S_w)


def _decode_selected_frames(
    path: Path, wanted: set[int], size: list[int] | None
) -> tuple[dict[int, torch.Tensor], int]:
    """Decode the whole video stream once, keeping only the frames in ``wanted``.

    Returns ``(kept, decoded)``: the kept frames by index, each ``(3, H, W)``
    uint8 (already resized if ``size`` is given), and how many frames the
    decoder produced in total.
    """
    kept: dict[int, torch.Tensor] = {}
    decoded = 0
    with _open_media(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # let FFmpeg decode with several threads
        try:
            for frame in container.decode(stream):
                if decoded in wanted:
                    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8 as stored
                    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
                    image = _apply_rotation(image, getattr(frame, "rotation", 0), path)  # (3, H', W') as players show it
                    if size is not None:
                        image = resize_and_center_crop(image, size)  # (3, S_h, S_w) uint8
                    kept[decoded] = image
                decoded += 1
        except av.FFmpegError as err:
            raise MediaError(
                f"{path}: is truncated or corrupt: decoding failed after {decoded} video frames "
                f"({err}). Re-export or re-download the file."
            ) from err
    return kept, decoded


def _decode_frames_at(
    path: Path, times: list[float], size: list[int] | None
) -> tuple[list[torch.Tensor | None], int, float]:
    """Decode the video stream once; for each of the ascending ``times`` keep the frame on screen then.

    The frame on screen at ``t`` is the last one whose timestamp is not later than ``t``. A time before
    the first frame or after the last frame's end is outside the file: ``None`` there. Returns
    ``(frames, decoded, seconds)``: the frames (each ``(3, H, W)`` uint8, resized if ``size`` is given),
    how many frames were decoded, and how long the video lasts.
    """
    chosen: list[torch.Tensor | None] = [None] * len(times)
    decoded, k = 0, 0
    last, last_time, origin, step = None, 0.0, None, 0.0
    last_image: torch.Tensor | None = None  # ``last`` converted, once (several times may show one frame)

    def image_of(frame) -> torch.Tensor:
        rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8 as stored
        image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
        image = _apply_rotation(image, getattr(frame, "rotation", 0), path)  # (3, H', W') as players show it
        return resize_and_center_crop(image, size) if size is not None else image

    with _open_media(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else decoded / max(fps, 1e-9)
                origin = t if origin is None else origin
                t -= origin  # seconds since the first frame
                while k < len(times) and times[k] < t:
                    if last is not None:  # before the first frame: outside the file
                        last_image = image_of(last) if last_image is None else last_image
                        chosen[k] = last_image
                    k += 1
                if last is not None:
                    step = t - last_time
                last, last_time, last_image = frame, t, None
                decoded += 1
        except av.FFmpegError as err:
            raise MediaError(
                f"{path}: is truncated or corrupt: decoding failed after {decoded} video frames "
                f"({err}). Re-export or re-download the file."
            ) from err
    seconds = last_time + (1 / fps if fps > 0 else step)  # the last frame stays on screen for one frame
    while k < len(times) and last is not None and times[k] < seconds:
        last_image = image_of(last) if last_image is None else last_image
        chosen[k] = last_image
        k += 1
    return chosen, decoded, seconds


def read_video_frames(
    path: PathLike,
    num_frames: int = 8,
    image_size: int | tuple[int, int] | None = None,
    window: TimeWindow | None = None,
) -> torch.Tensor:
    """Read ``num_frames`` RGB frames spread evenly over the whole clip, or over ``window``.

    Args:
        path: a video file (mp4, mkv, webm, ... anything FFmpeg reads).
        num_frames: how many frames to return. Frame indices are
            ``round(linspace(0, N - 1, num_frames))`` over the file's ``N``
            frames; a clip shorter than ``num_frames`` repeats frames.
        image_size: if given, every frame is resized (with antialiasing)
            until it covers ``(S, S)`` for an int ``S``, or ``(H, W)`` for a
            pair, and its centre is cut out (CLIP's resize + centre crop:
            proportions are kept). Rotation metadata is applied first.
        window: a :class:`TimeWindow`: frame ``k`` is the one on screen at the middle of the ``k``-th
            of ``num_frames`` equal parts of the window, and black where the window is outside the
            file (see the module docstring). ``None``: the whole clip, by frame index as above.

    Returns:
        ``(num_frames, 3, H, W)`` uint8 tensor, RGB.

    Raises:
        MediaError: missing, unreadable, truncated or corrupt file, or a file
            without a video stream.
    """
    path = _as_path(path)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    size = _check_image_size(image_size)

    with _open_media(path) as container:
        if not container.streams.video:
            raise MediaError(
                f"{path}: has no video stream (is it an audio file?). Use read_audio() for audio, or pass a video file."
            )
        expected = _video_frame_count(path, container)

    if expected == 0:
        raise MediaError(
            f"{path}: its video stream contains no frames (is the file truncated?). Re-export or re-download the file."
        )

    if window is not None:
        return _read_window_frames(path, expected, num_frames, size, window)

    indices = _uniform_indices(expected, num_frames)
    kept, decoded = _decode_selected_frames(path, set(indices), size)
    _check_decoded_frames(path, expected, decoded)
    if decoded != expected:
        # The header was slightly off. Our indices were planned for the wrong
        # length, so decode once more with the true frame count.
        indices = _uniform_indices(decoded, num_frames)
        kept, _ = _decode_selected_frames(path, set(indices), size)

    try:
        return torch.stack([kept[i] for i in indices])  # (num_frames, 3, H, W) uint8
    except RuntimeError as err:  # frames of different sizes cannot be stacked
        raise MediaError(f"{path}: its frames change size mid-stream; pass image_size=... to resize them all.") from err


def _check_decoded_frames(path: Path, expected: int, decoded: int) -> None:
    """A file whose frames mostly fail to decode is truncated or corrupt: say so, naming it."""
    if decoded == 0:
        raise MediaError(
            f"{path}: no video frames could be decoded (the header promised {expected}). "
            f"The file is truncated or corrupt; re-export or re-download it."
        )
    if decoded < _MIN_DECODED_FRACTION * expected:
        raise MediaError(
            f"{path}: is truncated or corrupt: its header promises {expected} video frames "
            f"but only {decoded} could be decoded. Re-export or re-download the file."
        )


def _read_window_frames(
    path: Path, expected: int, num_frames: int, size: list[int] | None, window: TimeWindow
) -> torch.Tensor:
    """``read_video_frames`` for a :class:`TimeWindow`: ``(num_frames, 3, H, W)`` uint8, black outside the file."""
    chosen, decoded, _ = _decode_frames_at(path, window.frame_times(num_frames), size)
    _check_decoded_frames(path, expected, decoded)
    shapes = {tuple(f.shape) for f in chosen if f is not None}
    if len(shapes) > 1:
        raise MediaError(f"{path}: its frames change size mid-stream; pass image_size=... to resize them all.")
    if not shapes:  # the whole window lies outside the file
        shapes = {(3, *size)} if size is not None else {tuple(_decode_frames_at(path, [0.0], None)[0][0].shape)}
    black = torch.zeros(next(iter(shapes)), dtype=torch.uint8)
    return torch.stack([f if f is not None else black for f in chosen])  # (num_frames, 3, H, W) uint8


# ---------------------------------------------------------------------------
# Reading audio
# ---------------------------------------------------------------------------


def _decode_mono(path: Path, container: av.container.InputContainer) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to a mono float32 array at its own rate.

    Returns ``(waveform, rate)`` with ``waveform`` of shape ``(N,)``.
    """
    stream = container.streams.audio[0]
    # The resampler here only converts the sample *format*: whatever the file
    # stores (16-bit ints, 32-bit floats, one plane per channel or
    # interleaved) becomes float32 with one row per channel, in [-1, 1].
    # Rate and channel layout are left alone; we handle those ourselves.
    to_float = av.AudioResampler(format="fltp")
    chunks: list[np.ndarray] = []
    rate = int(stream.sample_rate or 0)
    try:
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for converted in to_float.resample(frame):
                planes = converted.to_ndarray()  # (C, n) float32
                chunks.append(planes.mean(axis=0))  # (n,) mono: average of the channels
        for converted in to_float.resample(None):  # flush anything the resampler held back
            chunks.append(converted.to_ndarray().mean(axis=0))
    except av.FFmpegError as err:
        decoded = sum(len(c) for c in chunks)
        raise MediaError(
            f"{path}: is truncated or corrupt: decoding its audio failed after {decoded} samples "
            f"({err}). Re-export or re-download the file."
        ) from err
    waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)  # (N,)
    return waveform.astype(np.float32, copy=False), rate


def read_audio(
    path: PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    allow_missing_audio: bool = False,
) -> torch.Tensor:
    """Read the audio of a wav, flac, mp4 (or any FFmpeg-readable) file as mono.

    Channels are averaged into one, and the result is resampled to
    ``sample_rate``. Values are clipped to [-1, 1] (a lossy codec or the
    resampler can overshoot by a hair).

    A track that decodes far fewer samples than its header promises (a
    truncated mp4) raises ``MediaError``. A truncated wav cannot be detected
    this way -- FFmpeg works out a wav's length from the file size -- so it
    simply reads as a shorter recording.

    Args:
        path: the media file.
        sample_rate: the rate (Hz) of the returned waveform.
        allow_missing_audio: for a video without an audio track, warn and return
            silence as long as the video instead of raising ``MediaError``.

    Returns:
        ``(N,)`` float32 tensor.

    Raises:
        MediaError: missing, unreadable, truncated or corrupt file; no audio
            track (unless ``allow_missing_audio``); an audio track with no samples.
    """
    path = _as_path(path)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")

    with _open_media(path) as container:
        if not container.streams.audio:
            if not allow_missing_audio:
                raise MediaError(
                    f"{path}: has no audio track. Use a file with sound, or pass "
                    f"allow_missing_audio=True to use silence instead."
                )
            if not container.streams.video:
                raise MediaError(f"{path}: has neither an audio track nor a video stream.")
            seconds = _video_seconds(path, container)
            warnings.warn(
                f"{path}: has no audio track; using {seconds:.2f} s of silence instead.",
                UserWarning,
                stacklevel=2,
            )
            return torch.zeros(round(seconds * sample_rate), dtype=torch.float32)

        stream = container.streams.audio[0]
        waveform, file_rate = _decode_mono(path, container)  # (N,) float32 at file_rate
        # How many samples the header says the track has, if it says.
        expected = round(_stream_seconds(stream) * file_rate)

    if len(waveform) == 0:
        raise MediaError(f"{path}: its audio track contains no samples. Use a file with sound in it.")
    if expected > 0 and len(waveform) < _MIN_DECODED_FRACTION * expected:
        raise MediaError(
            f"{path}: is truncated or corrupt: its header promises {expected} audio samples "
            f"but only {len(waveform)} could be decoded. Re-export or re-download the file."
        )
    if expected > 0 and 0 < len(waveform) - expected <= _MAX_PADDING_SAMPLES:
        waveform = waveform[:expected]  # cut the encoder's padding (AAC pads its last frame)

    audio = torch.from_numpy(waveform)  # (N,) float32 at file_rate
    if file_rate != sample_rate:
        audio = AF.resample(audio, orig_freq=file_rate, new_freq=sample_rate)  # (N',) float32
    return audio.clamp(-1.0, 1.0).contiguous()


def cut_audio_window(audio: torch.Tensor, sample_rate: int, window: TimeWindow) -> torch.Tensor:
    """``(N,)`` audio -> the ``round(window.duration_s * sample_rate)`` samples of ``window``.

    Sample ``n`` of the result is sample ``n + round(window.start_s * sample_rate)`` of ``audio``, and
    silence (0) where that is outside it. For a window from 0 this is crop-or-zero-pad at the end
    (:func:`mimo_lib.audio_tower.fit_waveform`), bit for bit.
    """
    length = int(round(window.duration_s * sample_rate))
    first = int(round(window.start_s * sample_rate))
    out = torch.zeros(length, dtype=torch.float32)  # (length,) silence where the file has none
    lo, hi = max(first, 0), min(first + length, audio.shape[0])
    if hi > lo:
        out[lo - first : hi - first] = audio[lo:hi]
    return out


def read_clip(
    video_path: PathLike | None,
    audio_path: PathLike | None,
    num_frames: int,
    image_size: int | tuple[int, int] | None,
    sample_rate: int,
    duration_s: float,
    where: str = "start",
    allow_missing_audio: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """What the model sees and hears of a file: frames and audio of one :class:`TimeWindow`.

    Args:
        video_path: the video to take frames from (None: no video).
        audio_path: the file to take sound from: the video itself for its own track, a separate audio
            file, or None (no audio).
        num_frames, image_size: as :func:`read_video_frames`.
        sample_rate: the audio's rate (Hz).
        duration_s: the window's length (the model's ``clip_duration_s``).
        where: ``"start"`` or ``"center"`` (``MIMOConfig.clip_window``); a centred window is centred on
            the video (on the audio when there is no video).
        allow_missing_audio: a video without a sound track gives silence (with a warning).

    Returns:
        ``(video (num_frames, 3, H, W) uint8 or None, audio (round(duration_s * sample_rate),) float32 or None)``.
    """
    audio = None
    if audio_path is not None:
        audio = read_audio(audio_path, sample_rate, allow_missing_audio=allow_missing_audio)  # (N,)
    clip_seconds = 0.0
    if where != "start":  # only a centred window needs the clip's length
        if video_path is not None:
            with _open_media(_as_path(video_path)) as container:
                if container.streams.video:
                    clip_seconds = _video_seconds(_as_path(video_path), container)
        elif audio is not None:
            clip_seconds = audio.shape[0] / sample_rate
    window = clip_window(clip_seconds, duration_s, where)
    video = None if video_path is None else read_video_frames(video_path, num_frames, image_size, window=window)
    if audio is not None:
        audio = cut_audio_window(audio, sample_rate, window)  # (round(duration_s * sample_rate),)
    return video, audio


# ---------------------------------------------------------------------------
# Writing, atomically
# ---------------------------------------------------------------------------


@contextmanager
def _atomic_destination(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    On any failure the temporary file is deleted and ``path`` is untouched.
    The temporary file lives in the same folder because ``os.replace`` is only
    atomic within one file system.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only still there if something failed


def _check_waveform(waveform: torch.Tensor, name: str = "audio") -> torch.Tensor:
    """Validate a ``(N,)`` or ``(C, N)`` float waveform; return it as ``(C, N)`` float32 on CPU."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor with values in [-1, 1], got dtype {waveform.dtype} "
            f"(for int16 samples use waveform.float() / 32768)"
        )
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)  # (1, N)
    if waveform.ndim != 2:
        raise ValueError(f"{name} must have shape (N,) or (C, N), got {tuple(waveform.shape)}")
    channels, samples = waveform.shape
    if channels < 1 or samples < 1:
        raise ValueError(f"{name} is empty: shape {tuple(waveform.shape)}")
    if channels > 8:
        raise ValueError(
            f"{name} has {channels} channels; at most 8 are supported. "
            f"A (C, N) waveform has channels first -- did you pass (N, C)? Then use waveform.T"
        )
    waveform = waveform.detach().to("cpu", torch.float32)  # (C, N) float32
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    peak = waveform.abs().max().item()
    if peak > 1.0 + 1e-6:
        raise ValueError(
            f"{name} must lie in [-1, 1], but its peak is {peak:.3g}; "
            f"scale it down, e.g. waveform / waveform.abs().max()"
        )
    return waveform.clamp(-1.0, 1.0)


def _layout_name(channels: int) -> str:
    """FFmpeg's channel layout for ``channels`` channels ("mono", "stereo", "5.1", ...)."""
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    """Validate ``(T, 3, H, W)`` uint8 frames for H.264; return them on the CPU."""
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise ValueError(
            f"frames must be uint8 (0..255), got {frames.dtype}; "
            f"for floats in [0, 1] use (frames.clamp(0, 1) * 255).round().to(torch.uint8)"
        )
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T, 3, H, W) (RGB, channels second), got {tuple(frames.shape)}")
    num, _, height, width = frames.shape
    if num < 1 or height < 1 or width < 1:
        raise ValueError(f"frames is empty: shape {tuple(frames.shape)}")
    if height % 2 or width % 2:
        raise ValueError(
            f"frames are {height}x{width} (HxW), but H.264 with yuv420p colour needs an even "
            f"height and width; crop with frames[..., :{height // 2 * 2}, :{width // 2 * 2}] "
            f"or pad by one row/column"
        )
    return frames.detach().cpu()


def write_video(
    path: PathLike,
    frames: torch.Tensor,
    fps: float,
    audio: torch.Tensor | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    crf: int = 18,
) -> Path:
    """Write frames (and optionally a sound track) as an H.264 + AAC mp4.

    Args:
        path: destination, must end in ``.mp4``. Folders are created.
        frames: ``(T, 3, H, W)`` uint8 RGB, with even ``H`` and ``W``.
        fps: frames per second.
        audio: optional ``(N,)`` mono or ``(C, N)`` float waveform in [-1, 1],
            ``C`` = 1 or 2, stored as AAC at ``sample_rate``.
        sample_rate: rate (Hz) of ``audio``; must be one AAC supports
            (8000, 16000, 22050, 44100, 48000, ...).
        crf: H.264 quality, 0 (lossless) .. 51 (worst); 18 looks lossless.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: invalid arguments (checked before anything is written).
        MediaError: the encoder failed; ``path`` is left as it was.
    """
    path = _as_path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: write_video writes mp4 files; use a name ending in .mp4")
    frames = _check_frames(frames)  # (T, 3, H, W) uint8
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int from 0 (lossless) to 51 (worst), got {crf!r}")
    if audio is not None:
        audio = _check_waveform(audio)  # (C, N) float32
        if audio.shape[0] > 2:
            raise ValueError(
                f"audio has {audio.shape[0]} channels; write_video stores mono or stereo. "
                f"Mix down first, e.g. audio.mean(dim=0)"
            )
        if sample_rate not in _AAC_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate {sample_rate} is not one the AAC encoder supports; use one of "
                f"{_AAC_SAMPLE_RATES} (resample with torchaudio.functional.resample)"
            )

    num, _, height, width = frames.shape
    rate = Fraction(fps).limit_denominator(10_000)  # e.g. 29.97 -> 2997/100
    with _atomic_destination(path) as temporary:
        try:
            with av.open(str(temporary), mode="w", format="mp4", options={"movflags": "faststart"}) as out:
                # "faststart" puts the mp4 index (the moov box) at the front of
                # the file, so players can start before the whole file arrives.
                video_stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf)})
                video_stream.width = width
                video_stream.height = height
                video_stream.pix_fmt = "yuv420p"  # the colour format every player understands

                audio_stream = None
                if audio is not None:
                    audio_stream = out.add_stream("aac", rate=sample_rate)
                    audio_stream.layout = _layout_name(audio.shape[0])

                for t in range(num):
                    rgb = frames[t].permute(1, 2, 0).contiguous().numpy()  # (H, W, 3) uint8
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    # PyAV converts RGB to yuv420p and numbers the frames for us.
                    for packet in video_stream.encode(frame):
                        out.mux(packet)
                for packet in video_stream.encode(None):  # flush the encoder's buffered frames
                    out.mux(packet)

                if audio_stream is not None:
                    samples = audio.numpy()  # (C, N) float32, planar: one row per channel
                    sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout=audio_stream.layout.name)
                    sound.sample_rate = sample_rate
                    sound.pts = 0
                    # PyAV cuts this into the 1024-sample frames AAC needs.
                    for packet in audio_stream.encode(sound):
                        out.mux(packet)
                    for packet in audio_stream.encode(None):
                        out.mux(packet)
        except av.FFmpegError as err:
            raise MediaError(f"{path}: encoding failed ({err}); nothing was written.") from err
    return path


def write_audio(path: PathLike, waveform: torch.Tensor, sample_rate: int) -> Path:
    """Write a waveform as 16-bit PCM ``.wav`` or lossless ``.flac`` (chosen by suffix).

    Args:
        path: destination ending in ``.wav`` or ``.flac``. Folders are created.
        waveform: ``(N,)`` mono or ``(C, N)`` float in [-1, 1], up to 8 channels.
        sample_rate: samples per second.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: invalid arguments (checked before anything is written).
        MediaError: the encoder failed; ``path`` is left as it was.
    """
    path = _as_path(path)
    suffix = path.suffix.lower()
    if suffix not in _AUDIO_FORMATS:
        raise ValueError(f"{path}: write_audio writes .wav or .flac files, not {suffix or 'no suffix'!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    waveform = _check_waveform(waveform, name="waveform")  # (C, N) float32
    channels = waveform.shape[0]

    # 16-bit integers, interleaved: L R L R ... -- how wav stores samples.
    pcm = (waveform * 32767).round().to(torch.int16)  # (C, N) int16
    interleaved = pcm.T.contiguous().reshape(1, -1).numpy()  # (1, N * C) int16

    container_format, codec = _AUDIO_FORMATS[suffix]
    with _atomic_destination(path) as temporary:
        try:
            with av.open(str(temporary), mode="w", format=container_format) as out:
                stream = out.add_stream(codec, rate=sample_rate)
                stream.layout = _layout_name(channels)
                stream.format = "s16"
                frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=stream.layout.name)
                frame.sample_rate = sample_rate
                frame.pts = 0
                for packet in stream.encode(frame):
                    out.mux(packet)
                for packet in stream.encode(None):
                    out.mux(packet)
        except av.FFmpegError as err:
            raise MediaError(f"{path}: encoding failed ({err}); nothing was written.") from err
    return path
