"""One time window for both senses: a flash and a click at the same instant land in the same time chunk.

Each clip is an mp4 written with the project's own writer: grey frames with a white flash of one
chunk (1/8 s), and silence with a 10-ms click inside that chunk. The flash is found from the frames'
brightness, the click from the audio features' energy per token position (log-mel frames averaged
into audio tokens), never from a model. Clips are shorter than, as long as and longer than the
1-s window, with the window from 0 s and centred.
"""

from __future__ import annotations

import pytest
import torch

from mimo_lib.audio_tower import audio_features, fit_waveform, pool_sequence
from mimo_lib.config import AudioTowerConfig, MIMOConfig
from mimo_lib.data.dataset import AVFolderDataset
from mimo_lib.data.media import clip_window, cut_audio_window, read_clip, write_video
from mimo_lib.generate import read_media

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

FPS = 24  # 3 video frames per chunk of 1/8 s
RATE = 16_000
WINDOW_S = 1.0  # the toy model's clip_duration_s
NUM_FRAMES = 8  # F: frame k covers [k/8, (k+1)/8) of the window
NUM_TOKENS = 24  # A: audio token j covers [j/24, (j+1)/24) of the window; 3 per chunk (50 positions do not divide)
SIZE = 32
GREY, WHITE = 60, 255


def flash_and_click_clip(path, seconds: float, flash_start_s: float, click_s: float):
    """A grey clip of ``seconds`` with a white flash over ``[flash_start_s, flash_start_s + 1/8)`` and a click at ``click_s``."""
    frames = torch.full((round(seconds * FPS), 3, SIZE, SIZE), GREY, dtype=torch.uint8)  # (T, 3, H, W)
    first = round(flash_start_s * FPS)
    frames[first : first + FPS // NUM_FRAMES] = WHITE  # one chunk's 3 frames
    audio = torch.zeros(round(seconds * RATE))  # (N,)
    click = round(click_s * RATE)
    audio[click : click + RATE // 100] = 0.8 * torch.sign(torch.randn(RATE // 100, generator=torch.Generator().manual_seed(0)))
    write_video(path, frames, FPS, audio=audio, sample_rate=RATE)
    return path


def flash_frame(video: torch.Tensor) -> int:
    """The index of the one white frame among grey (or black) ones."""
    brightness = video.float().mean(dim=(1, 2, 3))  # (F,)
    assert (brightness > 200).sum() == 1, f"expected one flash frame, brightness {brightness.tolist()}"
    return int(brightness.argmax())


def click_token(audio: torch.Tensor) -> int:
    """The audio token with the most energy: log-mel frames (100 per second) averaged into ``NUM_TOKENS`` spans."""
    mel = audio_features(audio, AudioTowerConfig(clip_duration_s=WINDOW_S))  # (1, 80, 100) log-mel
    energy = mel.mean(dim=1).unsqueeze(-1)  # (1, 100, 1): one value per 10-ms frame
    per_token = pool_sequence(energy, NUM_TOKENS)[0, :, 0]  # (A,), token j = frames of [j/A, (j+1)/A)
    return int(per_token.argmax())


CASES = [
    # (clip seconds, window, chunk of the event, click offset inside the chunk)
    (seconds, where, chunk, offset)
    for seconds, where, chunks in [
        (0.5, "start", (0, 3)),  # shorter than the window: chunks 4..7 are past the end
        (1.0, "start", (1, 6)),
        (2.5, "start", (2, 7)),  # longer: the window is its first second
        (0.5, "center", (2, 5)),  # window [-0.25, 0.75): chunks 2..5 are the clip
        (1.0, "center", (0, 4)),
        (2.5, "center", (3, 7)),  # window [0.75, 1.75)
    ]
    for chunk in chunks
    for offset in (0.02, 0.1)
]


@pytest.mark.parametrize("seconds, where, chunk, offset", CASES)
def test_flash_and_click_land_in_the_same_time_chunk(tmp_path, seconds, where, chunk, offset):
    window = clip_window(seconds, WINDOW_S, where)
    flash_s = window.start_s + chunk * WINDOW_S / NUM_FRAMES  # file time where chunk `chunk` of the window begins
    path = flash_and_click_clip(tmp_path / "clip.mp4", seconds, flash_s, flash_s + offset)
    video, audio = read_clip(path, path, NUM_FRAMES, SIZE, RATE, WINDOW_S, where)
    assert video.shape == (NUM_FRAMES, 3, SIZE, SIZE) and audio.shape == (round(WINDOW_S * RATE),)

    k, j = flash_frame(video), click_token(audio)
    assert k == chunk
    assert j // (NUM_TOKENS // NUM_FRAMES) == k  # token j's span [j/24, (j+1)/24) lies in frame k's [k/8, (k+1)/8)
    assert j == int((offset + chunk / NUM_FRAMES + 0.005) * NUM_TOKENS)  # the token of the click's middle

    # where the window runs past the clip, both senses get nothing, over the same chunks
    inside = [0 <= window.start_s + (c + 0.5) / NUM_FRAMES < seconds for c in range(NUM_FRAMES)]
    for c in range(NUM_FRAMES):
        span = audio[c * RATE // NUM_FRAMES : (c + 1) * RATE // NUM_FRAMES]
        if not inside[c]:
            assert video[c].max() == 0 and span.abs().max() == 0, f"chunk {c} is outside the clip"
        else:
            assert video[c].float().mean() >= GREY - 5


@pytest.mark.parametrize("where", ["start", "center"])
def test_dataset_generate_and_evaluate_read_files_through_the_same_window(tmp_path, where):
    path = flash_and_click_clip(tmp_path / "clip.mp4", 2.5, 1.0, 1.05)
    (tmp_path / "conversations.jsonl").write_text(
        '{"id": "a", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\\n<audio>\\nWhat?"}, '
        '{"from": "gpt", "value": "A flash."}]}\n'
    )
    config = MIMOConfig(clip_window=where)
    expected = read_clip(path, path, config.vision.num_frames, config.vision.image_size, RATE, WINDOW_S, where)
    sample = AVFolderDataset(
        tmp_path, config.vision.num_frames, config.vision.image_size, clip_duration_s=WINDOW_S, clip_window=where
    )[0]
    from mimo_lib.evaluate import build_dataset  # what train.py and evaluate build for a folder
    from mimo_lib.tokenizer import Tokenizer

    built = build_dataset(tmp_path, config, Tokenizer.default(), num_samples=1, seed=0)[0]
    for video, audio in [(sample["video"], sample["audio"]), read_media(config, path, None), (built["video"], built["audio"])]:
        assert torch.equal(video, expected[0]) and torch.equal(audio, expected[1])
    # the window from 0 misses the flash at 1 s in both senses; the centred window [0.75, 1.75) holds it
    assert (expected[0].float().mean(dim=(1, 2, 3)) > 200).any() == (where == "center")


def test_a_window_from_0_cuts_audio_as_the_tower_does_bit_for_bit():
    # synthetic clips and files read with the default window keep today's audio exactly
    wave = torch.randn(23_456)
    for seconds in (0.5, 1.0, 2.0):
        window = clip_window(99.0, seconds, "start")
        assert torch.equal(cut_audio_window(wave, RATE, window), fit_waveform(wave, round(seconds * RATE))[0])
    shifted = cut_audio_window(wave, RATE, clip_window(1.0, 2.0, "center"))  # window [-0.5, 1.5)
    assert shifted.shape == (32_000,) and torch.equal(shifted[8000:31_456], wave)  # starts 0.5 s late
    assert shifted[:8000].abs().max() == 0 and shifted[31_456:].abs().max() == 0  # silence outside the wave


def test_bad_window_settings_are_refused():
    with pytest.raises(ValueError, match="--clip-window"):
        clip_window(1.0, 1.0, "middle")
    with pytest.raises(ValueError, match="--clip-duration"):
        clip_window(1.0, 0.0, "start")
