"""How the decoder's initial weight scale decides whether it learns to *compare*.

    python benchmarks/init_scale.py                          # check questions, std 0.02 against 0.1
    python benchmarks/init_scale.py --question-type both --steps 900
    python benchmarks/init_scale.py --stds 0.02,0.05,0.1,0.2

A text-only stand-in for the yes/no questions of chapter 7: the clip's caption
is written into the prompt instead of its frames and sound, so nothing but the
toy decoder is trained::

    User: A red square moves to the left while a flute plays a low note.
    Is the shape a circle?
    Assistant: No.

For each ``init_method_std`` it trains the toy preset's language model from the
same seed on fresh samples (none is seen twice) and prints the share of
held-out questions whose first answer token is right, every ``--eval-interval``
steps. On the reference machine (defaults, one thread), 600 steps of ``check``
questions took the decoder to 74% with std 0.02 (Megatron's default, suited to
widths of about a thousand or more) and to 99% by step 300 with std 0.1 (the
toy preset's): 49/58/68/74% against 73/99/100/100% at steps 150/300/450/600.
Each run takes about two minutes. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimo_lib.config import get_preset  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET, IGNORE_INDEX  # noqa: E402
from mimo_lib.data.conversation import encode_conversation  # noqa: E402
from mimo_lib.data.synthetic import SyntheticConfig, ask, describe, random_events  # noqa: E402
from mimo_lib.language_model import GPTLanguageModel  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402


def text_only_batch(tokenizer: Tokenizer, seeds: range, question_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)``, both ``(B, S)``, right-padded: caption + question, then the answer."""
    pairs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        events = random_events(rng, SyntheticConfig(), two_events=False)
        question, answer = ask(events, question_type, rng)
        turns = [{"from": "human", "value": describe(events) + "\n" + question}, {"from": "gpt", "value": answer}]
        pairs.append(encode_conversation(tokenizer, turns))
    length = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), length), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), length), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, target) in enumerate(pairs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
    return input_ids, labels


@torch.no_grad()
def first_answer_token_accuracy(model: GPTLanguageModel, input_ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose first answer token ("Yes" or "No") is the model's top guess."""
    logits = model(input_ids=input_ids).logits  # (B, S, V)
    first = (labels != IGNORE_INDEX).float().argmax(1)  # (B,) position of the first answer token
    rows = torch.arange(len(input_ids))
    return (logits[rows, first - 1].argmax(-1) == labels[rows, first]).float().mean().item()


def train_one(std: float, args: argparse.Namespace, tokenizer: Tokenizer) -> list[tuple[int, float]]:
    torch.manual_seed(args.seed)
    config = replace(get_preset("toy").language_model, init_method_std=std)
    model = GPTLanguageModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    # never a training seed (seed * 10**7 + step * batch_size) in runs of fewer than 10**6 / batch_size steps
    held_out_seeds = range(HELD_OUT_SEED_OFFSET, HELD_OUT_SEED_OFFSET + args.eval_samples)
    held_out = text_only_batch(tokenizer, held_out_seeds, args.question_type)
    curve = []
    bar = tqdm(range(1, args.steps + 1), desc=f"std {std}", leave=False)
    for step in bar:
        first = args.seed * 10**7 + step * args.batch_size
        input_ids, labels = text_only_batch(tokenizer, range(first, first + args.batch_size), args.question_type)
        loss = model(input_ids=input_ids, labels=labels, ignore_index=IGNORE_INDEX).loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step} with init_method_std {std}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_interval == 0:
            curve.append((step, first_answer_token_accuracy(model.eval(), *held_out)))
            model.train()
            bar.set_postfix(accuracy=f"{curve[-1][1]:.0%}")
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stds", default="0.02,0.1", help="comma list of init_method_std values (default: %(default)s)")
    parser.add_argument("--question-type", choices=("check", "both"), default="check")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-interval", type=int, default=150)
    parser.add_argument("--eval-samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--json", help="also write the settings and curves to this JSON file (chapter 7 reads it)")
    args = parser.parse_args(argv)
    stds = [float(s) for s in args.stds.split(",") if s.strip()]
    if not stds or min(stds) <= 0:
        parser.error("--stds needs positive numbers")
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.default()

    print(f"text-only '{args.question_type}' questions, toy decoder, batch {args.batch_size}, lr {args.lr}")
    curves = {}
    for std in stds:
        start = time.perf_counter()
        curves[std] = train_one(std, args, tokenizer)
        print(f"init_method_std {std}: {args.steps} steps in {time.perf_counter() - start:.0f} s")
    steps = [step for step, _ in curves[stds[0]]]
    print("\n| step | " + " | ".join(f"std {std}" for std in stds) + " |")
    print("|---|" + "---|" * len(stds))
    for i, step in enumerate(steps):
        print(f"| {step} | " + " | ".join(f"{curves[std][i][1]:.0%}" for std in stds) + " |")
    if args.json:
        result = {
            "script": "benchmarks/init_scale.py", "argv": sys.argv[1:] if argv is None else list(argv),
            "settings": {k: v for k, v in vars(args).items() if k != "json"}, "torch": torch.__version__,
            "curves": {str(std): [{"step": step, "accuracy": accuracy} for step, accuracy in curves[std]] for std in stds},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
