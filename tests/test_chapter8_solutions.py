"""The worked solutions of chapter 8's exercises, run and checked.

The chapter keeps its solutions folded in ``<details>`` blocks (no answer in a stored output); these
tests run the same computations on the library, so a change to the timing, the config checks or the
clip window that makes a solution wrong fails here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mimo_lib.config import ConfigError, get_preset
from mimo_lib.data.media import clip_window
from mimo_lib.model import MIMOModel

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def interleaved_toy():
    """The chapter's ``cfg``: the toy preset, interleaved in half-second chunks with time ids."""
    cfg = get_preset("toy")
    assert (cfg.av_layout, cfg.av_positions, cfg.chunk_seconds) == ("interleaved", "time", 0.5)
    return cfg


def test_exercise_1_ids_by_hand():
    cfg = interleaved_toy()
    quarter = MIMOModel(replace(cfg, chunk_seconds=0.25, projector=replace(cfg.projector, vision_temporal_compression=2)))
    timing = quarter.token_timing()
    vid, aud = cfg.video_token_id, cfg.audio_token_id
    assert sorted(set(timing.ticks(vid).tolist())) == [0, 6, 12, 18]
    assert int(timing.ticks(aud)[timing.chunks(aud) == 1][0]) == 7
    assert int((timing.chunks(aud) == 0).sum()) == 7


def test_exercise_2_a_merge_across_chunks_is_refused():
    cfg = interleaved_toy()
    with pytest.raises(ConfigError, match="chunk"):
        replace(cfg, projector=replace(cfg.projector, vision_temporal_compression=cfg.vision.num_frames))


def test_exercise_3_where_a_flash_lands():
    config = get_preset("toy")
    clip_s, frames, tokens = config.audio.clip_duration_s, config.vision.num_frames, config.num_audio_tokens

    def where_it_lands(t_file, where, seconds=2.0):
        w = clip_window(seconds, clip_s, where)
        t = t_file - w.start_s
        if not 0 <= t < w.duration_s:
            return None
        return int(t * frames / w.duration_s), int(t * tokens / w.duration_s)

    assert {where: where_it_lands(1.30, where) for where in ("start", "center")} == {"start": None, "center": (6, 20)}
