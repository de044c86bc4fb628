"""Train the MIMO model: ``python -m mimo_lib.train`` (or the ``mimo-train`` command).

Two stages, as LLaVA trains (chapter 7):

* ``--stage align``: only the two projectors learn, on description-style answers
  (``caption`` questions), so that video and audio tokens land where the
  frozen language model can read them;
* ``--stage instruct``: the projectors and the language model learn, on every
  question type. Start it from an align run with ``--load ALIGN_RUN``.

A few examples::

    python -m mimo_lib.train --stage align --train-iters 300 --save runs/align
    python -m mimo_lib.train --stage instruct --load runs/align --train-iters 1000 --save runs/instruct
    python -m mimo_lib.train --stage instruct --load runs/instruct --train-iters 1000 --save runs/instruct  # resume
    python -m mimo_lib.train --data-path data_samples --stage instruct --train-iters 20 --micro-batch-size 2

Model sizes come from ``--preset`` (or ``--config``, a MIMOConfig JSON such as
a model folder's ``config.json``) with the model flags on top; the merged
config is validated before anything is built, and so are the data path, the
checkpoints named and the sequence length a sample needs.

**What is written.** ``--save RUN`` gets numbered checkpoints
``RUN/step-000200/`` and the pointer ``RUN/latest`` (layout and atomicity:
:mod:`mimo_lib.checkpoint`), ``RUN/metrics.jsonl`` with one JSON line per step
(``step, loss, lr, grad_norm, tokens, tokens_per_s, elapsed_s``, plus ``eval``,
the exact-match accuracy per question type, on evaluation steps) and, at the
end, ``RUN/final/``: the small model folder that ``python -m mimo_lib.generate``
and ``python -m mimo_lib.evaluate`` load.

**What ``--load`` does.** A checkpoint of the *same* stage is resumed exactly:
weights, optimizer, learning-rate schedule, data order, random generators,
step counter and metrics all continue where they stopped. A checkpoint of
another stage (an align run loaded by ``--stage instruct``), or a model
folder written by ``save_model_only``, only gives the weights: the new stage
starts at step 0 with a fresh optimizer and data order.

**Exact resume.** On the CPU, training 2N steps in one go and training N
steps, being killed (even with SIGKILL, even while saving) and resuming for N
more give bitwise equal weights. What that takes:

1. every random draw comes from a generator whose state is checkpointed: the
   batch indices from a ``torch.Generator`` of their own (:class:`DataSampler`),
   dropout from torch's global generator (saved, with Python's and numpy's);
   synthetic clips are pure functions of ``(seed, index)``;
2. ``torch.use_deterministic_algorithms(True)`` while training, so no kernel may
   pick a different reduction order from one run to the next (on CUDA also
   ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set here if unset; GPU resume is not tested);
3. optimizer and schedule state saved exactly (safetensors keeps every bit,
   JSON writes floats with ``repr``, which round-trips);
4. the same command line (a changed flag is reported on resume) and the same
   number of CPU threads.

``--stop-after N`` kills the process with SIGKILL right after step N (and its
checkpoint, if one is due): a testing aid for exactly this.

**Stopping on a non-finite loss.** A ``nan`` or ``inf`` loss (or gradient norm)
stops training before the optimizer applies it, with an error naming the step;
the last checkpoint written is intact and can be resumed with a lower ``--lr``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mimo_lib.checkpoint import (
    CheckpointError,
    atomic_write_text,
    capture_rng_state,
    is_training_checkpoint,
    load_checkpoint,
    load_model,
    read_checkpoint_config,
    read_checkpoint_state,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_model_only,
)
from mimo_lib.config import AUDIO_BACKBONES, PRESETS, VISION_BACKBONES, MIMOConfig, get_preset
from mimo_lib.data.conversation import encode_conversation
from mimo_lib.data.dataset import collate_av_batch, load_annotations
from mimo_lib.data.synthetic import (
    ALL_QUESTION_TYPES,
    CAPTION_TYPE,
    CLAIM_ATTRIBUTES,
    FALSE_CLAIM_ATTRIBUTES,
    QUESTION_TYPES,
)
from mimo_lib.errors import MimoInputError
from mimo_lib.evaluate import (
    HELD_OUT_SEED_OFFSET,
    build_dataset,
    evaluate_accuracy,
    evaluation_subset,
    synthetic_config_for,
)
from mimo_lib.feature_cache import TowerFeatureCache
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer

STAGES = ("align", "instruct")
INSTRUCT_NUM_TURNS = 4
#: Types a multi-turn training conversation may ask after its first question. ``both``, ``time`` and
#: ``check`` are left out: an earlier answer ("The square is yellow.") would let the model read them off the text.
FOLLOW_UP_TYPES = ("vision", "motion", "audio", CAPTION_TYPE)

#: What each stage trains (``--freeze-*`` flags override), its default learning rate and question types.
#: The learning rates are reasonable for the toy preset; they have not been tuned for larger ones.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "align": {
        "freeze_vision_tower": True, "freeze_audio_tower": True, "freeze_projectors": False,
        "freeze_language_model": True, "lr": 1e-3, "question_types": (CAPTION_TYPE,), "num_turns": 1,
    },
    "instruct": {
        "freeze_vision_tower": True, "freeze_audio_tower": True, "freeze_projectors": False,
        "freeze_language_model": False, "lr": 3e-4, "question_types": QUESTION_TYPES,
        "num_turns": INSTRUCT_NUM_TURNS,
    },
}
FREEZE_FLAGS = {  # flag attribute -> MIMOModel.set_trainable name
    "freeze_vision_tower": "vision_tower",
    "freeze_audio_tower": "audio_tower",
    "freeze_projectors": "projectors",
    "freeze_language_model": "language_model",
}
#: Flags that change the arithmetic of training: resuming with other values is not an exact resume.
RESUME_SENSITIVE = (
    "data_path", "num_samples", "num_turns", "follow_up_types", "false_claim_attributes", "question_types", "micro_batch_size", "train_iters", "lr", "min_lr",
    "warmup_iters", "weight_decay", "seed",
)
DEFAULT_PRESET = "toy"
EVAL_BATCH_SIZE = 16
GRAD_CLIP = 1.0


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became ``nan``/``inf``: training stopped before applying it."""


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimo-train",
        description="Train the MIMO audio-video-language model (stage align or instruct) on synthetic clips "
        "or a dataset folder.",
        epilog="Model-shape flags left out keep the preset's (or the loaded checkpoint's) values. "
        "See the module docstring (python -c 'import mimo_lib.train; help(mimo_lib.train)') for resume details.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="model sizes to start from (default: toy)"
    )
    model.add_argument(
        "--config", type=Path, default=None,
        help="a MIMOConfig JSON file (the config.json of a model folder) to start from instead of --preset",
    )
    model.add_argument("--num-layers", type=int, default=None, help="language model: transformer layers")
    model.add_argument(
        "--hidden-size", type=int, default=None,
        help="language model: width; its MLP width becomes 4x this, as in Megatron-LM",
    )
    model.add_argument(
        "--num-attention-heads", type=int, default=None, help="language model: attention heads (must divide --hidden-size)"
    )
    model.add_argument("--vision-backbone-type", choices=VISION_BACKBONES, default=None, help="vision tower")
    model.add_argument(
        "--audio-backbone-type", choices=AUDIO_BACKBONES, default=None,
        help="audio tower; switching backbone resets its feature bins and --audio-seq-len to the backbone's own",
    )
    model.add_argument("--num-frames", type=int, default=None, help="video frames per clip")
    model.add_argument(
        "--audio-seq-len", type=int, default=None,
        help="audio tokens per clip; must divide the positions the audio encoder makes",
    )
    model.add_argument("--hf-vision-path", default=None, help="local transformers CLIP folder, for --vision-backbone-type hf-clip")
    model.add_argument(
        "--hf-audio-path", default=None, help="local transformers Whisper folder, for --audio-backbone-type hf-whisper"
    )
    model.add_argument(
        "--vision-tower-checkpoint", default=None,
        help="pretrained vision tower (mimo_lib.pretrain_towers); default: the shipped one for --preset if it "
        "exists; 'none': random tower; ignored with --load",
    )
    model.add_argument(
        "--audio-tower-checkpoint", default=None,
        help="pretrained audio tower; default: the shipped one for --preset if it exists; 'none': random tower; "
        "ignored with --load",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-path", default="synthetic",
        help="'synthetic' (clips rendered from --seed) or a folder with conversations.jsonl and media "
        "(default: %(default)s)",
    )
    data.add_argument("--num-samples", type=int, default=4096, help="synthetic training set size (default: %(default)s)")
    data.add_argument(
        "--num-turns", type=int, default=None,
        help="synthetic: questions per training conversation (at most), the first of the sample's type, the "
        f"others from --follow-up-types (more answers per rendered clip); default 1 for align, {INSTRUCT_NUM_TURNS} "
        "for instruct. Evaluation always asks one question per clip",
    )
    data.add_argument(
        "--follow-up-types", default=",".join(FOLLOW_UP_TYPES),
        help="synthetic, with --num-turns > 1: comma list of question types later turns ask, each at most once "
        "per conversation and only where the clip fits (default: %(default)s)",
    )
    data.add_argument(
        "--false-claim-attributes", default=",".join(FALSE_CLAIM_ATTRIBUTES),
        help="synthetic training data only: what a false 'both' claim changes, drawn uniformly from this comma "
        "list (repeats weight it); evaluation always uses the task's (default: %(default)s, the task's)",
    )
    data.add_argument(
        "--question-types", default=None,
        help=f"comma list of synthetic question types, from {', '.join(ALL_QUESTION_TYPES)} (repeats weight "
        f"a type); default: '{CAPTION_TYPE}' for align, all of {','.join(QUESTION_TYPES)} for instruct",
    )

    stage = parser.add_argument_group("stage and freezing")
    stage.add_argument("--stage", choices=STAGES, default="align", help="what to train (default: %(default)s)")
    freeze_help = {
        "freeze_vision_tower": "freeze the vision tower (default: frozen in both stages)",
        "freeze_audio_tower": "freeze the audio tower (default: frozen in both stages)",
        "freeze_projectors": "freeze the projectors (default: trained in both stages)",
        "freeze_language_model": "freeze the language model (default: frozen in align, trained in instruct)",
    }
    for flag, text in freeze_help.items():
        stage.add_argument("--" + flag.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None, help=text)

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--micro-batch-size", type=int, default=8, help="samples per optimizer step (default: %(default)s)")
    optim.add_argument("--train-iters", type=int, default=1000, help="optimizer steps in all, a resumed run's included (default: %(default)s)")
    optim.add_argument("--lr", type=float, default=None, help="peak learning rate; default 1e-3 align, 3e-4 instruct")
    optim.add_argument("--min-lr", type=float, default=None, help="learning rate at the end of the cosine; default lr/10")
    optim.add_argument("--warmup-iters", type=int, default=None, help="linear warmup steps; default 5%% of --train-iters")
    optim.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay on matrices (default: %(default)s, as LLaVA)")
    optim.add_argument("--seed", type=int, default=0, help="model init, data order and synthetic clips (default: %(default)s)")
    optim.add_argument(
        "--cache-tower-features", action=argparse.BooleanOptionalAction, default=True,
        help="with both towers frozen, run them once per training clip and keep their outputs in memory "
        "(mimo_lib.feature_cache; about 80 KB per toy clip) instead of every step (default: on)",
    )
    optim.add_argument("--device", default="auto", help="'auto' (default: cuda if available, else cpu), 'cpu', 'cuda', ...")

    io = parser.add_argument_group("checkpoints and evaluation")
    io.add_argument("--save", type=Path, default=None, help="run folder for checkpoints and metrics.jsonl (none: save nothing)")
    io.add_argument("--load", type=Path, default=None, help="run folder or step folder to resume or start from")
    io.add_argument("--save-interval", type=int, default=200, help="checkpoint every N steps and at the end; 0: only at the end (default: %(default)s)")
    io.add_argument("--keep-checkpoints", type=int, default=2, help="step folders to keep in --save (default: %(default)s)")
    io.add_argument("--eval-interval", type=int, default=200, help="evaluate every N steps and at the end; 0: only at the end (default: %(default)s)")
    io.add_argument(
        "--eval-samples", type=int, default=100,
        help="held-out synthetic samples (or the folder's first samples) for exact-match accuracy; 0: no "
        "evaluation (default: %(default)s)",
    )
    io.add_argument(
        "--stop-after", type=int, default=None,
        help="TESTING AID: SIGKILL this process right after step N (after its checkpoint, if one is due)",
    )
    return parser


def build_config(args: argparse.Namespace) -> MIMOConfig:
    """The preset (or ``--config``), with the command line's overrides; ``MIMOConfig`` validates the result."""
    if args.config is not None:
        try:
            data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {args.config}: cannot read a JSON config ({error})") from None
    else:
        data = get_preset(args.preset or DEFAULT_PRESET).to_dict()
    lm, vision, audio = data["language_model"], data["vision"], data["audio"]
    if args.num_layers is not None:
        lm["num_layers"] = args.num_layers
    if args.hidden_size is not None:
        lm["hidden_size"] = args.hidden_size
        lm["ffn_hidden_size"] = 4 * args.hidden_size
    if args.num_attention_heads is not None:
        lm["num_attention_heads"] = args.num_attention_heads
    if args.vision_backbone_type is not None:
        vision["backbone_type"] = args.vision_backbone_type
        if args.vision_backbone_type == "hf-clip":
            vision["patch_embedding_type"] = "linear"  # a CLIP checkpoint brings its own patch embedding
    if args.hf_vision_path is not None:
        vision["pretrained_path"] = args.hf_vision_path
    if args.audio_backbone_type is not None and args.audio_backbone_type != audio["backbone_type"]:
        audio["backbone_type"] = args.audio_backbone_type
        audio["num_mel_bins"] = None  # the new backbone's own (80 log-mel or 128 fbank) ...
        audio["audio_seq_len"] = None  # ... and its own natural token count, unless given below
    if args.hf_audio_path is not None:
        audio["pretrained_path"] = args.hf_audio_path
    if args.num_frames is not None:
        vision["num_frames"] = args.num_frames
    if args.audio_seq_len is not None:
        audio["audio_seq_len"] = args.audio_seq_len
    return MIMOConfig.from_dict(data)


def _model_flags_given(args: argparse.Namespace) -> list[str]:
    names = ("preset", "config", "num_layers", "hidden_size", "num_attention_heads", "vision_backbone_type",
             "audio_backbone_type", "num_frames", "audio_seq_len", "hf_vision_path", "hf_audio_path")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


def _config_differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """``["language_model.hidden_size: checkpoint 32, flags 64", ...]`` for two ``MIMOConfig.to_dict()``."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, flags {b!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; every inconsistency is a ``parser.error`` before any work.

    Adds ``args.model_config`` (the MIMOConfig to build), ``args.mode`` (``"fresh"``, ``"resume"`` or
    ``"init"`` = weights only) and resolves the stage defaults.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = STAGE_DEFAULTS[args.stage]

    # ---- numbers that must be positive
    for name, low in (("micro_batch_size", 1), ("train_iters", 1), ("num_samples", 1), ("save_interval", 0),
                      ("eval_interval", 0), ("eval_samples", 0), ("keep_checkpoints", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low} (got {getattr(args, name)})")

    # ---- the model config: from --load, or the preset / --config plus overrides
    args.mode = "fresh"
    if args.load is not None:
        try:
            args.load = resolve_checkpoint(args.load)
            args.model_config = read_checkpoint_config(args.load)
            if is_training_checkpoint(args.load):
                loaded_stage = read_checkpoint_state(args.load).get("stage")
                args.mode = "resume" if loaded_stage == args.stage else "init"
            else:
                args.mode = "init"
        except CheckpointError as error:
            parser.error(f"--load: {error}")
        given = _model_flags_given(args)
        if given:  # the same command line plus --load must work: the flags may restate the checkpoint's model
            try:
                wanted = build_config(args)
            except (ValueError, TypeError) as error:
                parser.error(f"invalid model configuration: {error}")
            differences = _config_differences(args.model_config.to_dict(), wanted.to_dict())
            if differences:
                parser.error(
                    f"the model flags ({', '.join(given)}) describe another model than the loaded checkpoint {args.load} "
                    f"({'; '.join(differences)}); drop them to use the checkpoint's config"
                )
    else:
        try:
            args.model_config = build_config(args)
        except (ValueError, TypeError) as error:
            parser.error(f"invalid model configuration: {error}")

    config = args.model_config
    for backbone, flag, path in (
        (config.vision.backbone_type, "--hf-vision-path", args.hf_vision_path),
        (config.audio.backbone_type, "--hf-audio-path", args.hf_audio_path),
    ):
        if path is not None and not backbone.startswith("hf-"):
            parser.error(f"{flag} is only used with an hf backbone (the model uses {backbone!r})")
        if path is not None and not Path(path).is_dir():
            parser.error(f"{flag} {path} is not a folder: point it at a local transformers checkpoint folder")
    if args.load is None:
        if config.vision.backbone_type == "hf-clip" and config.vision.pretrained_path is None:
            parser.error("--vision-backbone-type hf-clip needs --hf-vision-path (a local CLIP checkpoint folder)")
        if config.audio.backbone_type == "hf-whisper" and config.audio.pretrained_path is None:
            parser.error("--audio-backbone-type hf-whisper needs --hf-audio-path (a local Whisper checkpoint folder)")

    # ---- tower checkpoints: "none", a file, or the shipped default
    for modality, flag in (("vision", "vision_tower_checkpoint"), ("audio", "audio_tower_checkpoint")):
        value, option = getattr(args, flag), "--" + flag.replace("_", "-")
        if value is not None and value != "none" and args.load is None:  # with --load, the checkpoint has the towers
            if getattr(config, modality).backbone_type.startswith("hf-"):
                parser.error(f"{option} cannot be used with the {getattr(config, modality).backbone_type} backbone")
            if not Path(value).is_file():
                parser.error(f"{option} {value} not found; pass a file from mimo_lib.pretrain_towers or 'none'")
            mismatch = tower_checkpoint_mismatch(Path(value), getattr(config, modality))
            if mismatch:
                parser.error(f"{option} {value}: {mismatch}")

    # ---- data
    if args.data_path != "synthetic":
        for flag in ("question_types", "num_turns"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} only applies to --data-path synthetic (a folder has its own questions)")
        try:
            load_annotations(args.data_path)  # reads and checks the annotation file (media existence included)
        except MimoInputError as error:
            parser.error(f"--data-path: {error}")
        args.question_types = None
        args.num_turns, args.follow_up_types, args.false_claim_attributes = 1, None, None
    else:
        args.num_turns = defaults["num_turns"] if args.num_turns is None else args.num_turns
        if args.num_turns < 1:
            parser.error(f"--num-turns must be at least 1 (got {args.num_turns})")
        follow_ups = _name_list(parser, "--follow-up-types", args.follow_up_types, ALL_QUESTION_TYPES, allow_empty=True)
        args.follow_up_types = follow_ups if args.num_turns > 1 else None
        args.false_claim_attributes = _name_list(
            parser, "--false-claim-attributes", args.false_claim_attributes, CLAIM_ATTRIBUTES
        )
        args.question_types = (
            list(defaults["question_types"]) if args.question_types is None
            else _name_list(parser, "--question-types", args.question_types, ALL_QUESTION_TYPES)
        )
        try:
            synthetic_config_for(config)
        except ValueError as error:
            parser.error(f"the synthetic data cannot be rendered for this model: {error}")

    # ---- does a sample fit the language model once its placeholders are expanded?
    text, needed = longest_sample(
        args.data_path, config, args.num_samples, args.seed, args.question_types, args.num_turns, args.follow_up_types
    )
    if needed > config.language_model.max_sequence_length:
        parser.error(
            f"a training sample needs {needed} decoder positions ({text} text tokens + {config.num_video_tokens} "
            f"per video + {config.num_audio_tokens} per audio clip) but the language model's max_sequence_length is "
            f"{config.language_model.max_sequence_length}: use fewer --num-frames, a smaller --audio-seq-len, "
            "or a preset with longer sequences"
        )

    # ---- stage defaults
    for flag in FREEZE_FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, defaults[flag])
    if all(getattr(args, flag) for flag in FREEZE_FLAGS):
        parser.error("every component is frozen: nothing to train (unfreeze something with --no-freeze-...)")
    args.lr = defaults["lr"] if args.lr is None else args.lr
    args.min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
    args.warmup_iters = round(0.05 * args.train_iters) if args.warmup_iters is None else args.warmup_iters
    if not args.lr > 0:
        parser.error(f"--lr must be positive (got {args.lr})")
    if not 0 <= args.min_lr <= args.lr:
        parser.error(f"--min-lr must be between 0 and --lr {args.lr} (got {args.min_lr})")
    if not 0 <= args.warmup_iters <= args.train_iters:
        parser.error(f"--warmup-iters must be between 0 and --train-iters {args.train_iters} (got {args.warmup_iters})")

    # ---- device
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device {args.device!r}: {error}")

    # ---- run folders
    if args.stop_after is not None and args.stop_after < 1:
        parser.error("--stop-after must be a step number, at least 1")
    if args.save is not None:
        holds_run = (args.save / "latest").is_file()
        same_run = args.load is not None and args.save.resolve() in (args.load.resolve(), args.load.resolve().parent)
        if holds_run and not (args.mode == "resume" and same_run):
            parser.error(
                f"--save {args.save} already holds a run; pass --load {args.save} (same --stage) to resume it, "
                "or save to a new folder"
            )
    if args.mode == "resume":
        step = int(read_checkpoint_state(args.load)["step"])
        if step > args.train_iters:
            parser.error(f"--load {args.load} is at step {step}, beyond --train-iters {args.train_iters}")
    return args


def _name_list(
    parser: argparse.ArgumentParser, flag: str, text: str, allowed: tuple[str, ...], allow_empty: bool = False
) -> list[str]:
    """``"vision, audio"`` -> ``["vision", "audio"]``; a name not in ``allowed`` (or, unless allowed, no name) is a
    ``parser.error`` that names the flag and the choices."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in allowed]
    if unknown or not (names or allow_empty):
        parser.error(f"{flag}: unknown {unknown or 'empty list'}; choose from {', '.join(allowed)}")
    return names


def longest_sample(
    data_path: str, config: MIMOConfig, num_samples: int, seed: int, question_types: list[str] | None,
    num_turns: int = 1, follow_up_types: list[str] | None = None,
) -> tuple[int, int]:
    """``(text tokens, decoder positions)`` of the longest sample: all of a folder's, or a few synthetic ones.

    Synthetic question types cycle, so the first few samples show every type's length (answers of one
    type differ by a token or two: ``combine_multimodal_inputs`` still reports a rare longer one by name).
    """
    tokenizer = Tokenizer.default()
    if data_path == "synthetic":
        from mimo_lib.data.synthetic import make_sample

        synthetic = synthetic_config_for(config)
        conversations = [
            make_sample(
                [seed, i], question_types[i % len(question_types)], synthetic, num_turns,
                follow_up_types=follow_up_types,
            ).conversations
            for i in range(min(num_samples, (4 if num_turns == 1 else 16) * len(question_types)))
        ]
    else:
        conversations = [a.conversations for a in load_annotations(data_path)]
    text, positions = 0, 0
    for turns in conversations:
        ids, _ = encode_conversation(tokenizer, turns)
        video, audio = ids.count(config.video_token_id), ids.count(config.audio_token_id)
        needed = len(ids) - video - audio + video * config.num_video_tokens + audio * config.num_audio_tokens
        if needed > positions:
            text, positions = len(ids) - video - audio, needed
    return text, positions


# --------------------------------------------------------------------------- #
# Data order and learning rate, both resumable
# --------------------------------------------------------------------------- #


class DataSampler:
    """Batches of dataset indices in a random order, epoch after epoch, that can be saved and resumed.

    Each epoch is a fresh ``torch.randperm`` drawn from this sampler's own
    generator; the state is that generator, the current epoch's order and the
    position in it, so a resumed run draws exactly the batches it would have.
    A batch may straddle two epochs.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)  # (num_samples,) this epoch's order, once drawn
        self.position = 0
        self.epoch = 0

    def next_indices(self, batch_size: int) -> list[int]:
        indices: list[int] = []
        while len(indices) < batch_size:
            if self.position == len(self.order):
                self.order = torch.randperm(self.num_samples, generator=self.generator)
                self.position = 0
                self.epoch += 1
            take = min(batch_size - len(indices), len(self.order) - self.position)
            indices += self.order[self.position : self.position + take].tolist()
            self.position += take
        return indices

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),  # uint8 tensor
            "order": self.order.clone(),  # int64 tensor
            "position": self.position,
            "epoch": self.epoch,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples:
            raise CheckpointError(
                f"the checkpoint sampled from {state['num_samples']} training samples, this run has "
                f"{self.num_samples}: resume with the same --data-path / --num-samples"
            )
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])


@dataclass
class WarmupCosineSchedule:
    """Linear warmup to ``lr`` over ``warmup_iters`` steps, then a cosine down to ``min_lr`` at ``train_iters``."""

    lr: float
    min_lr: float
    warmup_iters: int
    train_iters: int

    def __call__(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (1-based: the first update is step 1)."""
        if step <= self.warmup_iters:
            return self.lr * step / self.warmup_iters
        progress = (step - self.warmup_iters) / max(1, self.train_iters - self.warmup_iters)  # (0, 1]
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (self.lr - self.min_lr)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- #
# Pieces of the loop
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def deterministic_algorithms():
    """``torch.use_deterministic_algorithms(True)`` inside the block, the previous setting after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def make_optimizer(model: MIMOModel, lr: float, weight_decay: float) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the trainable parameters only: matrices decay, biases and norms do not (as nanoGPT)."""
    decay, no_decay, names_decay, names_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
        (names_decay if p.dim() >= 2 else names_no_decay).append(name)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr), names_decay + names_no_decay


def move_batch(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def training_loss(model: MIMOModel, batch: dict) -> tuple[torch.Tensor, int]:
    """Mean answer-token loss of one batch, and the number of decoder positions it processed.

    The batch carries media (``video``, ``audio``) or, from a :class:`TowerFeatureCache`, tower outputs
    (``video_features``, ``audio_features``).
    """
    out = model(
        batch["input_ids"], batch.get("video"), batch.get("audio"), batch["labels"], batch["attention_mask"],
        sample_ids=batch["id"], video_features=batch.get("video_features"), audio_features=batch.get("audio_features"),
    )
    return out.loss, int(out.combined.attention_mask.sum())


def _rewrite_metrics(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def tower_checkpoint_mismatch(path: Path, tower_config) -> str | None:
    """Why the tower checkpoint at ``path`` does not fit ``tower_config`` (None if it does)."""
    from mimo_lib.pretrain_towers import read_metadata

    try:
        saved = json.loads(read_metadata(path)["tower_config"])
    except Exception as error:  # not safetensors, or no tower config in its metadata
        return f"not a tower checkpoint of mimo_lib.pretrain_towers ({type(error).__name__}: {error})"
    current = asdict(tower_config)
    differ = [f"{k}: checkpoint {saved.get(k)!r}, model {current.get(k)!r}"
              for k in sorted(set(saved) | set(current)) if k != "pretrained_path" and saved.get(k) != current.get(k)]
    return f"trained for another tower ({'; '.join(differ)})" if differ else None


def build_model(args: argparse.Namespace) -> MIMOModel:
    """Seed, build, then load tower checkpoints (fresh run) or the ``--load`` weights (init and resume)."""
    from mimo_lib.pretrain_towers import shipped_checkpoint

    torch.manual_seed(args.seed)  # the model is the first thing drawn after seeding: tests rebuild it this way
    if args.load is not None:
        return load_model(args.load).train()
    config = args.model_config
    model = MIMOModel(config)
    for modality in ("vision", "audio"):
        value = getattr(args, f"{modality}_tower_checkpoint")
        if value == "none" or getattr(config, modality).backbone_type.startswith("hf-"):
            continue  # random tower asked for, or the weights came with the transformers checkpoint
        path = Path(value) if value is not None else shipped_checkpoint(modality, args.preset or DEFAULT_PRESET)
        if value is None and not path.is_file():
            print(f"note: no pretrained {modality} tower at {path}; the {modality} tower starts random "
                  "(python -m mimo_lib.pretrain_towers makes one)")
            continue
        mismatch = tower_checkpoint_mismatch(path, getattr(config, modality))
        if mismatch:  # only the shipped default gets here (an explicit path was checked by parse_args)
            print(f"warning: the shipped {modality} tower {path} does not fit this model, so the {modality} "
                  f"tower starts random: {mismatch}")
            continue
        model.load_towers(**{f"{modality}_path": path})
        print(f"loaded the {modality} tower from {path}")
    return model.train()


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


@dataclass
class TrainResult:
    model: MIMOModel
    metrics: list[dict[str, Any]]
    checkpoint: Path | None  # the last step folder written
    final: Path | None  # the model folder written at the end


def train(args: argparse.Namespace) -> TrainResult:
    """Run training as ``args`` (from :func:`parse_args`) says. Raises :class:`NonFiniteLossError` on nan/inf."""
    if args.device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA init)
        torch.backends.cudnn.benchmark = False
    tokenizer = Tokenizer.default()
    config = args.model_config
    if config.language_model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"the model's vocab_size {config.language_model.vocab_size} differs from the tokenizer's "
            f"{tokenizer.vocab_size}; build the config from a preset"
        )

    # ---- data
    train_set = build_dataset(
        args.data_path, config, tokenizer, args.num_samples, args.seed, args.question_types, args.num_turns,
        args.follow_up_types, args.false_claim_attributes,
    )
    eval_set = None
    if args.eval_samples > 0:
        held_out = build_dataset(
            args.data_path, config, tokenizer, args.eval_samples, args.seed + HELD_OUT_SEED_OFFSET, args.question_types
        )
        eval_set = evaluation_subset(held_out, args.eval_samples)  # a folder has no split: its first samples
    if args.data_path != "synthetic":
        train_set.check_media()  # open every file once: a broken clip fails now, not at step 700

    # ---- model, optimizer, schedule, sampler
    model = build_model(args).to(args.device)
    model.set_trainable(**{component: not getattr(args, flag) for flag, component in FREEZE_FLAGS.items()})
    optimizer, parameter_names = make_optimizer(model, args.lr, args.weight_decay)
    started = time.perf_counter()  # elapsed_s counts from here: encoding the clips below is part of the run
    cache = None
    if args.cache_tower_features and args.freeze_vision_tower and args.freeze_audio_tower:
        cache = TowerFeatureCache(model, train_set, tokenizer.pad_id, device=args.device)
        cache.fill()
    schedule = WarmupCosineSchedule(args.lr, args.min_lr, args.warmup_iters, args.train_iters)
    sampler = DataSampler(len(train_set), args.seed)
    metrics: list[dict[str, Any]] = []
    start_step = 0
    if args.mode == "resume":
        checkpoint = load_checkpoint(args.load)
        if checkpoint.parameter_names != parameter_names:
            raise CheckpointError(
                f"{checkpoint.path} trained other parameters than this run would (did the --freeze-* flags "
                "change?); resume with the same flags"
            )
        optimizer.load_state_dict(checkpoint.optimizer_state)
        sampler.load_state_dict(checkpoint.sampler_state)
        restore_rng_state(checkpoint.rng_state)
        metrics = checkpoint.metrics
        start_step = checkpoint.step
        _warn_changed_flags(checkpoint.args or {}, args)
        print(f"resuming {args.stage} from {checkpoint.path} at step {start_step}")
    elif args.mode == "init":
        print(f"{args.stage}: starting from the weights of {args.load} (fresh optimizer, step 0)")

    summary = model.trainable_summary()
    trainable = sum(t for t, _ in summary.values())
    print(f"{args.stage}: training {trainable:,} of {model.num_parameters():,} parameters "
          f"({', '.join(name for name, (t, _) in summary.items() if t)}) on {len(train_set)} samples, "
          f"{args.train_iters} steps of {args.micro_batch_size}, device {args.device}")

    metrics_path = None
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        metrics_path = args.save / "metrics.jsonl"
        _rewrite_metrics(metrics_path, metrics)  # drop lines a killed run logged after its last checkpoint
    else:
        print("note: no --save given: nothing will be written")

    def save(step: int) -> Path:
        return save_checkpoint(
            args.save, model, step, stage=args.stage, optimizer=optimizer, parameter_names=parameter_names,
            scheduler_state=schedule.state_dict(), sampler_state=sampler.state_dict(), metrics=metrics,
            args=_jsonable_args(args), extra={"initialized_from": None if args.load is None else str(args.load)},
            tokenizer=tokenizer, rng_state=capture_rng_state(), keep=args.keep_checkpoints,
        )

    last_checkpoint: Path | None = args.load if args.mode == "resume" else None
    saved_step: int | None = None  # the last step saved into --save by this process
    elapsed_before = metrics[-1]["elapsed_s"] if metrics else 0.0
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(total=args.train_iters, initial=start_step, desc=args.stage, unit="step", dynamic_ncols=True)
    try:
        with deterministic_algorithms():
            for step in range(start_step + 1, args.train_iters + 1):
                t0 = time.perf_counter()
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                indices = sampler.next_indices(args.micro_batch_size)
                if cache is not None:  # frozen towers: their outputs, computed once per clip
                    batch = move_batch(cache.batch(indices), args.device)
                else:
                    batch = move_batch(collate_av_batch([train_set[i] for i in indices], tokenizer.pad_id), args.device)

                try:
                    loss, tokens = training_loss(model, batch)
                except FloatingPointError as error:  # MIMOModel refuses a non-finite loss itself
                    raise _non_finite(step, str(error).split(":")[0], last_checkpoint) from None
                if not torch.isfinite(loss):
                    raise _non_finite(step, f"non-finite loss {loss.item()}", last_checkpoint)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable_params, GRAD_CLIP)
                if not torch.isfinite(grad_norm):
                    raise _non_finite(step, f"non-finite gradient norm {grad_norm.item()}", last_checkpoint)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                seconds = time.perf_counter() - t0
                record = {
                    "step": step, "loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(), "tokens": tokens,
                    "tokens_per_s": tokens / max(seconds, 1e-9),
                    "elapsed_s": elapsed_before + time.perf_counter() - started,
                }
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                last = step == args.train_iters
                if eval_set is not None and ((args.eval_interval and step % args.eval_interval == 0) or last):
                    record["eval"] = evaluate_accuracy(model, eval_set, tokenizer, EVAL_BATCH_SIZE)
                    bar.write(f"step {step}: exact match " + ", ".join(f"{k} {v:.2f}" for k, v in record["eval"].items()))
                metrics.append(record)
                if metrics_path is not None:
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if args.save is not None and ((args.save_interval and step % args.save_interval == 0) or last):
                    last_checkpoint, saved_step = save(step), step
                if args.stop_after == step:
                    bar.close()
                    print(f"--stop-after {step}: killing this process (SIGKILL), as asked", flush=True)
                    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    finally:
        bar.close()

    final = None
    if args.save is not None:
        if saved_step != args.train_iters:  # no step ran here (a finished run was loaded): save it in --save too
            last_checkpoint = save(args.train_iters)
        final = save_model_only(model, args.save / "final", tokenizer)
        print(f"saved {last_checkpoint} and the model for generate/evaluate in {final}")
    return TrainResult(model.eval(), metrics, last_checkpoint, final)


def _non_finite(step: int, what: str, last_checkpoint: Path | None) -> NonFiniteLossError:
    where = (
        f"The last good checkpoint is {last_checkpoint}: resume from it with --load and a lower --lr"
        if last_checkpoint is not None
        else "No checkpoint was written yet"
    )
    return NonFiniteLossError(
        f"step {step}: {what}. Training stopped before applying step {step}. {where}, or check that step's inputs."
    )


def _jsonable_args(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for key, value in vars(args).items():
        if key == "model_config":
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def _warn_changed_flags(saved: dict[str, Any], args: argparse.Namespace) -> None:
    now = _jsonable_args(args)
    changed = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in RESUME_SENSITIVE
               if k in saved and saved.get(k) != now.get(k)]
    if changed:
        print("warning: resuming with changed flags, so this is not an exact resume: " + "; ".join(changed))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except NonFiniteLossError as error:
        print(f"mimo-train: error: {error}", file=sys.stderr)
        return 1
    except (MimoInputError, FileNotFoundError) as error:
        print(f"mimo-train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
