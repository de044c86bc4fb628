"""Does the model answer, and does it use its eyes and ears? Exact-match accuracy and ablations.

``python -m mimo_lib.evaluate --load runs/instruct`` asks held-out synthetic
questions, answers them greedily, and prints the share of answers that are
exactly right, per question type. Then it asks again with the evidence
taken away, one modality at a time::

    condition         vision  motion  audio  both  time   all
    original            0.95    0.80   0.90  0.70  0.60  0.79
    video zeros         0.30    0.20   0.90  0.50  0.25  0.43   <- vision questions need the video
    video shuffled      ...                                        (each clip gets another clip's frames)
    audio zeros         ...
    audio shuffled      ...

A model that really looks loses its vision and motion accuracy when the video
is blanked or swapped; one that answers from the question alone (or from
dataset priors) does not. (The numbers above show the layout, not a measured run.) That is the check a loss curve cannot make.

**Exact match**: the generated tokens up to the first ``<eos>``, decoded and
stripped, must equal the reference answer (stripped). The answers of the
synthetic world have one fixed form each, so this is a fair score.

Every turn of a multi-turn conversation is scored, with the conversation so
far (the reference answers, not the model's) as its context.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Not the user's business: torch's note about CUDA_HOME on a machine without a CUDA runtime.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

import torch  # noqa: E402
from torch.utils.data import Dataset, Subset  # noqa: E402

from mimo_lib.config import MIMOConfig  # noqa: E402
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402  (held-out synthetic clips: seed + this)
from mimo_lib.data.conversation import IGNORE_INDEX, encode_conversation  # noqa: E402
from mimo_lib.data.dataset import AVFolderDataset, Batch, SyntheticAVDataset, collate_av_batch, split_dataset  # noqa: E402
from mimo_lib.data.synthetic import ALL_QUESTION_TYPES, QUESTION_TYPES, synthetic_config_for  # noqa: E402
from mimo_lib.errors import MimoInputError  # noqa: E402
from mimo_lib.model import MIMOModel  # noqa: E402
from mimo_lib.threads import THREADS_HELP, apply_thread_policy, check_threads_flag  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402

UNTYPED = "untyped"  # column for folder samples without a question_type
ALL = "all"

MediaTransform = Callable[[Batch], Batch]


# --------------------------------------------------------------------------- #
# Datasets that fit a model
# --------------------------------------------------------------------------- #


def build_dataset(
    data_path: str | Path,
    config: MIMOConfig,
    tokenizer: Tokenizer,
    num_samples: int,
    seed: int,
    question_types: Sequence[str] | None = None,
    num_turns: int = 1,
    follow_up_types: Sequence[str] | None = None,
    false_claim_attributes: Sequence[str] | None = None,
    allow_missing_audio: bool = False,
) -> Dataset:
    """The data ``config``'s model reads: frames, image size, clip length and sample rate fitted to it.

    ``"synthetic"``: ``num_samples`` clips rendered from ``seed`` (question types cycling through
    ``question_types``), each with up to ``num_turns`` questions: the first of the sample's type,
    the others of ``follow_up_types`` (see :func:`~mimo_lib.data.synthetic.make_sample`); false
    ``both`` claims change an attribute drawn from ``false_claim_attributes`` (default: the task's).
    A folder: all its samples (``num_samples`` and ``seed`` are not used; take the first few for
    evaluation with :func:`evaluation_subset`).
    """
    if str(data_path) == "synthetic":
        return SyntheticAVDataset(
            num_samples, seed=seed, config=synthetic_config_for(config),
            question_types=tuple(question_types or QUESTION_TYPES), tokenizer=tokenizer, num_turns=num_turns,
            follow_up_types=follow_up_types, false_claim_attributes=false_claim_attributes,
        )
    return AVFolderDataset(
        data_path,
        num_frames=config.vision.num_frames,
        image_size=config.vision.image_size,
        sample_rate=config.audio.sample_rate,
        clip_duration_s=config.audio.clip_duration_s,  # frames and audio from the same window
        tokenizer=tokenizer,
        allow_missing_audio=allow_missing_audio,
        clip_window=config.clip_window,
    )


def evaluation_subset(dataset: Dataset, num_samples: int) -> Dataset:
    """The first ``num_samples`` samples (all if fewer)."""
    return Subset(dataset, range(min(num_samples, len(dataset))))


# --------------------------------------------------------------------------- #
# Answering
# --------------------------------------------------------------------------- #


def _questions(sample: dict, tokenizer: Tokenizer) -> list[dict]:
    """One item per assistant turn: prompt ids (conversation so far + "Assistant:") and the reference."""
    turns = sample["conversations"]
    items = []
    for k in range(1, len(turns), 2):
        prompt, _ = encode_conversation(tokenizer, turns[:k], add_generation_prompt=True)
        items.append({
            "id": sample["id"],
            "question_type": sample.get("question_type") or UNTYPED,
            "question": turns[k - 1]["value"],
            "reference": turns[k]["value"].strip(),
            "input_ids": torch.tensor(prompt, dtype=torch.long),  # (L,)
            "labels": torch.full((len(prompt),), IGNORE_INDEX, dtype=torch.long),  # unused; collate wants it
            "video": sample.get("video"),
            "audio": sample.get("audio"),
            "conversations": turns[:k],
        })
    return items


def decode_answer(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of generated ids up to (not including) the first ``<eos>``, stripped."""
    ids = list(ids)
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def predict(
    model: MIMOModel,
    dataset: Dataset,
    tokenizer: Tokenizer,
    batch_size: int = 16,
    media_transform: MediaTransform | None = None,
    max_new_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Greedy answers to every question of ``dataset``.

    Returns one dict per question: ``id, question_type, question, reference, prediction, correct``.
    ``media_transform(batch) -> batch`` may change ``video``/``audio`` of a collated batch (ablations).
    ``max_new_tokens`` defaults to the longest reference of the batch plus two, enough to see its ``<eos>``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    device = next(model.parameters()).device
    results: list[dict[str, Any]] = []
    pending: list[dict] = []

    def flush() -> None:
        batch = collate_av_batch(pending, tokenizer.pad_id)  # prompts right-padded; generate re-pads on the left
        if media_transform is not None:
            batch = media_transform(batch)
        budget = max_new_tokens or 2 + max(len(tokenizer.encode(" " + item["reference"])) for item in pending)
        batch = batch.to(device)
        new_tokens = model.generate(
            batch.input_ids, batch.video, batch.audio, attention_mask=batch.attention_mask,
            max_new_tokens=budget,
            eos_token_id=tokenizer.eos_id,
        )  # (B, budget)
        for item, ids in zip(pending, new_tokens.tolist()):
            prediction = decode_answer(tokenizer, ids)
            results.append({
                "id": item["id"], "question_type": item["question_type"], "question": item["question"],
                "reference": item["reference"], "prediction": prediction, "correct": prediction == item["reference"],
            })
        pending.clear()

    for index in range(len(dataset)):
        for item in _questions(dataset[index], tokenizer):
            pending.append(item)
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return results


def accuracy_by_type(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``{question_type: share correct, ..., "all": share correct}``, types in the book's order."""
    by_type: dict[str, list[bool]] = {}
    for r in results:
        by_type.setdefault(r["question_type"], []).append(r["correct"])
    order = list(ALL_QUESTION_TYPES)
    names = sorted(by_type, key=lambda t: (order.index(t) if t in order else len(order), t))
    accuracy = {t: sum(by_type[t]) / len(by_type[t]) for t in names}
    accuracy[ALL] = sum(r["correct"] for r in results) / len(results) if results else float("nan")
    return accuracy


def evaluate_accuracy(
    model: MIMOModel,
    dataset: Dataset,
    tokenizer: Tokenizer,
    batch_size: int = 16,
    media_transform: MediaTransform | None = None,
) -> dict[str, float]:
    """Exact-match accuracy per question type (and ``"all"``) of greedy answers on ``dataset``."""
    return accuracy_by_type(predict(model, dataset, tokenizer, batch_size, media_transform))


# --------------------------------------------------------------------------- #
# Ablations: take one modality away
# --------------------------------------------------------------------------- #


def _with(batch: Batch, key: str, value) -> Batch:
    """A copy of ``batch`` with the field ``key`` replaced (the original is left alone)."""
    return dataclasses.replace(batch, **{key: value})


def _zero(key: str) -> MediaTransform:
    def transform(batch: Batch) -> Batch:
        media = getattr(batch, key)
        if media is not None:
            batch = _with(batch, key, torch.zeros_like(media))  # black frames / silence
        return batch

    return transform


def _shuffle(key: str, has_key: str) -> MediaTransform:
    """Give each sample of the batch the clip of the next *other* sample that has one (a cyclic shift).

    Questions from the same conversation share a clip, so the shift is over distinct sample ids; a
    batch with only one clip cannot be shuffled and is left as it is.
    """

    def transform(batch: Batch) -> Batch:
        media, has_media, ids = getattr(batch, key), getattr(batch, has_key), batch.id
        if media is None:
            return batch
        rows = [r for r in range(len(ids)) if bool(has_media[r])]
        distinct = list(dict.fromkeys(ids[r] for r in rows))  # sample ids in batch order
        if len(distinct) < 2:
            return batch
        first_row = {sid: next(r for r in rows if ids[r] == sid) for sid in distinct}
        donor = {sid: first_row[distinct[(k + 1) % len(distinct)]] for k, sid in enumerate(distinct)}
        shuffled = media.clone()
        for r in rows:
            shuffled[r] = media[donor[ids[r]]]
        return _with(batch, key, shuffled)

    return transform


#: condition -> how the batch's media are changed (None: left alone).
ABLATIONS: dict[str, MediaTransform | None] = {
    "original": None,
    "video zeros": _zero("video"),
    "video shuffled": _shuffle("video", "has_video"),
    "audio zeros": _zero("audio"),
    "audio shuffled": _shuffle("audio", "has_audio"),
}


def run_ablations(
    model: MIMOModel,
    dataset: Dataset,
    tokenizer: Tokenizer,
    batch_size: int = 16,
    conditions: Sequence[str] = tuple(ABLATIONS),
) -> dict[str, dict[str, float]]:
    """``{condition: {question_type: accuracy, ..., "all": ...}}`` for each of :data:`ABLATIONS`."""
    unknown = [c for c in conditions if c not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation conditions {unknown}; choose from {list(ABLATIONS)}")
    return {c: evaluate_accuracy(model, dataset, tokenizer, batch_size, ABLATIONS[c]) for c in conditions}


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per condition, one column per question type (and ``all``)."""
    columns: list[str] = []
    for row in results.values():
        columns += [c for c in row if c not in columns and c != ALL]
    columns.append(ALL)
    first = max([len("condition")] + [len(name) for name in results])
    widths = [max(len(c), 5) for c in columns]
    lines = ["  ".join(["condition".ljust(first)] + [c.rjust(w) for c, w in zip(columns, widths)])]
    for name, row in results.items():
        cells = [("" if c not in row else f"{row[c]:.2f}").rjust(w) for c, w in zip(columns, widths)]
        lines.append("  ".join([name.ljust(first)] + cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mimo_lib.evaluate",
        description="Exact-match accuracy per question type, and with video or audio zeroed or shuffled.",
    )
    parser.add_argument("--load", type=Path, required=True, help="model folder, run folder or step folder")
    parser.add_argument(
        "--data-path", default=None,
        help="'synthetic' (held-out clips) or a dataset folder (default: the run's own data, as its checkpoint "
        "records it: a folder run's held-out validation split, else held-out synthetic clips)",
    )
    parser.add_argument(
        "--valid-fraction", type=float, default=None,
        help="score only the validation split a folder run held out with this fraction (default: the run's own)",
    )
    parser.add_argument(
        "--allow-missing-audio", action="store_true",
        help="a folder video without a sound track is heard as silence (with a warning) instead of an error",
    )
    parser.add_argument("--num-samples", type=int, default=100, help="samples to ask about (default: 100)")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="synthetic clips' seed (default: the run's seed + HELD_OUT_SEED_OFFSET, clips it never trained on); "
        "for a folder: the seed of the validation split (default: the run's)",
    )
    parser.add_argument(
        "--question-types", default=",".join(QUESTION_TYPES),
        help="comma list of synthetic question types (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="questions answered together (default: 16)")
    parser.add_argument("--no-ablations", action="store_true", help="only the original condition")
    parser.add_argument("--device", default="cpu", help="default: cpu")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    return parser


def run_data(args: argparse.Namespace, train_config: dict | None) -> tuple[str, float, int]:
    """``(data path, validation fraction, seed)`` to evaluate on: the flags, else what the run recorded.

    A folder run scores its held-out validation split (the samples :func:`split_dataset` held out in
    training, from the run's ``valid_fraction`` and ``seed``); without one, every sample of the folder (the
    output says so). Synthetic data is drawn with the run's seed + ``HELD_OUT_SEED_OFFSET``: clips the run
    never trained on.
    """
    recorded = train_config or {}
    data_path = args.data_path or recorded.get("data_path") or "synthetic"
    if not isinstance(data_path, str):
        data_path = "synthetic"
    run_seed = recorded.get("seed") if isinstance(recorded.get("seed"), int) else 0
    if data_path == "synthetic":
        return data_path, 0.0, args.seed if args.seed is not None else run_seed + HELD_OUT_SEED_OFFSET
    fraction = args.valid_fraction
    if fraction is None:
        recorded_fraction = recorded.get("valid_fraction") if data_path == recorded.get("data_path") else None
        fraction = recorded_fraction if isinstance(recorded_fraction, (int, float)) else 0.0
    return data_path, float(fraction), args.seed if args.seed is not None else run_seed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.question_types.split(",") if t.strip()]
    unknown = [t for t in types if t not in ALL_QUESTION_TYPES]
    if not types or unknown:
        parser.error(f"--question-types: unknown {unknown or 'empty list'}; choose from {ALL_QUESTION_TYPES}")
    if args.num_samples < 1 or args.batch_size < 1:
        parser.error("--num-samples and --batch-size must be at least 1")
    if args.valid_fraction is not None and not 0 <= args.valid_fraction < 1:
        parser.error(f"--valid-fraction must be at least 0 and below 1 (got {args.valid_fraction})")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be at least 0 (got {args.seed})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    threads_problem = check_threads_flag(args.threads)
    if threads_problem:
        parser.error(threads_problem)
    apply_thread_policy(args.threads)

    from mimo_lib.checkpoint import load_model, load_tokenizer, read_train_config

    try:
        model = load_model(args.load, args.device)
        tokenizer = load_tokenizer(args.load)
        data_path, fraction, seed = run_data(args, read_train_config(args.load))
        dataset = build_dataset(
            data_path, model.config, tokenizer, args.num_samples, seed, types,
            allow_missing_audio=args.allow_missing_audio,
        )
        what = data_path
        if data_path != "synthetic":
            _, valid = split_dataset(dataset, fraction, seed)
            if valid is not None:
                dataset, what = valid, f"{data_path} (the validation split: {fraction:g} held out, seed {seed})"
            else:
                what = f"{data_path} (no validation split was held out: these may be training samples)"
        dataset = evaluation_subset(dataset, args.num_samples)
        conditions = ("original",) if args.no_ablations else tuple(ABLATIONS)
        results = run_ablations(model, dataset, tokenizer, args.batch_size, conditions)
    except (MimoInputError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"exact-match accuracy on {len(dataset)} samples from {what} ({args.load})")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
