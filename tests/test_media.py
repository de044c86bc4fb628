"""Tests for mimo_lib.data.media: reading and writing mp4, wav and flac.

Every input is built here from synthetic frames (flat colours, a moving
square) and sine tones, so the tests need no sample files and no network.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import pytest
import torch

from mimo_lib.data import media
from mimo_lib.data.media import (
    DEFAULT_SAMPLE_RATE,
    MediaInfo,
    probe,
    read_audio,
    read_video_frames,
    resize_and_center_crop,
    write_audio,
    write_video,
)
from mimo_lib.errors import MediaError, MimoInputError

H, W = 48, 64
BACKGROUND = (200, 40, 90)  # an RGB colour for the flat part of the frames


# ---------------------------------------------------------------------------
# Synthetic inputs
# ---------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> torch.Tensor:
    """A sine wave, shape (N,) float32."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


def dominant_frequency(wave: torch.Tensor, rate: int) -> float:
    """The frequency (Hz) of the strongest FFT bin."""
    spectrum = torch.fft.rfft(wave.double()).abs()
    return spectrum.argmax().item() * rate / len(wave)


def moving_square(num: int) -> torch.Tensor:
    """A white 16x16 square sliding right over a flat coloured background, (T, 3, H, W) uint8."""
    frames = torch.empty(num, 3, H, W, dtype=torch.uint8)
    frames[:] = torch.tensor(BACKGROUND, dtype=torch.uint8).view(1, 3, 1, 1)
    for i in range(num):
        left = i
        frames[i, :, 8:24, left : left + 16] = 255
    return frames


def numbered_frames(num: int) -> torch.Tensor:
    """Frame i is flat grey of brightness 8 * i + 4, so its index can be read back."""
    levels = 8 * torch.arange(num) + 4
    return levels.to(torch.uint8).view(num, 1, 1, 1).expand(num, 3, H, W).contiguous()


def index_of(frame: torch.Tensor) -> int:
    """Invert numbered_frames: which frame is this?"""
    return round((frame.float().mean().item() - 4) / 8)


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A 2 s mp4: 32 moving-square frames at 16 fps and a 440 Hz tone."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = moving_square(32)
    audio = tone(440, 2.0, DEFAULT_SAMPLE_RATE)
    write_video(path, frames, fps=16, audio=audio)
    return path, frames, audio


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory) -> Path:
    """A 1.5 s mp4 with video only (24 frames at 16 fps), no audio track."""
    path = tmp_path_factory.mktemp("silent") / "silent.mp4"
    return write_video(path, moving_square(24), fps=16)


# ---------------------------------------------------------------------------
# Video round trip
# ---------------------------------------------------------------------------


def test_video_round_trip_preserves_content(av_clip):
    path, frames, _ = av_clip
    video = read_video_frames(path, num_frames=32)
    assert video.shape == (32, 3, H, W)
    assert video.dtype == torch.uint8
    # H.264 at crf 18 is close to lossless on such simple frames.
    error = (video.float() - frames.float()).abs().mean().item()
    assert error < 4.0, error
    # The flat background keeps its colour (away from the square's edges).
    background = video[:, :, 32:, :].float().mean(dim=(0, 2, 3))
    assert torch.allclose(background, torch.tensor(BACKGROUND, dtype=torch.float32), atol=5.0), background
    # The square is where it should be: white at its centre in every frame.
    for i in range(32):
        assert video[i, :, 16, i + 8].min() > 230


def test_uniform_sampling_picks_evenly_spaced_frames(tmp_path):
    path = write_video(tmp_path / "numbered.mp4", numbered_frames(32), fps=8)
    video = read_video_frames(path, num_frames=8)
    # round(linspace(0, 31, 8)) = round([0, 4.43, 8.86, 13.29, 17.71, 22.14, 26.57, 31])
    assert [index_of(frame) for frame in video] == [0, 4, 9, 13, 18, 22, 27, 31]
    assert [index_of(frame) for frame in read_video_frames(path, num_frames=1)] == [0]


def test_a_window_takes_the_frame_on_screen_at_the_middle_of_each_part(tmp_path):
    path = write_video(tmp_path / "numbered.mp4", numbered_frames(30), fps=8)  # 3.75 s, frame i over [i/8, (i+1)/8)
    # window [0.5, 2.5), 4 frames: middles at 0.75, 1.25, 1.75, 2.25 s -> frames 6, 10, 14, 18
    video = read_video_frames(path, num_frames=4, window=media.TimeWindow(0.5, 2.0))
    assert [index_of(frame) for frame in video] == [6, 10, 14, 18]
    # a window that starts before the clip and ends after it: black outside, the clip's frames inside
    video = read_video_frames(path, num_frames=6, window=media.TimeWindow(-1.0, 6.0))  # middles -0.5, 0.5, ... 4.5
    assert video[0].max() == 0 and video[5].max() == 0
    assert [index_of(frame) for frame in video[1:5]] == [4, 12, 20, 28]
    # a window wholly outside the clip is all black, at the clip's size
    outside = read_video_frames(path, num_frames=2, window=media.TimeWindow(10.0, 1.0))
    assert outside.shape == (2, 3, H, W) and outside.max() == 0


def test_short_clip_repeats_frames(tmp_path):
    path = write_video(tmp_path / "three.mp4", numbered_frames(3), fps=8)
    video = read_video_frames(path, num_frames=8)
    assert video.shape == (8, 3, H, W)
    # round(linspace(0, 2, 8)) = round([0, .29, .57, .86, 1.14, 1.43, 1.71, 2])
    assert [index_of(frame) for frame in video] == [0, 0, 1, 1, 1, 1, 2, 2]


def test_image_size_resizes(av_clip):
    path, _, _ = av_clip
    square = read_video_frames(path, num_frames=4, image_size=24)
    assert square.shape == (4, 3, 24, 24) and square.dtype == torch.uint8
    rect = read_video_frames(path, num_frames=4, image_size=(32, 40))
    assert rect.shape == (4, 3, 32, 40)
    # Resizing keeps the flat background's colour.
    background = rect[:, :, 24:, :].float().mean(dim=(0, 2, 3))
    assert torch.allclose(background, torch.tensor(BACKGROUND, dtype=torch.float32), atol=6.0)


def test_frames_are_resized_and_centre_cropped_not_squashed():
    # an 80x60 (W x H) frame: left third red, middle third green, right third blue
    frame = torch.zeros(3, 60, 80, dtype=torch.uint8)
    frame[0, :, :27], frame[1, :, 27:54], frame[2, :, 54:] = 255, 255, 255
    out = resize_and_center_crop(frame, [30, 30])  # shorter side 60 -> 30, width 80 -> 40, centre 30 kept
    assert out.shape == (3, 30, 30)
    # squashing would keep a third of each colour; the crop loses 5 of the 40 columns on each side
    red_columns = (out[0, 15] > 128) & (out[1, 15] < 128)
    assert int(red_columns.sum()) == pytest.approx(40 / 3 - 5, abs=1)
    assert torch.equal(resize_and_center_crop(frame, [60, 80]), frame)  # the exact size: untouched


def write_rotated(path: Path, frames: torch.Tensor, degrees: int) -> Path:
    """An mp4 whose display matrix says 'rotate by degrees', as a phone writes a portrait video."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip("this PyAV cannot write rotation metadata")
        stream.set_display_rotation(degrees)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_rotation_metadata_of_a_phone_video_is_honoured(tmp_path):
    stored = torch.zeros(2, 3, 96, 160, dtype=torch.uint8)  # stored landscape, 160 wide
    stored[:, :, :48, :80] = 255  # a white top-left quarter
    path = write_rotated(tmp_path / "portrait.mp4", stored, 90)
    video = read_video_frames(path, num_frames=2)
    assert video.shape == (2, 3, 160, 96)  # what a player shows: portrait
    expected = torch.rot90(stored[0], 1, dims=(1, 2))  # 90 degrees counter-clockwise, as the metadata says
    assert (video[0].float() - expected.float()).abs().mean() < 8
    assert read_video_frames(path, num_frames=2, image_size=32).shape == (2, 3, 32, 32)


def test_header_frame_count_slightly_off_is_replanned(tmp_path, monkeypatch):
    # If the header overstates the frame count a little (33 instead of 32),
    # the indices must still be planned over the 32 frames actually decoded.
    path = write_video(tmp_path / "numbered.mp4", numbered_frames(32), fps=8)
    monkeypatch.setattr(media, "_video_frame_count", lambda path, container: 33)
    video = read_video_frames(path, num_frames=8)
    assert [index_of(frame) for frame in video] == [0, 4, 9, 13, 18, 22, 27, 31]


# ---------------------------------------------------------------------------
# Audio round trips
# ---------------------------------------------------------------------------


def test_mp4_audio_round_trip_length_and_pitch(av_clip):
    path, _, audio = av_clip
    decoded = read_audio(path)
    assert decoded.dtype == torch.float32 and decoded.ndim == 1
    # AAC priming is skipped by FFmpeg and its end padding is trimmed by us:
    # the length matches to within 5 ms.
    assert abs(len(decoded) - len(audio)) <= 0.005 * DEFAULT_SAMPLE_RATE, len(decoded)
    assert dominant_frequency(decoded, DEFAULT_SAMPLE_RATE) == pytest.approx(440, abs=2)
    assert decoded.abs().max() <= 1.0
    # Not shifted in time: the decoded tone lines up with the original.
    n = min(len(decoded), len(audio))
    assert torch.nn.functional.cosine_similarity(decoded[:n], audio[:n], dim=0) > 0.99


def test_mp4_stereo_44k_audio_is_read_as_16k_mono(tmp_path):
    stereo = torch.stack([tone(1000, 1.0, 44_100), tone(1000, 1.0, 44_100)])  # (2, N)
    path = write_video(tmp_path / "stereo.mp4", moving_square(8), fps=8, audio=stereo, sample_rate=44_100)
    assert probe(path).audio_channels == 2
    decoded = read_audio(path, sample_rate=16_000)
    assert abs(len(decoded) - 16_000) <= 80
    assert dominant_frequency(decoded, 16_000) == pytest.approx(1000, abs=2)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_file_round_trip(tmp_path, suffix):
    wave = tone(440, 1.0, 16_000)
    path = write_audio(tmp_path / f"tone{suffix}", wave, 16_000)
    assert path.exists() and path.suffix == suffix
    decoded = read_audio(path, sample_rate=16_000)
    assert decoded.shape == wave.shape
    # 16-bit PCM and FLAC are exact up to 16-bit rounding.
    assert (decoded - wave).abs().max() < 1e-4


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_stereo_high_rate_wav_becomes_16k_mono(tmp_path, rate):
    left = tone(1000, 1.5, rate, amplitude=0.6)
    right = tone(1000, 1.5, rate, amplitude=0.2)
    path = write_audio(tmp_path / f"stereo_{rate}.wav", torch.stack([left, right]), rate)
    decoded = read_audio(path, sample_rate=16_000)
    assert decoded.shape == (24_000,)
    assert dominant_frequency(decoded, 16_000) == pytest.approx(1000, abs=1)
    # Mono is the average of the two channels: amplitude (0.6 + 0.2) / 2.
    assert decoded[1000:-1000].abs().max().item() == pytest.approx(0.4, abs=0.01)


def test_read_audio_keeps_original_rate_when_asked(tmp_path):
    path = write_audio(tmp_path / "tone48k.flac", tone(3000, 0.5, 48_000), 48_000)
    decoded = read_audio(path, sample_rate=48_000)
    assert decoded.shape == (24_000,)
    assert dominant_frequency(decoded, 48_000) == pytest.approx(3000, abs=2)


# ---------------------------------------------------------------------------
# probe
# ---------------------------------------------------------------------------


def test_probe_mp4(av_clip):
    path, _, _ = av_clip
    info = probe(path)
    assert isinstance(info, MediaInfo)
    assert info.path == path
    assert info.has_video and info.has_audio
    assert info.num_video_frames == 32
    assert info.fps == pytest.approx(16)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.audio_sample_rate == 16_000
    assert info.audio_channels == 1


def test_probe_wav(tmp_path):
    stereo = torch.stack([tone(440, 0.75, 48_000), tone(660, 0.75, 48_000)])
    info = probe(write_audio(tmp_path / "stereo.wav", stereo, 48_000))
    assert (info.has_video, info.has_audio) == (False, True)
    assert (info.num_video_frames, info.fps) == (0, 0.0)
    assert (info.audio_sample_rate, info.audio_channels) == (48_000, 2)
    assert info.duration_s == pytest.approx(0.75, abs=1e-3)


# ---------------------------------------------------------------------------
# Bad inputs: every one is a MediaError naming the file
# ---------------------------------------------------------------------------

READERS = [
    pytest.param(lambda p: read_video_frames(p), id="read_video_frames"),
    pytest.param(lambda p: read_audio(p), id="read_audio"),
]


@pytest.mark.parametrize("reader", READERS + [pytest.param(probe, id="probe")])
def test_missing_file(tmp_path, reader):
    with pytest.raises(MediaError, match=r"nowhere\.mp4.*file not found"):
        reader(tmp_path / "nowhere.mp4")


@pytest.mark.parametrize("reader", READERS + [pytest.param(probe, id="probe")])
def test_text_file_renamed_mp4(tmp_path, reader):
    path = tmp_path / "notes.mp4"
    path.write_text("These are my notes, not a video.\n" * 20)
    with pytest.raises(MediaError, match=r"notes\.mp4.*not a media file"):
        reader(path)


@pytest.mark.parametrize("reader", READERS)
def test_truncated_mp4(av_clip, tmp_path, reader):
    # The first half of a valid mp4: the header (written at the front) still
    # promises 32 frames and 2 s of audio, but half the data is gone.
    path, _, _ = av_clip
    data = path.read_bytes()
    broken = tmp_path / "half.mp4"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"half\.mp4.*truncated or corrupt"):
        reader(broken)


def test_mp4_cut_inside_its_header(av_clip, tmp_path):
    path, _, _ = av_clip
    broken = tmp_path / "stub.mp4"
    broken.write_bytes(path.read_bytes()[:400])
    with pytest.raises(MediaError, match=r"stub\.mp4"):
        read_video_frames(broken)


@pytest.mark.parametrize("reader", READERS)
def test_garbled_mp4(av_clip, tmp_path, reader):
    path, _, _ = av_clip
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 512] = bytes(range(256)) * 2  # overwrite 512 bytes of coded data
    broken = tmp_path / "garbled.mp4"
    broken.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"garbled\.mp4.*truncated or corrupt"):
        reader(broken)


def test_video_without_audio_track(silent_clip):
    with pytest.raises(MediaError, match=r"silent\.mp4.*no audio track.*allow_missing_audio=True"):
        read_audio(silent_clip)


def test_allow_missing_audio_gives_silence_with_warning(silent_clip):
    with pytest.warns(UserWarning, match=r"silent\.mp4.*no audio track"):
        silence = read_audio(silent_clip, sample_rate=8_000, allow_missing_audio=True)
    # 24 frames at 16 fps last 1.5 s.
    assert silence.dtype == torch.float32
    assert abs(len(silence) - 12_000) <= 80
    assert silence.abs().max() == 0


def test_frames_from_audio_only_file(tmp_path):
    path = write_audio(tmp_path / "speech.wav", tone(200, 0.5, 16_000), 16_000)
    with pytest.raises(MediaError, match=r"speech\.wav.*no video stream"):
        read_video_frames(path)


def test_zero_length_audio(tmp_path):
    # A valid wav header with an empty data chunk: an audio stream, no samples.
    path = tmp_path / "empty.wav"
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16_000)
        stream.layout = "mono"
        out.start_encoding()
    assert probe(path).has_audio
    with pytest.raises(MediaError, match=r"empty\.wav.*no samples"):
        read_audio(path)


def test_media_error_is_a_value_error():
    # Callers may catch MimoInputError or even ValueError for any bad input.
    assert issubclass(MediaError, MimoInputError) and issubclass(MediaError, ValueError)


# ---------------------------------------------------------------------------
# Writing: argument checks and atomicity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(4, 3, H, W), "uint8"),  # float frames
        (torch.zeros(4, H, W, 3, dtype=torch.uint8), r"\(T, 3, H, W\)"),  # channels last
        (torch.zeros(3, H, W, dtype=torch.uint8), r"\(T, 3, H, W\)"),  # one frame, no T
        (torch.zeros(4, 3, 47, W, dtype=torch.uint8), "even"),  # odd height
        (torch.zeros(0, 3, H, W, dtype=torch.uint8), "empty"),
    ],
)
def test_write_video_rejects_bad_frames(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps=8)
    assert list(tmp_path.iterdir()) == []


def test_write_video_rejects_bad_audio_and_args(tmp_path):
    frames = moving_square(4)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        write_video(tmp_path / "a.mp4", frames, fps=8, audio=3 * tone(440, 0.5, 16_000))
    with pytest.raises(ValueError, match="float"):
        write_video(tmp_path / "a.mp4", frames, fps=8, audio=torch.zeros(8000, dtype=torch.int16))
    with pytest.raises(ValueError, match="AAC"):
        write_video(tmp_path / "a.mp4", frames, fps=8, audio=tone(440, 0.5, 12_345), sample_rate=12_345)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", frames, fps=0)
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_video(tmp_path / "a.avi", frames, fps=8)
    assert list(tmp_path.iterdir()) == []


def test_write_audio_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\.wav or \.flac"):
        write_audio(tmp_path / "tone.mp3", tone(440, 0.1, 16_000), 16_000)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        write_audio(tmp_path / "tone.wav", 3 * tone(440, 0.1, 16_000), 16_000)
    with pytest.raises(ValueError, match=r"\(N,\) or \(C, N\)"):
        write_audio(tmp_path / "tone.wav", torch.zeros(1, 2, 100), 16_000)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_video_keeps_existing_file(tmp_path):
    path = write_video(tmp_path / "keep.mp4", moving_square(8), fps=8)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_video(path, torch.zeros(8, 3, H, W), fps=8)  # float frames: rejected
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_failure_mid_encoding_leaves_no_partial_file(tmp_path, monkeypatch):
    # The video is already encoded into the temporary file when adding the
    # audio fails: the destination must keep its old bytes, and the temporary
    # file must be gone.
    path = write_video(tmp_path / "keep.mp4", moving_square(8), fps=8)
    before = path.read_bytes()

    class ExplodingAudioFrame:
        @staticmethod
        def from_ndarray(*args, **kwargs):
            raise RuntimeError("simulated failure while encoding audio")

    monkeypatch.setattr(av, "AudioFrame", ExplodingAudioFrame)
    with pytest.raises(RuntimeError, match="simulated"):
        write_video(path, numbered_frames(8), fps=8, audio=tone(440, 1.0, 16_000))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_write_overwrites_existing_file(tmp_path):
    path = write_audio(tmp_path / "tone.flac", tone(440, 0.5, 16_000), 16_000)
    write_audio(path, tone(880, 0.25, 16_000), 16_000)
    decoded = read_audio(path)
    assert decoded.shape == (4_000,)
    assert dominant_frequency(decoded, 16_000) == pytest.approx(880, abs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tone.flac"]


def test_write_creates_missing_folders(tmp_path):
    path = write_audio(tmp_path / "a" / "b" / "tone.wav", tone(440, 0.1, 16_000), 16_000)
    assert path.is_file() and len(read_audio(path)) == 1_600
