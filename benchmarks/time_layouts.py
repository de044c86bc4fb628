"""Block or interleaved, counted or timed positions: which layout learns ``time`` questions? (issue 11)

    OMP_NUM_THREADS=1 python benchmarks/time_layouts.py       # writes benchmarks/results/time_layouts.json
    OMP_NUM_THREADS=1 python benchmarks/time_layouts.py --train-iters 60 --num-samples 256 --eval-samples 40 \\
        --out /tmp/time_layouts.json                          # a quick look

Four variants of the toy model, at an equal training budget, from the same seed, on the same
conversations in the same order:

============================  ==========================================================================
``block / sequence``          the shipped layout: all video tokens (8 frames merged per cell), then all
                              audio tokens; position ids 0, 1, 2, ...
``block / time``              the same tokens; time-aware ids (one per 40 ms, video and audio of the
                              same instant share one; text continues at max + 1)
``interleaved / sequence``    0.25-s chunks: each chunk's video tokens (its 2 frames merged per cell),
                              then its audio tokens; ids 0, 1, 2, ...
``interleaved / time``        the interleaved layout with time-aware ids (Qwen2.5-Omni's TMRoPE in one
                              temporal channel)
============================  ==========================================================================

Each starts from the shipped towers (``mimo_lib/pretrained``, frozen; their features are computed
once for all variants, as ``TowerFeatureCache`` does in training) and trains the projectors and the
decoder from scratch with ``mimo_lib.train.train_step`` (AdamW, warm-up then cosine, the toy
instruct recipe's learning rates and batch size): a short instruct run, not the recipe's 4000 steps.
Then every variant answers the same held-out clips (greedy, exact match), per question type, and the
``time`` questions again with the video features or the audio features zeroed: a model that answers
``time`` from both senses falls without either (to 1/2 if it still recognises both events,
lower if it misses one: answers are scored by exact match).

The interleaved layout keeps a time axis for the video (4 chunks x 16 cells = 64 video tokens
instead of 16), so its sequences are longer: the JSON records each variant's mean positions per
sample and seconds per step next to its accuracy. Nothing is asserted here.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mimo_lib  # noqa: E402
from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.config import MIMOConfig, ProjectorConfig, get_preset  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch  # noqa: E402
from mimo_lib.data.synthetic import QUESTION_TYPES, synthetic_config_for  # noqa: E402
from mimo_lib.evaluate import _questions, accuracy_by_type, decode_answer  # noqa: E402
from mimo_lib.feature_cache import TowerFeatureCache  # noqa: E402
from mimo_lib.language_model import generate  # noqa: E402
from mimo_lib.model import MIMOModel  # noqa: E402
from mimo_lib.optim import WarmupCosineSchedule, make_optimizer  # noqa: E402
from mimo_lib.recipes import get_recipe  # noqa: E402
from mimo_lib.threads import apply_thread_policy  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402
from mimo_lib.towers import shipped_checkpoint  # noqa: E402
from mimo_lib.train import train_step  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "time_layouts.json"
VARIANTS = ("block/sequence", "block/time", "interleaved/sequence", "interleaved/time")
CONDITIONS = ("original", "video zeros", "audio zeros")


def variant_config(base: MIMOConfig, variant: str, chunk_seconds: float) -> MIMOConfig:
    """``"layout/positions"`` -> the model config: block keeps the shipped projector (all frames of a cell in
    one token), interleaved merges only the frames of one chunk (the video keeps a time axis)."""
    layout, positions = variant.split("/")
    kt = base.projector.vision_temporal_compression
    if layout == "interleaved":
        kt = max(1, round(chunk_seconds * base.vision.num_frames / base.audio.clip_duration_s))
    projector = replace(base.projector, vision_temporal_compression=kt)
    return replace(base, av_layout=layout, av_positions=positions, chunk_seconds=chunk_seconds,
                   projector=ProjectorConfig(**vars(projector)))


def feature_rows(cache: TowerFeatureCache, indices: list[int]) -> dict[str, torch.Tensor]:
    return {m: cache.features[m][torch.tensor(indices)] for m in ("video", "audio")}


@torch.no_grad()
def answer(model: MIMOModel, questions: list[dict], features: list[dict], tokenizer: Tokenizer,
           zero: str | None = None, batch_size: int = 32) -> list[dict]:
    """Greedy answers from cached tower features (``zero``: that sense's features zeroed)."""
    model.eval()
    results = []
    for start in range(0, len(questions), batch_size):
        chunk, feats = questions[start:start + batch_size], features[start:start + batch_size]
        batch = collate_av_batch(chunk, tokenizer.pad_id)
        video = torch.stack([f["video"] for f in feats])  # (B, Nv, Dv)
        audio = torch.stack([f["audio"] for f in feats])  # (B, Na, Da)
        if zero == "video":
            video = torch.zeros_like(video)
        if zero == "audio":
            audio = torch.zeros_like(audio)
        combined = model.combine(batch.input_ids, attention_mask=batch.attention_mask, padding_side="left",
                                 video_features=video, audio_features=audio)
        budget = 2 + max(len(tokenizer.encode(" " + q["reference"])) for q in chunk)
        new = generate(model.language_model, combined.embeddings, combined.attention_mask, combined.position_ids,
                       max_new_tokens=budget, eos_token_id=tokenizer.eos_id)
        for q, ids in zip(chunk, new.tolist()):
            prediction = decode_answer(tokenizer, ids)
            results.append({"question_type": q["question_type"], "correct": prediction == q["reference"]})
    model.train()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe = get_recipe("toy").instruct
    parser.add_argument("--train-iters", type=int, default=250, help="optimizer steps per variant")
    parser.add_argument("--micro-batch-size", type=int, default=recipe.micro_batch_size)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--min-lr", type=float, default=recipe.min_lr)
    parser.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    parser.add_argument("--num-samples", type=int, default=1536, help="training conversations (one clip each)")
    parser.add_argument("--question-types", default="vision,motion,audio,both,time,time,time",
                        help="first questions, cycled (repeats weight a type)")
    parser.add_argument("--eval-samples", type=int, default=200, help="held-out clips, types cycled evenly")
    parser.add_argument("--chunk-seconds", type=float, default=0.25)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mimo_lib.threads' policy)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    threads = apply_thread_policy(args.threads)
    started = time.perf_counter()
    tokenizer = Tokenizer.default()
    base = get_preset("toy")
    types = [t for t in args.question_types.split(",") if t]

    # ---- the clips and their tower features, once for every variant
    torch.manual_seed(args.seed)
    towers = MIMOModel(base).eval()
    towers.load_towers(shipped_checkpoint("vision"), shipped_checkpoint("audio"))
    synthetic = synthetic_config_for(base)
    train_set = SyntheticAVDataset(args.num_samples, args.seed, synthetic, types, 1, tokenizer)
    eval_set = SyntheticAVDataset(args.eval_samples, args.seed + HELD_OUT_SEED_OFFSET, synthetic, QUESTION_TYPES, 1,
                                  tokenizer)
    train_cache = TowerFeatureCache(towers, train_set, tokenizer.pad_id)
    train_cache.fill(progress=False)
    eval_cache = TowerFeatureCache(towers, eval_set, tokenizer.pad_id)
    eval_cache.fill(progress=False)
    questions, features = [], []
    for i in range(len(eval_set)):
        sample = {**eval_cache.text[i], "video": None, "audio": None}
        for q in _questions(sample, tokenizer):
            questions.append(q)
            features.append({m: eval_cache.features[m][i] for m in ("video", "audio")})
    features_s = time.perf_counter() - started
    print(f"tower features of {len(train_set)} + {len(eval_set)} clips: {features_s:.0f} s", flush=True)

    order = torch.randint(len(train_set), (args.train_iters, args.micro_batch_size),
                          generator=torch.Generator().manual_seed(args.seed))  # the same batches for every variant
    results = {}
    for variant in [v for v in args.variants.split(",") if v]:
        config = variant_config(base, variant, args.chunk_seconds)
        torch.manual_seed(args.seed)
        model = MIMOModel(config)
        model.set_trainable(towers=False)
        optimizer, _ = make_optimizer(model.named_parameters(), args.lr, args.weight_decay)
        schedule = WarmupCosineSchedule(args.lr, args.min_lr, max(1, args.train_iters // 20), args.train_iters)
        t0, losses, positions = time.perf_counter(), [], 0
        for step in range(1, args.train_iters + 1):
            batch = train_cache.batch(order[step - 1].tolist())
            numbers = train_step(model, batch, optimizer, schedule(step), 1.0, step)
            losses.append(numbers["loss"])
            positions += numbers["tokens"]
        train_s = time.perf_counter() - t0
        accuracy = {}
        for condition in CONDITIONS:
            zero = None if condition == "original" else condition.split()[0]
            accuracy[condition] = accuracy_by_type(answer(model, questions, features, tokenizer, zero))
        results[variant] = {
            "av_layout": config.av_layout, "av_positions": config.av_positions,
            "vision_temporal_compression": config.projector.vision_temporal_compression,
            "video_tokens": config.num_video_tokens, "audio_tokens": config.num_audio_tokens,
            "mean_positions_per_sample": round(positions / (args.train_iters * args.micro_batch_size), 1),
            "train_seconds": round(train_s, 1), "seconds_per_step": round(train_s / args.train_iters, 3),
            "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "accuracy": {c: {t: round(v, 3) for t, v in a.items()} for c, a in accuracy.items()},
        }
        print(f"{variant:22s} {train_s:5.0f} s  loss {results[variant]['final_loss']:.3f}  "
              + "  ".join(f"{t} {v:.2f}" for t, v in accuracy["original"].items())
              + f"  | time without video {accuracy['video zeros'].get('time', float('nan')):.2f}"
              + f", without audio {accuracy['audio zeros'].get('time', float('nan')):.2f}", flush=True)

    atomic_write_json(args.out, {
        "benchmark": "time_layouts", "script": "benchmarks/time_layouts.py",
        "command": "OMP_NUM_THREADS=1 python benchmarks/time_layouts.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "chance": {"time": "1/2 for a model that recognises both events of a clip but not which came first "
                           "(answers are exact-match phrases, so a model that misses an event scores lower)"},
        "eval_questions_per_type": {t: sum(q["question_type"] == t for q in questions) for t in QUESTION_TYPES},
        "feature_seconds": round(features_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
        "mimo_lib": getattr(mimo_lib, "__version__", None),
        "variants": results,
    })
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
