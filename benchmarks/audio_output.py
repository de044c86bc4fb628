"""Teach the chapter-7 model to answer with a sound, and judge the sound with the chapter-3 audio tower.

    python benchmarks/audio_output.py                 # train the speak stage, measure, write benchmarks/results/audio_output.json
    python benchmarks/audio_output.py --publish       # ... and commit the model as mimo_lib/pretrained/mimo_toy_speaks/
    python benchmarks/audio_output.py --train-iters 30 --num-samples 256 --per-task 8 --text-samples 20 --json ''   # a quick look

Four measurements (:mod:`mimo_lib.audio_output` explains the design):

1. **Extending the vocabulary leaves text alone.** The chapter-7 table (``mimo_lib.evaluate``: exact match per
   question type, and with video or audio zeroed or shuffled) of the loaded model, and of the same model with
   the 258 audio-out ids added (before any training): equal within noise (here: equal, answer for answer),
   plus the mean answer loss on held-out text questions before and after.
2. **Training** ``python -m mimo_lib.train --stage speak --load MODEL`` (the toy recipe's ``speak`` stage),
   timed: wall-clock, this process's CPU time, and the machine's load average (the machine is shared).
3. **The honest check.** Held-out requests of each task (``play_text``, ``play_heard``, ``play_shifted``,
   ``play_shape``: :data:`mimo_lib.data.synthetic.AUDIO_OUT_TYPES`), answered greedily under constrained
   decoding; each answer's codes -> codec -> Griffin-Lim -> waveform, judged zero-shot by the chapter-3 audio
   tower (instrument, pitch, both). Ablations as in chapter 7: video or audio zeroed or shuffled. Ceilings: the
   tower on real held-out clips, and on the 8 target notes through the codec (the best a perfect model can do).
4. **Text after speaking**: the chapter-7 table of the trained model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimo_lib.atomic import atomic_write_json, copy_folder_atomically  # noqa: E402
from mimo_lib.audio_output import (  # noqa: E402
    AudioJudge,
    evaluate_audio_output,
    extend_model,
    fit_length,
    score,
    shipped_codec,
    target_codes,
    target_waveform,
    tokenizer_for,
)
from mimo_lib.checkpoint import load_model  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.data.dataset import collate_av_batch  # noqa: E402
from mimo_lib.data.synthetic import AUDIO_OUT_TYPES, INSTRUMENTS, PITCHES, QUESTION_TYPES, SyntheticConfig  # noqa: E402
from mimo_lib.evaluate import ABLATIONS, build_dataset, format_table, run_ablations  # noqa: E402
from mimo_lib.pretrain_towers import make_pretraining_set, zero_shot_accuracy  # noqa: E402
from mimo_lib.towers import PRETRAINED_DIR  # noqa: E402
from mimo_lib.train import TrainConfig, train  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "audio_output.json"
PUBLISHED = PRETRAINED_DIR / "mimo_toy_speaks"
TEXT_SEED = HELD_OUT_SEED_OFFSET + 11  # held-out text questions (not the recipe's nor the tests' seed)
SPEAK_SEED = HELD_OUT_SEED_OFFSET + 13  # held-out audio-output requests


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@torch.no_grad()
def mean_answer_loss(model, dataset, tokenizer, batch_size: int = 16) -> float:
    """Mean next-token loss on the answers of ``dataset`` (text questions)."""
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate_av_batch(items, tokenizer.pad_id)
        out = model(batch.input_ids, batch.video, batch.audio, batch.labels, batch.attention_mask)
        n = int((batch.labels[:, 1:] != -100).sum())
        total += out.loss.item() * n
        count += n
    return total / max(count, 1)


def rounded(table):
    if isinstance(table, dict):
        return {k: rounded(v) for k, v in table.items()}
    return round(table, 4) if isinstance(table, float) else table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", default=str(PRETRAINED_DIR / "mimo_toy"), help="the text model to teach (default: mimo_toy)")
    parser.add_argument("--train-iters", type=int, default=None, help="default: the toy recipe's speak stage")
    parser.add_argument("--num-samples", type=int, default=None, help="training clips (default: the recipe's)")
    parser.add_argument("--per-task", type=int, default=50, help="held-out requests per audio-output task")
    parser.add_argument("--text-samples", type=int, default=100, help="held-out text questions for the chapter-7 table")
    parser.add_argument("--save", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", default=str(RESULT), help="where to write the results ('' : nowhere)")
    parser.add_argument("--publish", action="store_true", help=f"copy the trained model to {PUBLISHED}")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results: dict = {"script": "benchmarks/audio_output.py", "command": "python benchmarks/audio_output.py " + " ".join(argv or sys.argv[1:]),
                     "torch_threads": torch.get_num_threads(), "load": args.load}

    # ---- 1. the extension leaves text alone
    print("1. the chapter-7 table before and after extending the vocabulary", flush=True)
    base = load_model(args.load).eval()
    text_tokenizer = tokenizer_for(base.config)
    text_set = build_dataset("synthetic", base.config, text_tokenizer, args.text_samples, TEXT_SEED, QUESTION_TYPES)
    before = run_ablations(base, text_set, text_tokenizer)
    loss_before = mean_answer_loss(base, text_set, text_tokenizer)
    extended = extend_model(load_model(args.load).eval())
    speak_tokenizer = tokenizer_for(extended.config)
    text_set_ext = build_dataset("synthetic", extended.config, speak_tokenizer, args.text_samples, TEXT_SEED, QUESTION_TYPES)
    after = run_ablations(extended, text_set_ext, speak_tokenizer)
    loss_after = mean_answer_loss(extended, text_set_ext, speak_tokenizer)
    ids = text_tokenizer.encode("What instrument is playing?")
    logits_equal = bool(torch.equal(
        base.language_model(input_ids=torch.tensor([ids])).logits[..., : text_tokenizer.vocab_size],
        extended.language_model(input_ids=torch.tensor([ids])).logits[..., : text_tokenizer.vocab_size]))
    print(format_table(before), "\n--- extended, untrained ---\n" + format_table(after), flush=True)
    results["extension"] = {
        "vocab_size": [base.config.language_model.vocab_size, extended.config.language_model.vocab_size],
        "padded_vocab_size": [base.config.language_model.padded_vocab_size,
                              extended.config.language_model.padded_vocab_size],
        "text_logits_bitwise_equal": logits_equal,
        "held_out_text_samples": args.text_samples, "seed": TEXT_SEED,
        "table_before": rounded(before), "table_after_extension": rounded(after),
        "max_abs_difference": max(abs(before[c][t] - after[c][t]) for c in before for t in before[c]),
        "answer_loss_before": round(loss_before, 6), "answer_loss_after_extension": round(loss_after, 6),
    }
    del base, extended

    # ---- 2. train the speak stage
    print("2. training --stage speak", flush=True)
    run_dir = Path(args.save) if args.save else Path(tempfile.mkdtemp(prefix="speak-"))
    config = TrainConfig(stage="speak", load=args.load, save=str(run_dir), train_iters=args.train_iters,
                         num_samples=args.num_samples, eval_samples=0, save_interval=0)
    load_start, wall, cpu = load_average(), time.perf_counter(), time.process_time()
    result = train(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    resolved = TrainConfig.from_dict(__import__("json").loads((result.final / "train_config.json").read_text()))
    results["training"] = {
        "command": f"python -m mimo_lib.train --stage speak --load {args.load} --save RUN"
                   + (f" --train-iters {args.train_iters}" if args.train_iters else "")
                   + (f" --num-samples {args.num_samples}" if args.num_samples else ""),
        "train_iters": resolved.train_iters, "micro_batch_size": resolved.micro_batch_size,
        "num_samples": resolved.num_samples, "question_types": list(resolved.question_types),
        "num_turns": resolved.num_turns, "lr": resolved.lr, "recipe_version": resolved.recipe_version,
        "wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1), "load_average_before": load_start,
        "load_average_after": load_average(), "cpu_count": os.cpu_count(),
        "final_loss": round(result.metrics[-1]["loss"], 4),
    }
    print(results["training"], flush=True)

    # ---- 3. the honest check
    print("3. judging the generated sounds", flush=True)
    model = load_model(result.final).eval()
    tokenizer = tokenizer_for(model.config)
    codec, judge = shipped_codec(), AudioJudge()
    held_out = build_dataset("synthetic", model.config, tokenizer, args.per_task * len(AUDIO_OUT_TYPES), SPEAK_SEED,
                             AUDIO_OUT_TYPES)
    t0 = time.perf_counter()
    speak = {condition: evaluate_audio_output(model, held_out, tokenizer, codec, judge, media_transform=transform)
             for condition, transform in ABLATIONS.items()}
    for condition, table in speak.items():
        print(condition, {t: {k: round(v, 2) for k, v in row.items()} for t, row in table.items()}, flush=True)
    keys = [(i, p) for i in INSTRUMENTS for p in PITCHES]
    wants = [{"instrument": i, "pitch": p} for i, p in keys]
    target_waves = codec.codes_to_waveform(torch.tensor([target_codes(i, p) for i, p in keys]))
    real_audio, real_targets = make_pretraining_set("audio", 256, HELD_OUT_SEED_OFFSET + 17, SyntheticConfig())
    results["audio_output"] = {
        "held_out_per_task": args.per_task, "seed": SPEAK_SEED, "eval_s": round(time.perf_counter() - t0, 1),
        "judge": "chapter-3 audio tower (mimo_lib/pretrained/audio_tower_toy.safetensors), zero-shot: nearest of the "
                 "8 '<a instrument> plays <a pitch> note' captions",
        "goal": {"play_text": 0.9, "play_heard": 0.8, "play_shifted": 0.8, "play_shape": 0.8},
        "chance_both": {"play_text": 1 / 8, "play_heard": 1 / 8, "play_shifted": 1 / 8, "play_shape": 1 / 8},
        "ceiling": {
            "tower_on_real_held_out_clips": rounded(zero_shot_accuracy(judge.pretrainer, real_audio, real_targets)),
            "tower_on_the_8_targets_through_the_codec": rounded(score(judge(fit_length(target_waves, 16000)), wants)),
            "tower_on_the_8_target_renderings": rounded(score(judge(torch.stack([target_waveform(i, p) for i, p in keys])),
                                                              wants)),
        },
        "by_condition": rounded(speak),
    }

    # ---- 4. text after speaking
    print("4. the chapter-7 table of the trained model", flush=True)
    text_after = run_ablations(model, text_set_ext, tokenizer)
    print(format_table(text_after), flush=True)
    results["text_after_speak_training"] = {"table": rounded(text_after),
                                            "answer_loss": round(mean_answer_loss(model, text_set_ext, tokenizer), 6)}
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    if args.publish:
        copy_folder_atomically(result.final, PUBLISHED)  # final/ is save_model_only's: weights, config, tokenizer, manifest
        print(f"published {PUBLISHED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
