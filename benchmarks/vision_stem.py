"""Conv stem against CLIP's linear patch embedding: how fast the toy vision tower learns to see.

    python benchmarks/vision_stem.py                  # writes benchmarks/results/vision_stem.json
    python benchmarks/vision_stem.py --steps 1000 --eval-interval 100 --jobs 2 --state-dir /tmp/stem-state \\
        --out benchmarks/results/vision_stem_1000.json

Chapter 2 says why the toy tower starts with three stride-2 3x3 convolutions
instead of CLIP's single strided convolution ("linear" patch embedding). This
script measures it: for each stem, the toy preset's vision tower is built from
the same seed and pretrained contrastively exactly as ``mimo_lib.pretrain_towers``
does (same clips, same batches, AdamW with warm-up and cosine decay over
``--steps``), and every ``--eval-interval`` steps its zero-shot accuracy on
held-out clips is measured per attribute (shape, colour, motion).

The JSON it writes is what chapter 2 and the README quote; ``tests/test_readme_numbers.py``
checks that they agree with it. Nothing is asserted here: the numbers belong
to the run (the file records the machine, versions and threads).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import multiprocessing
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mimo_lib  # noqa: E402
from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.config import get_preset  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.data.synthetic import synthetic_config_for  # noqa: E402
from mimo_lib.pretrain_towers import (  # noqa: E402
    VISION_ATTRIBUTES,
    ContrastivePretrainer,
    attribute_captions,
    make_pretraining_set,
    zero_shot_accuracy,
)
from mimo_lib.threads import apply_thread_policy  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402
from mimo_lib.vision_tower import build_vision_tower  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "vision_stem.json"
STEMS = ("linear", "conv")
#: shape accuracy that counts as "learned" in the summary
LEARNED = 0.9


def train_with_curve(model, media, targets, held_media, held_targets, args, state_file: Path | None = None):
    """``mimo_lib.pretrain_towers.pretrain``'s loop (same generator, optimizer and schedule), evaluated on the way.

    With ``state_file``, the run's full state (weights, optimizer, schedule, batch generator, curve) is saved
    there after every evaluation, and a run that finds the file continues from it: a long benchmark
    survives being killed.
    """
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if state_file is not None and state_file.is_file():
        state = torch.load(state_file, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        curve, losses, first = state["curve"], state["losses"], state["step"] + 1
        print(f"  {model.tower.config.patch_embedding_type}: resuming at step {first}", flush=True)
    else:
        curve = [{"step": 0, **zero_shot_accuracy(model, held_media, held_targets)}]
        losses, first = [], 1
    model.train()
    for step in range(first, args.steps + 1):
        index = torch.randint(len(media), (args.batch_size,), generator=generator)
        loss, _ = model(media[index], targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(round(loss.item(), 4))
        if step % args.eval_interval == 0 or step == args.steps:
            point = {"step": step, **zero_shot_accuracy(model, held_media, held_targets)}
            curve.append({k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()})
            print(f"  {model.tower.config.patch_embedding_type} step {step:4d}: loss {loss.item():.3f} | " + " ".join(
                f"{name} {point[name]:.0%}" for name in VISION_ATTRIBUTES), flush=True)
            if state_file is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                         "curve": curve, "losses": losses, "step": step}
                torch.save(state, state_file.with_name(state_file.name + ".tmp"))
                state_file.with_name(state_file.name + ".tmp").replace(state_file)
    return curve, losses


def run_stem(stem: str, args: argparse.Namespace) -> dict:
    """Pretrain the toy tower with one patch embedding; its accuracy curve and losses."""
    apply_thread_policy(args.threads)
    config = get_preset("toy")
    synthetic = synthetic_config_for(config)
    media, targets = make_pretraining_set("vision", args.num_clips, args.seed, synthetic)
    held_media, held_targets = make_pretraining_set("vision", args.held_out, args.seed + HELD_OUT_SEED_OFFSET, synthetic)
    print(f"{stem} patch embedding:", flush=True)
    torch.manual_seed(args.seed)
    tower = build_vision_tower(dataclasses.replace(config.vision, patch_embedding_type=stem))
    model = ContrastivePretrainer("vision", tower, Tokenizer.default())
    start = time.perf_counter()
    state_file = None
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        settings = "-".join(str(getattr(args, k)) for k in ("steps", "eval_interval", "batch_size", "lr", "num_clips",
                                                             "held_out", "seed"))
        state_file = args.state_dir / f"vision_stem-{stem}-{settings}.pt"
    curve, losses = train_with_curve(model, media, targets, held_media, held_targets, args, state_file)
    return {
        "stem_parameters": sum(q.numel() for q in tower.patch_embedding.parameters()),
        "seconds": round(time.perf_counter() - start, 1),
        "curve": curve,
        "final": curve[-1],
        "first_step_shape_at_least_90": first_step_at(curve, "shape", LEARNED),
        "losses_every_step": losses,
    }


def recorded_arguments(argv: list[str]) -> list[str]:
    """The command line as the result file records it: without --state-dir, a scratch folder of this machine."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--state-dir":
            skip = True
        elif not arg.startswith("--state-dir="):
            kept.append(arg)
    return kept


def first_step_at(curve: list[dict], attribute: str, level: float) -> int | None:
    return next((point["step"] for point in curve if point[attribute] >= level), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-interval", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-clips", type=int, default=4096, help="training clips (as the shipped tower's run)")
    parser.add_argument("--held-out", type=int, default=256, help="held-out clips per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mimo_lib.threads' policy)")
    parser.add_argument("--jobs", type=int, default=1, help="processes: 2 trains both stems at once")
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="save each run's state here after every evaluation and resume from it if present (long runs)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    threads = apply_thread_policy(args.threads)
    chance = {name: round(1 / len(pairs), 4) for name, pairs in attribute_captions("vision").items()}

    if args.jobs > 1:  # one process per stem, each rendering the same clips from the same seeds
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = dict(zip(STEMS, pool.map(run_stem, STEMS, [args] * len(STEMS))))
    else:
        runs = {stem: run_stem(stem, args) for stem in STEMS}

    result = {
        "script": "benchmarks/vision_stem.py",
        "command": "python benchmarks/vision_stem.py " + " ".join(recorded_arguments(argv if argv is not None else sys.argv[1:])),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "jobs", "state_dir")},
        "chance": chance,
        "machine": {"processor": platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "mimo_lib": mimo_lib.__version__, "torch_threads": threads},
        "runs": runs,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    for stem, run in runs.items():
        final = run["final"]
        print(f"{stem:>6}: after {final['step']} steps shape {final['shape']:.0%} colour {final['colour']:.0%} "
              f"motion {final['motion']:.0%} (chance {chance['shape']:.0%}/{chance['colour']:.0%}/"
              f"{chance['motion']:.0%}); shape >= {LEARNED:.0%} first at step {run['first_step_shape_at_least_90']}")


if __name__ == "__main__":
    main()
