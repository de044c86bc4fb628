"""Regenerate ``data_samples/``: small real media files made from the synthetic generator.

    python -m mimo_lib.data.make_samples            # writes ./data_samples
    python -m mimo_lib.data.make_samples --out DIR  # anywhere else

The folder is a dataset in the project's documented format (see README,
"Bring your own clips"): mp4 clips with audio tracks, a few stand-alone audio
files in the rates and channel layouts real recordings come in (16 kHz mono,
44.1 kHz stereo, 48 kHz stereo), and ``conversations.jsonl`` in the LLaVA
conversation schema. Clips are longer and larger than the model's input
(2 s, 24 fps, 96x96) so reading them shows real uniform frame sampling,
resizing and resampling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

# Not the user's business: torch's note about CUDA_HOME on a machine without a CUDA runtime.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

from mimo_lib.data.media import write_audio, write_video  # noqa: E402
from mimo_lib.data.synthetic import (  # noqa: E402
    INSTRUMENTS,
    PITCHES,
    QUESTION_TYPES,
    SyntheticConfig,
    article,
    make_sample,
    synthesize_note,
)

#: How the sample clips are rendered: longer, larger and smoother than the toy model's input.
SAMPLE_CONFIG = SyntheticConfig(num_frames=48, image_size=96, duration_s=2.0, sample_rate=16_000)
NUM_CLIPS = 10
SEED = 2026

#: Stand-alone sounds: (file name, instrument, pitch, sample rate, channels).
AUDIO_FILES = (
    ("sound-00.wav", "acoustic guitar", "low", 16_000, 1),
    ("sound-01.wav", "piano", "high", 44_100, 2),
    ("sound-02.flac", "flute", "low", 48_000, 2),
)


def _audio_file(instrument: str, pitch: str, sample_rate: int, channels: int, seed: int) -> torch.Tensor:
    """A 1.5 s note at 16 kHz, resampled to ``sample_rate`` and spread over ``channels``. ``(C, N)``"""
    rng = np.random.default_rng(seed)
    note = torch.from_numpy(0.7 * synthesize_note(instrument, PITCHES[pitch], 1.5, 16_000, rng))  # (N,)
    if sample_rate != 16_000:
        note = torchaudio.functional.resample(note, 16_000, sample_rate)
    # a real stereo recording is not two equal channels: pan it slightly
    gains = torch.tensor([1.0, 0.8][:channels]).unsqueeze(1)  # (C, 1)
    return (gains * note.unsqueeze(0)).clamp(-1.0, 1.0)  # (C, N)


def make_samples(out_dir: str | Path) -> list[dict]:
    """Write every sample file and ``conversations.jsonl`` into ``out_dir``; return the records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for index in range(NUM_CLIPS):
        question_type = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        num_turns = 2 if index % 2 else 1  # some multi-turn conversations too
        name = f"clip-{index:02d}"
        sample = make_sample([SEED, index], question_type, SAMPLE_CONFIG, num_turns, sample_id=name)
        write_video(
            out / f"{name}.mp4",
            sample.clip.video,
            fps=SAMPLE_CONFIG.fps,
            audio=sample.clip.audio,
            sample_rate=SAMPLE_CONFIG.sample_rate,
        )
        records.append(
            {"id": name, "video": f"{name}.mp4", "question_type": question_type, "conversations": sample.conversations}
        )
    for index, (file_name, instrument, pitch, sample_rate, channels) in enumerate(AUDIO_FILES):
        assert instrument in INSTRUMENTS
        write_audio(out / file_name, _audio_file(instrument, pitch, sample_rate, channels, SEED + index), sample_rate)
        question, answer = (
            ("What instrument is playing?", f"That is {article(instrument)}.")
            if index % 2 == 0
            else ("Is the note high or low?", f"The note is {pitch}.")
        )
        records.append(
            {
                "id": Path(file_name).stem,
                "audio": file_name,
                "question_type": "audio",
                "conversations": [
                    {"from": "human", "value": "<audio>\n" + question},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    annotation = out / "conversations.jsonl"
    temporary = annotation.with_name(annotation.name + ".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(temporary, annotation)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mimo_lib.data.make_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data_samples", help="folder to write (default: ./data_samples)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; pass a folder to write the samples into")
    records = make_samples(out)
    total = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
    print(f"wrote {len(records)} samples to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
