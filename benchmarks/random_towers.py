"""Does the decoder use a random tower? Instruct training on frozen random towers against the shipped ones.

    python benchmarks/random_towers.py               # writes benchmarks/results/random_towers.json
    python benchmarks/random_towers.py --train-iters 600 --out /tmp/random_towers.json

Chapters 2 and 3 pretrain the towers before the language model sees them. This
script measures what happens without that: the toy model is trained with
``python -m mimo_lib.train --stage instruct`` (projectors and decoder learn,
towers frozen, as in the book's recipe) twice, from the same seed and on the
same conversations, once on the shipped pretrained towers and once on randomly
initialised ones (``--vision-tower-checkpoint none --audio-tower-checkpoint
none``). Each model is then asked held-out questions with
``mimo_lib.evaluate.run_ablations``: as they are, with the video zeroed and
with the audio zeroed. A model whose accuracy does not move when a sense is
taken away does not use that sense.

The JSON it writes is what chapters 2 and 3 quote. Nothing is asserted here.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mimo_lib  # noqa: E402
from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.evaluate import build_dataset, evaluation_subset, run_ablations  # noqa: E402
from mimo_lib.threads import apply_thread_policy  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402
from mimo_lib.train import parse_args, train  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "random_towers.json"
TOWERS = {"shipped": [], "random": ["--vision-tower-checkpoint", "none", "--audio-tower-checkpoint", "none"]}
CONDITIONS = ("original", "video zeros", "audio zeros")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-iters", type=int, default=400)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--question-types", default="vision,motion,audio")
    parser.add_argument("--eval-samples", type=int, default=150, help="held-out samples for the ablation table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mimo_lib.threads' policy)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    threads = apply_thread_policy(args.threads)
    types = [t for t in args.question_types.split(",") if t]

    common = [
        "--stage", "instruct", "--train-iters", str(args.train_iters), "--micro-batch-size", str(args.micro_batch_size),
        "--lr", str(args.lr), "--num-samples", str(args.num_samples), "--question-types", args.question_types,
        "--seed", str(args.seed), "--eval-samples", "0", "--device", "cpu",
    ]
    tokenizer = Tokenizer.default()
    runs = {}
    for name, flags in TOWERS.items():
        command = common + flags
        print(f"\n{name} towers: python -m mimo_lib.train {' '.join(command)}", flush=True)
        start = time.perf_counter()
        result = train(parse_args(command))
        seconds = time.perf_counter() - start
        model = result.model.eval()
        dataset = evaluation_subset(
            build_dataset("synthetic", model.config, tokenizer, args.eval_samples, args.seed + HELD_OUT_SEED_OFFSET,
                          types),
            args.eval_samples,
        )
        with torch.no_grad():
            table = run_ablations(model, dataset, tokenizer, batch_size=16, conditions=CONDITIONS)
        runs[name] = {
            "train_command": "python -m mimo_lib.train " + " ".join(command),
            "train_seconds": round(seconds, 1),
            "final_loss": round(result.metrics[-1]["loss"], 4),
            "accuracy": {c: {t: round(v, 4) for t, v in row.items()} for c, row in table.items()},
        }
        for condition, row in table.items():
            print(f"  {condition:>12}: " + " ".join(f"{t} {v:.0%}" for t, v in row.items()), flush=True)

    result = {
        "script": "benchmarks/random_towers.py",
        "command": "python benchmarks/random_towers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "machine": {"processor": platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "mimo_lib": mimo_lib.__version__, "torch_threads": threads},
        "runs": runs,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
