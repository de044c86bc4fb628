"""Ask a trained model about a clip: ``python -m mimo_lib.generate --load CKPT --video clip.mp4 --prompt "..."``.

The clip is read the way the training data was: ``num_frames`` frames spread
over the whole video and resized to the model's image size; the audio (the
video's own track, or ``--audio FILE``) mixed to mono, resampled to the
model's rate and cropped or zero-padded to its clip length with the dataset's
rule (:func:`mimo_lib.data.dataset.fit_audio_length`). The prompt gets the
``<video>`` and ``<audio>`` placeholders in front, exactly as in training::

    <bos>User: <video>
    <audio>
    What instrument is playing?
    Assistant:

and the answer (greedy, or sampled with ``--do-sample``) is printed alone on stdout.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from mimo_lib.checkpoint import CheckpointError, load_model, load_tokenizer
from mimo_lib.data.conversation import build_prompt
from mimo_lib.data.dataset import fit_audio_length
from mimo_lib.data.media import read_audio, read_video_frames
from mimo_lib.errors import MimoInputError
from mimo_lib.evaluate import decode_answer
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer


def read_media(
    config, video_path: Path | None, audio_path: Path | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(video (T, 3, H, W) uint8 or None, audio (N,) float32 or None)`` fitted to the model's config."""
    video = audio = None
    if video_path is not None:
        video = read_video_frames(video_path, config.vision.num_frames, config.vision.image_size)
    source = audio_path or video_path
    if source is not None:
        # A video without sound gives silence (with a warning) rather than no answer at all.
        audio = read_audio(source, config.audio.sample_rate, allow_missing_audio=audio_path is None)
        audio = fit_audio_length(audio, config.audio.num_samples)
    return video, audio


def answer(
    model: MIMOModel,
    tokenizer: Tokenizer,
    question: str,
    video: torch.Tensor | None = None,
    audio: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The model's answer to ``question`` about one clip (either modality may be missing)."""
    if "<video>" in question or "<audio>" in question:
        raise MimoInputError("leave <video> and <audio> out of the prompt: they are added for the media given")
    prompt = build_prompt(tokenizer, question, with_video=video is not None, with_audio=audio is not None)
    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, L)
    generator = torch.Generator(device=device).manual_seed(seed)
    new_tokens = model.generate(
        input_ids,
        None if video is None else video.unsqueeze(0).to(device),  # (1, T, 3, H, W)
        None if audio is None else audio.unsqueeze(0).to(device),  # (1, N)
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_id,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
    )  # (1, max_new_tokens)
    return decode_answer(tokenizer, new_tokens[0].tolist())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mimo_lib.generate", description="Answer a question about a video (and its sound)."
    )
    parser.add_argument("--load", type=Path, required=True, help="model folder, run folder or step folder")
    parser.add_argument("--video", type=Path, default=None, help="a video file (mp4, ...)")
    parser.add_argument("--audio", type=Path, default=None, help="an audio file to use instead of the video's track")
    parser.add_argument("--prompt", required=True, help='the question, e.g. "What instrument is playing?"')
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest answer, in tokens (default: 32)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of taking the most likely token")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    parser.add_argument("--device", default="cpu", help="default: cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.video is None and args.audio is None:
        parser.error("give --video (its sound is used too) and/or --audio")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    if args.do_sample and not args.temperature > 0:
        parser.error(f"--temperature must be positive (got {args.temperature})")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1 (got {args.top_k})")
    try:
        model = load_model(args.load, args.device)
        tokenizer = load_tokenizer(args.load)
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # a missing audio track is worth a line on stderr
            video, audio = read_media(model.config, args.video, args.audio)
        text = answer(
            model, tokenizer, args.prompt, video, audio, args.max_new_tokens, args.do_sample, args.temperature,
            args.top_k, args.seed,
        )
    except (CheckpointError, MimoInputError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
