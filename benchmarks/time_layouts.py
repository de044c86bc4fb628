"""Block or interleaved, counted or timed positions: which layout learns ``time`` questions? (issue 11)

    OMP_NUM_THREADS=1 python benchmarks/time_layouts.py --jobs 2   # writes benchmarks/results/time_layouts.json
    OMP_NUM_THREADS=1 python benchmarks/time_layouts.py --jobs 2 --variants block/sequence+embedding \
        --merge                                                          # add variants to it
    OMP_NUM_THREADS=1 python benchmarks/time_layouts.py --train-iters 60 --eval-interval 20 --num-samples 256 \\
        --eval-samples 40 --out /tmp/time_layouts.json                  # a quick look

Four variants of the toy model, at an equal training budget, from the same seed, on the same
conversations in the same order:

============================  ==========================================================================
``block / sequence``          ``MIMOConfig()``, the model of chapters 4-7: all video tokens (the 8 frames
                              of a grid cell merged into one, 16 tokens), then all audio tokens; position
                              ids 0, 1, 2, ...
``block / time``              the same tokens; time-aware ids (one per 40 ms, video and audio of the
                              same instant share one; text continues at max + 1)
``interleaved / sequence``    the toy preset's 0.5-s chunks: each chunk's video tokens (the 4 frames of
                              that chunk merged per cell: 2 chunks x 16 = 32 tokens), then its audio
                              tokens; ids 0, 1, 2, ...
``interleaved / time``        the interleaved layout with time-aware ids (Qwen2.5-Omni's TMRoPE in one
                              temporal channel)
``+ embedding``               the same plus the time embedding (``av_time_embedding``: a learned vector per
                              0.5-s chunk added to that chunk's video and audio tokens, either layout);
                              ``interleaved/time+embedding`` is the shipped ``toy`` preset
============================  ==========================================================================

Neither layout is weakened: ``block / sequence`` is ``MIMOConfig()`` and ``interleaved / time+embedding``
(at the default ``--chunk-seconds``) is ``get_preset("toy")``, asserted below, so a change to either cannot
silently make this benchmark measure something else. Both share the same towers (the audio tower
attends within 0.5-s windows).

``--merge`` adds the variants run now to those already in ``--out`` (run with the same settings, which is
checked), so a variant added later is measured without re-running the others.

Each starts from the shipped towers (``mimo_lib/pretrained``, frozen; their features are computed
once for all variants of a process, as ``TowerFeatureCache`` does in training) and trains the
projectors and the decoder from scratch with ``mimo_lib.train.train_step`` on the toy instruct
recipe's data (its first-question mix, ``num_turns`` questions per conversation with the trainer's
follow-up types) and its learning rates, weight decay and batch size, for fewer steps than the recipe.
Every ``--eval-interval`` steps (and at the end) each variant answers the same held-out clips
(greedy, exact match, one question per clip, types cycled evenly): the curve of accuracy per type,
and the first evaluated step where ``time`` reaches 90% and every type 95%. At the end the ``time``
questions are asked again with the video features or the audio features zeroed: a model that answers
``time`` from both senses falls without either (to 1/2 if it still recognises both events, lower if
it misses one: answers are scored by exact match).

``--jobs N`` runs the variants in N processes of one thread each (round-robin), each computing the
tower features of the same clips itself, and merges their results into one JSON. The interleaved
layout keeps a time axis for the video (32 video tokens instead of 16), so its sequences are longer:
the JSON records each variant's mean positions per sample and seconds per step next to its accuracy.
Nothing is asserted about the results here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mimo_lib  # noqa: E402
from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.config import MIMOConfig, get_preset  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch  # noqa: E402
from mimo_lib.data.synthetic import FALSE_CLAIM_ATTRIBUTES, QUESTION_TYPES, synthetic_config_for  # noqa: E402
from mimo_lib.evaluate import _questions, accuracy_by_type, decode_answer  # noqa: E402
from mimo_lib.feature_cache import TowerFeatureCache  # noqa: E402
from mimo_lib.language_model import generate  # noqa: E402
from mimo_lib.model import MIMOModel  # noqa: E402
from mimo_lib.optim import WarmupCosineSchedule, make_optimizer  # noqa: E402
from mimo_lib.recipes import get_recipe  # noqa: E402
from mimo_lib.threads import apply_thread_policy  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402
from mimo_lib.towers import shipped_checkpoint  # noqa: E402
from mimo_lib.train import FOLLOW_UP_TYPES, TrainConfig, train_step  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "time_layouts.json"
SCRIPT = "benchmarks/time_layouts.py"
VARIANTS = ("block/sequence", "block/time", "interleaved/sequence", "interleaved/time",
            "block/sequence+embedding", "interleaved/time+embedding")
#: Settings that may differ between the runs --merge joins (the rest must be equal).
MERGE_FREE = ("variants", "jobs", "threads", "out", "merge")
CONDITIONS = ("original", "video zeros", "audio zeros")
TIME_BAR, ALL_BAR = 0.9, 0.95  # first_step_time_at_least_90, first_step_all_at_least_95


def variant_config(base: MIMOConfig, variant: str, chunk_seconds: float) -> MIMOConfig:
    """``"layout/positions[+embedding]"`` -> the model config. Block: ``base`` itself (its projector merges all
    frames of a cell into one token), only the position ids changed. Interleaved: chunks of ``chunk_seconds``, the
    projector merging only the frames of one chunk (the video keeps a time axis). ``+embedding``: with the time
    embedding, one vector per chunk of ``chunk_seconds`` (in the block layout too)."""
    layout_positions, _, extra = variant.partition("+")
    layout, positions = layout_positions.split("/")
    embedding = extra == "embedding"
    if layout == "block":
        return replace(base, av_positions=positions, av_time_embedding=embedding,
                       chunk_seconds=chunk_seconds if embedding else base.chunk_seconds)
    kt = max(1, round(chunk_seconds * base.vision.num_frames / base.audio.clip_duration_s))  # frames per chunk
    projector = replace(base.projector, vision_temporal_compression=kt)
    return replace(base, av_layout=layout, av_positions=positions, chunk_seconds=chunk_seconds, projector=projector,
                   av_time_embedding=embedding)


def check_variants_are_the_presets(base: MIMOConfig) -> None:
    """The block layout is chapters 4-7's model, the interleaved one the shipped toy preset, exactly."""
    toy = get_preset("toy")
    assert variant_config(base, "block/sequence", toy.chunk_seconds) == MIMOConfig(), \
        "block/sequence is no longer MIMOConfig(): update variant_config"
    assert variant_config(base, "interleaved/time+embedding", toy.chunk_seconds) == toy, \
        "interleaved/time+embedding at the default --chunk-seconds is no longer get_preset('toy'): update variant_config"


def settings_of(args: argparse.Namespace) -> dict:
    """The ``settings`` a run records: every command-line value, paths as text."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def earlier_run(args: argparse.Namespace) -> dict | None:
    """With ``--merge``, the JSON already in ``args.out`` (None without it or without the file), after checking
    that it was run with this run's settings outside :data:`MERGE_FREE`: called before any work, and again
    when writing."""
    if not args.merge or not Path(args.out).is_file():
        return None
    earlier = json.loads(Path(args.out).read_text(encoding="utf-8"))
    mine = {k: v for k, v in settings_of(args).items() if k not in MERGE_FREE}
    theirs = {k: v for k, v in earlier["settings"].items() if k not in MERGE_FREE}
    if mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise SystemExit(f"--merge: {args.out} was run with other settings ({', '.join(differ)}); pass the same "
                         "values or run every variant")
    return earlier


def merged_with_earlier(args: argparse.Namespace, record: dict) -> dict:
    """``record`` (this run's JSON) with the variants of ``args.out`` that this run did not measure, when
    ``--merge`` is given (:func:`earlier_run`)."""
    earlier = earlier_run(args)
    if earlier is None:
        return record
    kept = {name: v for name, v in earlier["variants"].items() if name not in record["variants"]}
    order = [v for v in VARIANTS if v in kept or v in record["variants"]]
    variants = {name: record["variants"].get(name, kept.get(name)) for name in order}
    return {**record, "command": f"{earlier['command']}; then {record['command']}",
            "settings": {**record["settings"], "variants": ",".join(order)},
            "earlier_runs": earlier.get("earlier_runs", []) + [{k: earlier[k] for k in (
                "command", "children", "total_seconds") if k in earlier} | {"variants": list(kept)}],
            "variants": variants}


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


def first_step(curve: list[dict], reached) -> int | None:
    """The first evaluated step whose accuracies satisfy ``reached`` (None: none did)."""
    return next((point["step"] for point in curve if reached(point)), None)


def command_line(argv: list[str] | None) -> str:
    return f"OMP_NUM_THREADS=1 python {SCRIPT} " + " ".join(sys.argv[1:] if argv is None else argv)


def print_table(variants: dict[str, dict]) -> None:
    """One row per variant: positions, seconds per step, steps to time >= 90%, accuracy per type, ablations."""
    types = [t for t in QUESTION_TYPES if any(t in v["accuracy"]["original"] for v in variants.values())]
    header = (f"{'variant':26s} {'pos/sample':>10s} {'s/step':>7s} {'time>=90':>8s} "
              + " ".join(f"{t:>6s}" for t in types) + f" {'time -video':>11s} {'time -audio':>11s}")
    print(header)
    print("-" * len(header))
    for name, v in variants.items():
        acc = v["accuracy"]
        reached = v["first_step_time_at_least_90"]
        print(f"{name:26s} {v['mean_positions_per_sample']:10.1f} {v['seconds_per_step']:7.3f} "
              f"{'-' if reached is None else reached:>8} "
              + " ".join(f"{acc['original'].get(t, float('nan')):6.2f}" for t in types)
              + f" {acc['video zeros'].get('time', float('nan')):11.2f}"
              + f" {acc['audio zeros'].get('time', float('nan')):11.2f}", flush=True)


def run_jobs(args: argparse.Namespace, argv: list[str] | None, started: float) -> None:
    """Run the variants in ``args.jobs`` child processes (round-robin, one thread each) and merge their JSON."""
    variants = [v for v in args.variants.split(",") if v]
    groups = [variants[i::args.jobs] for i in range(args.jobs) if variants[i::args.jobs]]
    passed = {k: v for k, v in vars(args).items() if k not in MERGE_FREE}
    common = [f"--{k.replace('_', '-')}={v}" for k, v in passed.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="time_layouts_") as folder:
        outs = [Path(folder) / f"job{i}.json" for i in range(len(groups))]
        children = [
            subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *common, "--threads=1", "--jobs=1",
                              f"--variants={','.join(group)}", f"--out={out}"], env=env)
            for group, out in zip(groups, outs)
        ]  # same seed in every child: the same clips, the same batch order, the same initial weights
        codes = [child.wait() for child in children]
        if any(codes):
            raise SystemExit(f"time_layouts: child processes exited with {codes}")
        parts = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    merged = {name: part["variants"][name] for name in variants for part in parts if name in part["variants"]}
    first = parts[0]
    record = merged_with_earlier(args, {
        "benchmark": "time_layouts", "script": SCRIPT, "command": command_line(argv),
        "settings": settings_of(args),
        "jobs": args.jobs,
        "children": [{"variants": list(part["variants"]), "threads": part["threads"],
                      "feature_seconds": part["feature_seconds"], "total_seconds": part["total_seconds"]}
                     for part in parts],  # each child computes the tower features of the same clips itself
        "chance": first["chance"],
        "eval_questions_per_type": first["eval_questions_per_type"],
        "train_data": first["train_data"],
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": 1, "torch": torch.__version__, "python": platform.python_version(),
        "mimo_lib": getattr(mimo_lib, "__version__", None),
        "variants": merged,
    })
    atomic_write_json(args.out, record)
    print()
    print_table(record["variants"])
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s in all, {args.jobs} processes)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe = get_recipe("toy").instruct
    toy = get_preset("toy")
    parser.add_argument("--train-iters", type=int, default=1500, help="optimizer steps per variant")
    parser.add_argument("--eval-interval", type=int, default=250,
                        help="evaluate every this many steps, and at the end (0: at the end only)")
    parser.add_argument("--micro-batch-size", type=int, default=recipe.micro_batch_size)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--min-lr", type=float, default=recipe.min_lr)
    parser.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    parser.add_argument("--num-samples", type=int, default=4096, help="training conversations (one clip each)")
    parser.add_argument("--question-types", default=",".join(recipe.question_types),
                        help="first questions, cycled (repeats weight a type); default: the toy instruct recipe's")
    parser.add_argument("--num-turns", type=int, default=recipe.num_turns,
                        help="questions per training conversation, later ones of mimo_lib.train's follow-up types")
    parser.add_argument("--eval-samples", type=int, default=200, help="held-out clips, types cycled evenly")
    parser.add_argument("--chunk-seconds", type=float, default=toy.chunk_seconds,
                        help="interleaved variants' chunk (the projector merges the frames of one chunk)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mimo_lib.threads' policy)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run the variants in this many processes of one thread each (round-robin)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--merge", action="store_true",
                        help="keep the variants already in --out that this run does not measure (same settings)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base = MIMOConfig()
    check_variants_are_the_presets(base)
    earlier_run(args)  # a --merge that cannot be done is refused before any training
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {','.join(VARIANTS)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.jobs > 1:
        run_jobs(args, argv, started)
        return
    threads = apply_thread_policy(args.threads)
    tokenizer = Tokenizer.default()
    types = [t for t in args.question_types.split(",") if t]

    # ---- the clips and their tower features, once for every variant (the towers are the same in all four)
    torch.manual_seed(args.seed)
    towers = MIMOModel(base).eval()
    towers.load_towers(shipped_checkpoint("vision"), shipped_checkpoint("audio"))
    synthetic = synthetic_config_for(base)
    train_set = SyntheticAVDataset(args.num_samples, args.seed, synthetic, types, args.num_turns, tokenizer,
                                   follow_up_types=FOLLOW_UP_TYPES, false_claim_attributes=FALSE_CLAIM_ATTRIBUTES)
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
    evaluated = {s for s in range(1, args.train_iters + 1)
                 if s == args.train_iters or (args.eval_interval > 0 and s % args.eval_interval == 0)}
    results = {}
    for variant in variants:
        config = variant_config(base, variant, args.chunk_seconds)
        torch.manual_seed(args.seed)
        model = MIMOModel(config)
        model.set_trainable(towers=False)
        optimizer, _ = make_optimizer(model.named_parameters(), args.lr, args.weight_decay)
        warmup = round(recipe.warmup_fraction * args.train_iters)
        schedule = WarmupCosineSchedule(args.lr, args.min_lr, warmup, args.train_iters)
        train_s, eval_s, losses, positions, curve = 0.0, 0.0, [], 0, []
        original: dict[str, float] = {}
        for step in range(1, args.train_iters + 1):
            t0 = time.perf_counter()
            batch = train_cache.batch(order[step - 1].tolist())
            numbers = train_step(model, batch, optimizer, schedule(step), TrainConfig.grad_clip, step)
            train_s += time.perf_counter() - t0
            losses.append(numbers["loss"])
            positions += numbers["tokens"]
            if step in evaluated:
                t0 = time.perf_counter()
                original = accuracy_by_type(answer(model, questions, features, tokenizer))
                eval_s += time.perf_counter() - t0
                curve.append({"step": step, **{t: round(v, 3) for t, v in original.items()}})
                print(f"{variant:26s} step {step:5d}  loss {sum(losses[-10:]) / len(losses[-10:]):.3f}  "
                      + "  ".join(f"{t} {v:.2f}" for t, v in original.items()), flush=True)
        accuracy = {"original": original}  # the last point of the curve
        for condition in CONDITIONS[1:]:
            accuracy[condition] = accuracy_by_type(answer(model, questions, features, tokenizer,
                                                          condition.split()[0]))
        results[variant] = {
            "av_layout": config.av_layout, "av_positions": config.av_positions,
            "av_time_embedding": config.av_time_embedding,
            "chunk_seconds": config.chunk_seconds if config.av_layout == "interleaved" else None,
            "vision_temporal_compression": config.projector.vision_temporal_compression,
            "video_tokens": config.num_video_tokens, "audio_tokens": config.num_audio_tokens,
            "mean_positions_per_sample": round(positions / (args.train_iters * args.micro_batch_size), 1),
            "train_seconds": round(train_s, 1), "seconds_per_step": round(train_s / args.train_iters, 3),
            "eval_seconds": round(eval_s, 1),
            "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "first_step_time_at_least_90": first_step(curve, lambda p: p.get("time", 0.0) >= TIME_BAR),
            "first_step_all_at_least_95": first_step(
                curve, lambda p: all(p.get(t, 0.0) >= ALL_BAR for t in QUESTION_TYPES)),
            "curve": curve,
            "accuracy": {c: {t: round(v, 3) for t, v in a.items()} for c, a in accuracy.items()},
        }
        print(f"{variant:26s} {train_s:5.0f} s  loss {results[variant]['final_loss']:.3f}  "
              + "  ".join(f"{t} {v:.2f}" for t, v in accuracy["original"].items())
              + f"  | time without video {accuracy['video zeros'].get('time', float('nan')):.2f}"
              + f", without audio {accuracy['audio zeros'].get('time', float('nan')):.2f}", flush=True)

    record = merged_with_earlier(args, {
        "benchmark": "time_layouts", "script": SCRIPT, "command": command_line(argv),
        "settings": settings_of(args),
        "jobs": 1,
        "chance": {"time": "1/2 for a model that recognises both events of a clip but not which came first "
                           "(answers are exact-match phrases, so a model that misses an event scores lower)"},
        "eval_questions_per_type": {t: sum(q["question_type"] == t for q in questions) for t in QUESTION_TYPES},
        "train_data": {"question_types": types, "num_turns": args.num_turns, "follow_up_types": list(FOLLOW_UP_TYPES),
                       "false_claim_attributes": list(FALSE_CLAIM_ATTRIBUTES)},
        "feature_seconds": round(features_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
        "mimo_lib": getattr(mimo_lib, "__version__", None),
        "variants": results,
    })
    atomic_write_json(args.out, record)
    print()
    print_table(record["variants"])
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
