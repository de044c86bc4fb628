"""Ask a trained model about a clip: ``python -m mimo_lib.generate --load CKPT --video clip.mp4 --prompt "..."``.

The clip is read the way the training data was (:func:`mimo_lib.data.media.read_clip`): both senses
from the same time window of the model's clip length (``clip_duration_s``, from 0 s or centred on
the file as the model's ``clip_window`` says); ``num_frames`` frames spread over that window,
resized and centre-cropped to the model's image size; the audio (the video's own track, or
``--audio FILE``) mixed to mono, resampled to the model's rate and cut to the same window, with
black frames and silence where the window runs past the file. The prompt gets
the ``<video>`` and ``<audio>`` placeholders in front, exactly as in training::

    <bos>User: <video>
    <audio>
    What instrument is playing?
    Assistant:

and the answer (greedy, or sampled with ``--do-sample``) is printed alone on stdout.

* Several ``--prompt`` flags ask several questions about the same clip: one answer per line.
* ``--questions FILE.jsonl`` asks many, one JSON object per line, ``{"prompt": ..., "video": ..., "audio": ...}``
  (media paths relative to the file; ``"no_audio": true`` for a video-only question); each answer is
  printed as a JSON line ``{"prompt": ..., "answer": ...}``.
* ``--no-audio`` asks about the video alone, even when it has sound.
* An answer ends at ``<eos>``; a model that does not stop (the toy model on a question unlike its
  training, e.g. about a sound alone) is cut where it starts repeating a sentence.
* ``--max-new-tokens`` that does not fit in the model's ``max_sequence_length`` after the prompt is refused.
* ``--output-audio ANSWER.wav`` (chapter 10): a model trained with ``--stage speak`` answers "Play a low piano
  note." with ``<audio_out>``, 25 audio codes and ``</audio_out>`` (constrained decoding: see
  :mod:`mimo_lib.audio_output`); the codes go through the audio codec (``--codec``, default the shipped one)
  and Griffin-Lim into the wav. stdout shows the answer with each sound as ``<audio_out>(25 codes)</audio_out>``.
  A text-only model, an answer without a sound, or a sound cut off by ``--max-new-tokens`` is an error, and
  no file is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import unicodedata
from pathlib import Path

from mimo_lib.threads import THREADS_HELP, apply_thread_policy, check_threads_flag  # no torch at import time

# Not the user's business: torch's note about CUDA_HOME on a machine without a CUDA runtime.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

PROG = "python -m mimo_lib.generate"


def read_media(config, video_path: Path | None, audio_path: Path | None, use_video_audio: bool = True):
    """``(video (T, 3, H, W) uint8 or None, audio (N,) float32 or None)`` fitted to the model's config.

    ``use_video_audio=False``: the video's own sound track is not used (a question about the picture alone).
    """
    from mimo_lib.data.media import read_clip

    source = audio_path or (video_path if use_video_audio else None)
    # A video without sound gives silence (with a warning) rather than no answer at all.
    return read_clip(
        video_path, source, config.vision.num_frames, config.vision.image_size, config.audio.sample_rate,
        config.audio.clip_duration_s, config.clip_window, allow_missing_audio=audio_path is None,
    )  # (T, 3, H, W) uint8 or None, (num_samples,) float32 or None


def check_answer_fits(config, prompt_length: int, with_video: bool, with_audio: bool, max_new_tokens: int) -> None:
    """Refuse ``max_new_tokens`` that would run past the model's ``max_sequence_length``."""
    from mimo_lib.errors import MimoInputError

    used = prompt_length - int(with_video) - int(with_audio)  # each placeholder becomes the modality's tokens
    used += config.num_video_tokens * int(with_video) + config.num_audio_tokens * int(with_audio)
    room = config.language_model.max_sequence_length - used
    if max_new_tokens > room:
        raise MimoInputError(
            f"--max-new-tokens {max_new_tokens} does not fit: the prompt and media take {used} of the model's "
            f"{config.language_model.max_sequence_length} positions, so at most {max(room, 0)} new tokens can follow"
        )


def answer(
    model,
    tokenizer,
    question: str,
    video=None,
    audio=None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The model's answer to ``question`` about one clip (either modality may be missing)."""
    from mimo_lib.evaluate import decode_answer

    ids = answer_ids(model, tokenizer, question, video, audio, max_new_tokens, do_sample, temperature, top_k, seed)
    return decode_answer(tokenizer, ids)


def answer_ids(
    model,
    tokenizer,
    question: str,
    video=None,
    audio=None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> list[int]:
    """The generated token ids of :func:`answer` (``max_new_tokens`` of them, ``<eos>`` after the answer)."""
    import torch

    from mimo_lib.data.conversation import build_prompt
    from mimo_lib.errors import MimoInputError

    if "<video>" in question or "<audio>" in question:
        raise MimoInputError("leave <video> and <audio> out of the prompt: they are added for the media given")
    prompt = build_prompt(tokenizer, question, with_video=video is not None, with_audio=audio is not None)
    check_answer_fits(model.config, len(prompt), video is not None, audio is not None, max_new_tokens)
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
    return new_tokens[0].tolist()


def shown_answer(tokenizer, ids: list[int]) -> str:
    """The answer's text with each sound shown as ``<audio_out>(N codes)</audio_out>`` instead of N code tokens."""
    from mimo_lib.evaluate import decode_answer

    text = decode_answer(tokenizer, ids)
    return re.sub(r"<audio_out>((?:<audio_code_\d+>)*)(</audio_out>)?",
                  lambda m: f"<audio_out>({m.group(1).count('<audio_code_')} codes){m.group(2) or ''}", text)


def write_answer_audio(model, tokenizer, ids: list[int], path: Path, codec_path: Path) -> float:
    """Decode the sound of one answer into ``path`` (wav or flac); returns its length in seconds."""
    from mimo_lib.audio_codec import load_codec
    from mimo_lib.audio_output import AudioOutputError, answer_to_waveform
    from mimo_lib.data.media import write_audio

    codec = load_codec(codec_path)
    waveform = answer_to_waveform(ids, model.config, tokenizer.eos_id, codec)
    if waveform is None:
        raise AudioOutputError(
            f"the model answered without a sound ({shown_answer(tokenizer, ids)!r}), so nothing was written to "
            f"{path}; ask for one (\"Play a low piano note.\")"
        )
    write_audio(path, waveform, codec.config.sample_rate)
    return waveform.shape[-1] / codec.config.sample_rate


_SENTENCE_END = re.compile(r"(?<=[.!?])\s*")


def stop_at_repetition(text: str) -> str:
    """Cut an answer where it starts repeating a sentence (``"That is a flute. That is a flute...."``)."""
    kept: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        if sentence in kept or not any(c.isalnum() for c in sentence):
            break
        kept.append(sentence)
    return " ".join(kept) if kept else text.strip()


def readable(text: str, encoding: str | None = None) -> str:
    """Text safe to print: control characters (an untrained model's byte tokens) shown as escapes, and
    characters the terminal's encoding lacks as ``\\uXXXX``, so no raw invalid bytes reach the terminal."""
    shown = "".join(
        c if c == " " or unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    encoding = encoding or getattr(sys.stdout, "encoding", None) or "utf-8"
    return shown.encode(encoding, errors="backslashreplace").decode(encoding)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Answer questions about a video (and its sound).")
    parser.add_argument("--load", type=Path, required=True, help="model folder, run folder or step folder")
    parser.add_argument("--video", type=Path, default=None, help="a video file (mp4, ...)")
    parser.add_argument("--audio", type=Path, default=None, help="an audio file to use instead of the video's track")
    parser.add_argument("--no-audio", action="store_true", help="ask about the video alone, without its sound track")
    parser.add_argument(
        "--prompt", action="append", default=None,
        help='a question, e.g. "What instrument is playing?"; repeat the flag to ask several (one answer per line)',
    )
    parser.add_argument(
        "--questions", type=Path, default=None,
        help='a JSONL file of questions: {"prompt": ..., "video": ..., "audio": ..., "no_audio": false} per line',
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest answer, in tokens (default: 32)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of taking the most likely token")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    parser.add_argument("--device", default="cpu", help="default: cpu")
    parser.add_argument(
        "--output-audio", type=Path, default=None,
        help="write the answer's sound here (.wav or .flac); needs a model that speaks (--stage speak)",
    )
    parser.add_argument("--codec", type=Path, default=None, help="the audio codec for --output-audio (default: the shipped one)")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything about the command line that can be checked before loading anything."""
    if (args.prompt is None) == (args.questions is None):
        parser.error("give --prompt (one or more) or --questions FILE.jsonl")
    if args.questions is None and args.video is None and args.audio is None:
        parser.error("give --video (its sound is used too, unless --no-audio) and/or --audio")
    if args.no_audio and args.audio is not None:
        parser.error("--no-audio and --audio contradict each other; give one")
    if args.no_audio and args.video is None and args.questions is None:
        parser.error("--no-audio needs --video")
    if args.questions is not None and (args.video is not None or args.audio is not None):
        parser.error("--questions names its media per line; leave out --video and --audio")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    if args.do_sample and not args.temperature > 0:
        parser.error(f"--temperature must be positive (got {args.temperature})")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1 (got {args.top_k})")
    if args.seed < 0:
        parser.error(f"--seed must be at least 0 (got {args.seed})")
    if args.output_audio is not None:
        if args.questions is not None or len(args.prompt or []) != 1:
            parser.error("--output-audio writes the sound of one answer: give exactly one --prompt (no --questions)")
        if args.output_audio.suffix.lower() not in (".wav", ".flac"):
            parser.error(f"--output-audio {args.output_audio}: write a .wav or .flac file")
    if args.codec is not None and args.output_audio is None:
        parser.error("--codec is only used with --output-audio")
    threads_problem = check_threads_flag(args.threads)
    if threads_problem:
        parser.error(threads_problem)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")


def read_questions(path: Path) -> list[dict]:
    """The questions of a ``--questions`` file, each checked: ``{"prompt", "video", "audio", "no_audio", "where"}``."""
    from mimo_lib.data.dataset import read_annotation_text
    from mimo_lib.errors import DatasetFormatError

    if not path.is_file():
        raise DatasetFormatError(f"--questions {path}: file not found")
    questions = []
    for number, line in enumerate(read_annotation_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise DatasetFormatError(f"{where}: not a JSON object; each line must be one question") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise DatasetFormatError(f'{where}: each line must be an object with a "prompt" string')
        unknown = set(record) - {"prompt", "video", "audio", "no_audio"}
        if unknown:
            raise DatasetFormatError(f"{where}: unknown keys {sorted(unknown)}; use prompt, video, audio, no_audio")
        media = {}
        for key in ("video", "audio"):
            value = record.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise DatasetFormatError(f'{where}: "{key}" must be a file name')
            media[key] = None if value is None else (path.parent / value if not Path(value).is_absolute() else Path(value))
        if media["video"] is None and media["audio"] is None:
            raise DatasetFormatError(f'{where}: give "video" and/or "audio"')
        questions.append({"prompt": record["prompt"], **media, "no_audio": bool(record.get("no_audio")), "where": where})
    if not questions:
        raise DatasetFormatError(f"--questions {path}: no questions found")
    return questions


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    apply_thread_policy(args.threads)

    import warnings

    from mimo_lib.checkpoint import load_model, load_tokenizer
    from mimo_lib.errors import MimoInputError

    def ask(model, tokenizer, prompt, video, audio) -> str:
        if model.config.audio_output is not None:  # a model that speaks: show each sound as one short mark
            ids = answer_ids(model, tokenizer, prompt, video, audio, args.max_new_tokens, args.do_sample,
                             args.temperature, args.top_k, args.seed)
            return readable(stop_at_repetition(shown_answer(tokenizer, ids)))
        text = answer(
            model, tokenizer, prompt, video, audio, args.max_new_tokens, args.do_sample, args.temperature,
            args.top_k, args.seed,
        )
        return readable(stop_at_repetition(text))

    try:
        model = load_model(args.load, args.device)
        tokenizer = load_tokenizer(args.load)
        if args.output_audio is not None:
            from mimo_lib.audio_codec import SHIPPED_CODEC
            from mimo_lib.audio_output import require_audio_output

            require_audio_output(model.config, f"--load {args.load}")
            video, audio = read_media(model.config, args.video, args.audio, use_video_audio=not args.no_audio)
            ids = answer_ids(model, tokenizer, args.prompt[0], video, audio, args.max_new_tokens, args.do_sample,
                             args.temperature, args.top_k, args.seed)
            seconds = write_answer_audio(model, tokenizer, ids, args.output_audio, args.codec or SHIPPED_CODEC)
            print(readable(shown_answer(tokenizer, ids)), flush=True)
            print(f"wrote {args.output_audio} ({seconds:.2f} s)", file=sys.stderr)
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # a missing audio track is worth a line on stderr
            if args.questions is None:
                video, audio = read_media(model.config, args.video, args.audio, use_video_audio=not args.no_audio)
                for prompt in args.prompt:
                    print(ask(model, tokenizer, prompt, video, audio), flush=True)
                return 0
            questions = read_questions(args.questions)
            for q in questions:
                try:
                    video, audio = read_media(model.config, q["video"], q["audio"], use_video_audio=not q["no_audio"])
                except MimoInputError as error:
                    raise MimoInputError(f"{q['where']}: {error}") from None
                text = ask(model, tokenizer, q["prompt"], video, audio)
                print(json.dumps({"prompt": q["prompt"], "answer": text}, ensure_ascii=False), flush=True)
    except (MimoInputError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
