"""Train the MIMO model: ``python -m mimo_lib.train`` (or the ``mimo-train`` command).

Two stages, as LLaVA trains (chapter 7):

* ``--stage align``: only the two projectors learn, on description-style answers
  (``caption`` questions), so that video and audio tokens land where the
  frozen language model can read them;
* ``--stage instruct``: the projectors and the language model learn, on every
  question type. Start it from an align run with ``--load ALIGN_RUN``.
* ``--stage speak`` (chapter 10): the same parts learn to answer with a sound
  (:mod:`mimo_lib.audio_output`): ``--load mimo_lib/pretrained/mimo_toy --save runs/speak``. A loaded
  text-only model gets the audio-out tokens on the fly (its vocabulary extended, text logits unchanged).

A few examples::

    python -m mimo_lib.train --stage align --save runs/align                    # the toy recipe's align stage
    python -m mimo_lib.train --stage instruct --load runs/align --save runs/instruct
    python -m mimo_lib.train --stage instruct --load runs/instruct --save runs/instruct   # resume
    python -m mimo_lib.train --data-path data_samples --stage instruct --train-iters 20 --micro-batch-size 2

**Settings.** Everything a run needs is one :class:`TrainConfig`. The command line fills it (a flag left
out is ``None``), and :func:`resolve` completes it, in this order: the loaded run's own settings (when
resuming, or for the data of a run started from another), then the preset's recipe
(:mod:`mimo_lib.recipes`: the steps, learning rates and data mix that made the committed model), then
fixed defaults. So ``--stage instruct --load runs/align --save runs/instruct`` with no other flag
reproduces the shipped model. Model sizes come from ``--preset`` (or ``--config``, a MIMOConfig JSON such
as a model folder's ``config.json``) with the model flags on top.

**Checks first.** :func:`prepare_run` validates the settings, the model config (and its size against the
machine's memory), the data path, the checkpoints named, the device, the run folders and the sequence
length a sample needs, each in a named ``check_*`` function, before anything is built or written. A
problem is one line naming the flag or file and what to change (``mimo-train: error: ...``, exit status 2).

**What is written.** ``--save RUN`` gets numbered checkpoints ``RUN/step-000200/`` and the pointer
``RUN/latest`` (layout and atomicity: :mod:`mimo_lib.checkpoint`), ``RUN/metrics.jsonl`` with one JSON
line per step (``step, loss, lr, grad_norm, tokens, tokens_per_s, elapsed_s``, plus ``eval``, the
exact-match accuracy per question type, on evaluation steps) and, at the end, ``RUN/final/``: the model
folder that ``python -m mimo_lib.generate`` and ``python -m mimo_lib.evaluate`` load. Each checkpoint
holds the resolved :class:`TrainConfig`.

**What ``--load`` does.** A checkpoint of the *same* stage is resumed exactly: weights, optimizer,
learning-rate schedule, data order, random generators, step counter and metrics all continue where they
stopped, and every setting not given on the command line is the run's own. A checkpoint of another stage
(an align run loaded by ``--stage instruct``), or a model folder, gives the weights and the data settings
(``--data-path``, ``--valid-fraction``, ``--allow-missing-audio``, ``--seed``): the new stage starts at
step 0 with a fresh optimizer and data order.

**``--train-iters`` is the total**, a resumed run's steps included (Megatron's meaning). Raising it when
resuming *extends* the run: the steps taken keep their learning rates, and the cosine continues from the
last one down to ``--min-lr`` at the new end (:meth:`mimo_lib.optim.WarmupCosineSchedule.extended_to`),
instead of warming up again.

**Exact resume.** On the CPU, training 2N steps in one go and training N steps, being killed (even with
SIGKILL, even while saving) and resuming for N more give bitwise equal weights. What that takes:

1. every random draw comes from a generator whose state is checkpointed: the batch indices from a
   ``torch.Generator`` of their own (:class:`DataSampler`), dropout from torch's global generator (saved,
   with Python's and numpy's); synthetic clips are pure functions of ``(seed, index)``;
2. ``torch.use_deterministic_algorithms(True)`` while training, so no kernel may pick a different
   reduction order from one run to the next (on CUDA also ``CUBLAS_WORKSPACE_CONFIG=:4096:8``);
3. optimizer and schedule state saved exactly (safetensors keeps every bit, JSON writes floats with
   ``repr``, which round-trips);
4. the same settings (a changed one is reported on resume) and the same number of CPU threads.

``--stop-after N`` kills the process with SIGKILL right after step N (and its checkpoint, if one is
due): a testing aid for exactly this.

**Stopping on a non-finite loss.** A ``nan`` or ``inf`` loss (or gradient norm) stops training before the
optimizer applies it, with an error naming the step; the last checkpoint written is intact and can be
resumed with a lower ``--lr``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mimo_lib.atomic import atomic_write_text
from mimo_lib.audio_output import AUDIO_OUT_STAGES, extend_config, extend_model, tokenizer_for
from mimo_lib.checkpoint import (
    TRAIN_BYTES_PER_PARAMETER,
    CheckpointError,
    capture_rng_state,
    check_model_size,
    is_training_checkpoint,
    load_checkpoint,
    load_model,
    read_checkpoint_config,
    read_checkpoint_state,
    read_train_config,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_model_only,
)
from mimo_lib.cli import run_command
from mimo_lib.config import AUDIO_BACKBONES, PRESETS, VISION_BACKBONES, ConfigError, MIMOConfig, get_preset
from mimo_lib.constants import HELD_OUT_SEED_OFFSET, IGNORE_INDEX
from mimo_lib.data.conversation import encode_conversation
from mimo_lib.data.dataset import collate_av_batch, load_annotations, split_dataset
from mimo_lib.data.synthetic import (
    ALL_QUESTION_TYPES,
    AUDIO_OUT_TYPES,
    CLAIM_ATTRIBUTES,
    FALSE_CLAIM_ATTRIBUTES,
    make_sample,
    synthetic_config_for,
)
from mimo_lib.errors import MimoInputError
from mimo_lib.evaluate import build_dataset, evaluate_accuracy, evaluation_subset
from mimo_lib.feature_cache import TowerFeatureCache
from mimo_lib.model import MIMOModel
from mimo_lib.optim import WarmupCosineSchedule, clip_grad_norm, make_optimizer
from mimo_lib.parallel import shard_batch_indices
from mimo_lib.recipes import Recipe, get_recipe
from mimo_lib.threads import THREADS_HELP, apply_thread_policy, check_threads_flag
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.towers import read_tower_config, shipped_checkpoint, tower_config_differences

STAGES = ("align", "instruct", "speak")
DEFAULT_PRESET = "toy"
#: What each stage trains; the ``--freeze-*`` flags override it.
STAGE_FREEZING: dict[str, dict[str, bool]] = {
    "align": {"vision_tower": True, "audio_tower": True, "projectors": False, "language_model": True},
    "instruct": {"vision_tower": True, "audio_tower": True, "projectors": False, "language_model": False},
    "speak": {"vision_tower": True, "audio_tower": True, "projectors": False, "language_model": False},
}
#: Types a multi-turn training conversation may ask after its first question. ``both`` and ``check`` are left
#: out: an earlier answer ("The square is yellow.") would let the model read them off the text. ``time`` follows
#: a first ``time`` question only, asking about the clip's other event (``make_sample``): twice the time
#: supervision a rendered two-event clip gives, for one more turn
FOLLOW_UP_TYPES = ("vision", "motion", "audio", "caption", "time")
#: Settings that change the arithmetic of training: resuming with other values is not an exact resume.
RESUME_SENSITIVE = (
    "data_path", "valid_fraction", "num_samples", "num_turns", "follow_up_types", "false_claim_attributes",
    "question_types", "micro_batch_size", "lr", "min_lr", "warmup_iters", "weight_decay", "grad_clip", "seed",
)
#: Settings a run started from another run's weights takes from it, unless given: the same data.
INHERITED_BY_NEW_STAGE = ("preset", "data_path", "valid_fraction", "allow_missing_audio", "seed")
#: Settings a resumed run never takes from the run it resumes: where and how this process runs (and the model
#: flags: the model is the checkpoint's).
NOT_INHERITED_ON_RESUME = ("load", "save", "stop_after", "device", "threads", "precision", "progress")
EVAL_BATCH_SIZE = 16
#: A fresh RoPE decoder's max_sequence_length grows to fit the longest sample up to this many positions; beyond
#: it a sample is refused (attention memory grows with its square): give --max-sequence-length to go further.
GROWN_SEQUENCE_LIMIT = 4096
#: More frames a second than any video has (60 fps) is a typo: refused before a single clip is rendered.
MAX_FRAMES_PER_SECOND = 60


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became ``nan``/``inf``: training stopped before applying it."""


# --------------------------------------------------------------------------- #
# The settings
# --------------------------------------------------------------------------- #


@dataclass
class TrainConfig:
    """Every setting of a training run. ``None``: not given; :func:`resolve` fills it in."""

    # ---- the model
    preset: str | None = None  # model sizes to start from; None: the loaded run's, else toy
    config: str | None = None  # a MIMOConfig JSON file instead of a preset
    num_layers: int | None = None  # language model: transformer layers
    hidden_size: int | None = None  # language model: width (its MLP becomes 4x this, as in Megatron-LM)
    num_attention_heads: int | None = None  # language model: attention heads
    vision_backbone_type: str | None = None  # "clip" or "hf-clip"
    audio_backbone_type: str | None = None  # "whisper", "beats" or "hf-whisper"
    num_frames: int | None = None  # video frames per clip
    vision_temporal_compression: int | None = None  # consecutive frames merged into one video token
    audio_seq_len: int | None = None  # audio tokens per clip
    clip_duration_s: float | None = None  # seconds of time both senses see per clip (the window)
    clip_window: str | None = None  # where that window starts in a file: "start" (0 s) or "center"
    av_layout: str | None = None  # "block" (video, then audio) or "interleaved" (time chunk by time chunk; chapter 8)
    av_positions: str | None = None  # "sequence" (0, 1, 2, ...) or "time" (media ids count 40-ms ticks, TMRoPE-style)
    chunk_seconds: float | None = None  # one time chunk of the interleaved layout
    av_time_embedding: bool | None = None  # a learned vector per time chunk added to its video and audio tokens
    max_sequence_length: int | None = None  # language model: longest combined sequence (None: the preset's, grown
    # to fit the longest sample when the decoder uses RoPE, whose positions have no table to outgrow)
    hf_vision_path: str | None = None  # local transformers CLIP folder (hf-clip)
    hf_audio_path: str | None = None  # local transformers Whisper folder (hf-whisper)
    vision_tower_checkpoint: str | None = None  # a pretrained tower file, "none" (random), None: the shipped one
    audio_tower_checkpoint: str | None = None  # the same for the audio tower
    # ---- the data
    data_path: str | None = None  # "synthetic" or a folder with conversations.jsonl; None: the loaded run's
    num_samples: int | None = None  # synthetic training clips
    valid_fraction: float | None = None  # a folder: this fraction of its samples is held out for evaluation
    allow_missing_audio: bool | None = None  # a folder: a video without sound gives silence instead of an error
    num_turns: int | None = None  # synthetic: questions per training conversation (at most)
    follow_up_types: tuple[str, ...] | None = None  # synthetic: what later turns may ask
    false_claim_attributes: tuple[str, ...] | None = None  # synthetic: what a false "both" claim changes
    question_types: tuple[str, ...] | None = None  # synthetic: first questions, cycled (repeats weight a type)
    # ---- the stage
    stage: str = "align"  # "align" or "instruct"
    freeze_vision_tower: bool | None = None  # None: the stage's choice (STAGE_FREEZING)
    freeze_audio_tower: bool | None = None
    freeze_projectors: bool | None = None
    freeze_language_model: bool | None = None
    # ---- optimisation
    micro_batch_size: int | None = None  # samples per optimizer step
    train_iters: int | None = None  # optimizer steps in all, a resumed run's included
    lr: float | None = None  # peak learning rate
    min_lr: float | None = None  # learning rate at the end of the cosine
    warmup_iters: int | None = None  # linear warm-up steps
    weight_decay: float | None = None  # AdamW weight decay on matrices
    grad_clip: float = 1.0  # clip the gradient norm to this
    seed: int | None = None  # model init, data order and synthetic clips; None: the loaded run's, else 0
    cache_tower_features: bool = True  # frozen towers run once per clip, their outputs kept in memory
    # ---- scale-out (chapter 9): the decoder on megatron-core, tensor- and data-parallel under torchrun
    backend: str = "local"  # the decoder's implementation: "local" (GPTLanguageModel) or "megatron" (GPTModel)
    tensor_model_parallel_size: int = 1  # processes one decoder is split over (megatron backend)
    global_batch_size: int | None = None  # samples per optimizer step over all data-parallel ranks; None: micro x DP
    precision: str = "auto"  # "fp32" or "bf16" (autocast); "auto": bf16 on CUDA, fp32 on the CPU
    device: str = "auto"  # "auto": cuda if available, else cpu
    threads: int | None = None  # torch CPU threads; None: mimo_lib.threads' policy
    progress: bool = True  # progress bars (off in a notebook that stores its outputs)
    # ---- checkpoints and evaluation
    save: str | None = None  # run folder; None: nothing is written
    load: str | None = None  # run, step or model folder to resume or start from
    save_interval: int = 200  # checkpoint every N steps and at the end; 0: only at the end
    keep_checkpoints: int = 2  # step folders kept in the run folder
    eval_interval: int = 200  # evaluate every N steps and at the end; 0: only at the end
    eval_samples: int = 100  # held-out samples for exact-match accuracy; 0: no evaluation
    stop_after: int | None = None  # TESTING AID: SIGKILL the process right after this step
    # ---- filled in by resolve(), for the record
    recipe_version: str | None = None  # the recipe the defaults came from

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; keys this version does not know (an older run's) are skipped."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


@dataclass
class Run:
    """A checked, resolved run: what :func:`run_training` needs besides the data."""

    config: TrainConfig  # resolved: every setting filled in
    model_config: MIMOConfig
    mode: str  # "fresh", "resume" (same stage) or "init" (weights of another run)
    load: Path | None  # the checkpoint or model folder resolved from --load
    recipe: Recipe
    data_parallel_size: int = 1  # world size / tensor-parallel size
    accumulation_steps: int = 1  # micro-batches per optimizer step on each rank


# --------------------------------------------------------------------------- #
# The command line: a thin layer that fills a TrainConfig
# --------------------------------------------------------------------------- #


def _name_list(text: str) -> tuple[str, ...]:
    """``"vision, audio"`` -> ``("vision", "audio")``; checked later by :func:`check_data`."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimo-train",
        description="Train the MIMO audio-video-language model (stage align or instruct) on synthetic clips "
        "or a dataset folder. Flags left out take the loaded run's settings, then the preset's recipe "
        "(mimo_lib/recipes.py), which reproduces the committed model.",
        epilog="See the module docstring (python -c 'import mimo_lib.train; help(mimo_lib.train)') for resume "
        "details.",
        argument_default=None,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), help="model sizes to start from (default: toy)")
    model.add_argument("--config", help="a MIMOConfig JSON file (the config.json of a model folder) instead of --preset")
    model.add_argument("--num-layers", type=int, help="language model: transformer layers")
    model.add_argument("--hidden-size", type=int, help="language model: width; its MLP width becomes 4x this")
    model.add_argument("--num-attention-heads", type=int, help="language model: attention heads (must divide --hidden-size)")
    model.add_argument("--vision-backbone-type", choices=VISION_BACKBONES, help="vision tower")
    model.add_argument(
        "--audio-backbone-type", choices=AUDIO_BACKBONES,
        help="audio tower; switching backbone resets its feature bins and --audio-seq-len to the backbone's own",
    )
    model.add_argument("--num-frames", type=int, help="video frames per clip")
    model.add_argument(
        "--vision-temporal-compression", type=int,
        help="consecutive frames merged into one video token by the projector (must divide --num-frames; toy: 8)",
    )
    model.add_argument(
        "--audio-seq-len", type=int,
        help="audio tokens per clip (the decoder positions one clip of sound costs); any positive number: the "
        "encoder's positions (50/s Whisper, 56/s BEATs) are average-pooled into that many equal time spans; more "
        "tokens than positions repeat positions (no extra detail; raise --clip-duration)",
    )
    model.add_argument(
        "--clip-duration", type=float, dest="clip_duration_s",
        help="seconds of time both senses see per clip: the window frames and audio are read from (toy: 1)",
    )
    model.add_argument(
        "--clip-window", choices=("start", "center"),
        help="where the window of --clip-duration seconds that both video and audio are read from begins: "
        "'start' (0 s, default) or 'center' (centred on the clip)",
    )
    model.add_argument(
        "--av-layout", choices=("block", "interleaved"),
        help="how video and audio tokens are laid out: 'block' (all video, then all audio) or 'interleaved' (time "
        "chunk by chunk: each chunk's video, then its audio; the projector then merges only one chunk's frames)",
    )
    model.add_argument(
        "--av-positions", choices=("sequence", "time"),
        help="position ids of media tokens: 'sequence' (0, 1, 2, ...) or 'time' (one id per 40 ms of the clip, "
        "shared by video and audio of the same instant; text continues after the largest, as Qwen2.5-Omni)",
    )
    model.add_argument("--chunk-seconds", type=float, help="one time chunk of the interleaved layout (toy: 0.5)")
    model.add_argument(
        "--av-time-embedding", action=argparse.BooleanOptionalAction,
        help="add a learned vector per time chunk (--chunk-seconds) to every video and audio token of that chunk, "
        "so a token carries when it is (starts at zero; learns with the language model; toy: on)",
    )
    model.add_argument(
        "--max-sequence-length", type=int,
        help="language model: longest combined sequence (default: the preset's, raised to fit the longest sample "
        "when the decoder uses RoPE)",
    )
    model.add_argument("--hf-vision-path", help="local transformers CLIP folder, for --vision-backbone-type hf-clip")
    model.add_argument("--hf-audio-path", help="local transformers Whisper folder, for --audio-backbone-type hf-whisper")
    model.add_argument(
        "--vision-tower-checkpoint",
        help="pretrained vision tower (mimo_lib.pretrain_towers); default: the shipped one for --preset if it "
        "exists; 'none': random tower; ignored with --load",
    )
    model.add_argument(
        "--audio-tower-checkpoint",
        help="pretrained audio tower; default: the shipped one for --preset if it exists; 'none': random tower; "
        "ignored with --load",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-path",
        help="'synthetic' (clips rendered from --seed) or a folder with conversations.jsonl and media "
        "(default: the loaded run's, else synthetic)",
    )
    data.add_argument("--num-samples", type=int, help="synthetic training set size (default: the recipe's)")
    data.add_argument(
        "--valid-fraction", type=float,
        help="a folder: hold out this fraction of its samples (chosen with --seed) for evaluation during "
        "training and for mimo_lib.evaluate (default 0: evaluation scores training samples, with a warning)",
    )
    data.add_argument(
        "--allow-missing-audio", action=argparse.BooleanOptionalAction,
        help="a folder: a video without an audio track is heard as silence (with a warning) instead of an error",
    )
    data.add_argument(
        "--num-turns", type=int,
        help="synthetic: questions per training conversation (at most), the first of the sample's type, the "
        "others from --follow-up-types (default: the recipe's, 1 align, 4 instruct). Evaluation asks one",
    )
    data.add_argument(
        "--follow-up-types", type=_name_list,
        help=f"synthetic, with --num-turns > 1: comma list of question types later turns ask (default: "
        f"{','.join(FOLLOW_UP_TYPES)})",
    )
    data.add_argument(
        "--false-claim-attributes", type=_name_list,
        help="synthetic training data only: what a false 'both' claim changes, drawn uniformly from this comma "
        f"list (repeats weight it); evaluation always uses the task's (default: {','.join(FALSE_CLAIM_ATTRIBUTES)})",
    )
    data.add_argument(
        "--question-types", type=_name_list,
        help=f"comma list of synthetic question types, from {', '.join(ALL_QUESTION_TYPES)} (repeats weight "
        "a type); default: the recipe's (caption for align, the full mix for instruct)",
    )

    stage = parser.add_argument_group("stage and freezing")
    stage.add_argument("--stage", choices=STAGES, default="align", help="what to train (default: %(default)s)")
    for component, text in (
        ("vision_tower", "frozen in both stages"), ("audio_tower", "frozen in both stages"),
        ("projectors", "trained in both stages"), ("language_model", "frozen in align, trained in instruct"),
    ):
        stage.add_argument(
            f"--freeze-{component.replace('_', '-')}", action=argparse.BooleanOptionalAction,
            help=f"freeze the {component.replace('_', ' ')} (default: {text})",
        )

    optim = parser.add_argument_group("optimization (defaults: the preset's recipe, mimo_lib/recipes.py)")
    optim.add_argument("--micro-batch-size", type=int, help="samples per optimizer step")
    optim.add_argument("--train-iters", type=int, help="optimizer steps in all, a resumed run's included")
    optim.add_argument("--lr", type=float, help="peak learning rate")
    optim.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine")
    optim.add_argument("--warmup-iters", type=int, help="linear warmup steps (default: 5%% of --train-iters)")
    optim.add_argument("--weight-decay", type=float, help="AdamW weight decay on matrices")
    optim.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (default: %(default)s)")
    optim.add_argument("--seed", type=int, help="model init, data order and synthetic clips (default: 0)")
    optim.add_argument(
        "--cache-tower-features", action=argparse.BooleanOptionalAction, default=True,
        help="with both towers frozen, run them once per training clip and keep their outputs in memory "
        "(mimo_lib.feature_cache; about 80 KB per toy clip) instead of every step (default: on)",
    )
    optim.add_argument("--device", default="auto", help="'auto' (default: cuda if available, else cpu), 'cpu', 'cuda', ...")
    optim.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="compute precision: bf16 autocast (fp32 master weights and AdamW) or fp32; auto: bf16 on CUDA, fp32 on the CPU",
    )
    optim.add_argument("--threads", type=int, help=THREADS_HELP)
    optim.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True,
        help="progress bars while encoding clips and training (default: on)",
    )

    scale = parser.add_argument_group(
        "scale-out (chapter 9): torchrun --nproc_per_node=N -m mimo_lib.train --backend megatron ..."
    )
    scale.add_argument(
        "--backend", choices=("local", "megatron"), default="local",
        help="the decoder: 'local' (this book's GPTLanguageModel) or 'megatron' (megatron-core's GPTModel, the "
        "same weights; tensor parallel under torchrun) (default: %(default)s)",
    )
    scale.add_argument(
        "--tensor-model-parallel-size", type=int, default=1,
        help="split the decoder over this many processes (megatron backend, under torchrun); the other factor of "
        "the world size is data parallelism (default: %(default)s)",
    )
    scale.add_argument(
        "--global-batch-size", type=int,
        help="samples per optimizer step over all data-parallel ranks, as in Megatron (default: --micro-batch-size "
        "x data-parallel size); more than that accumulates gradients over micro-batches",
    )

    io = parser.add_argument_group("checkpoints and evaluation")
    io.add_argument("--save", help="run folder for checkpoints and metrics.jsonl (none: save nothing)")
    io.add_argument("--load", help="run folder, step folder or model folder to resume or start from")
    io.add_argument("--save-interval", type=int, default=200, help="checkpoint every N steps and at the end; 0: only at the end (default: %(default)s)")
    io.add_argument("--keep-checkpoints", type=int, default=2, help="step folders to keep in --save (default: %(default)s)")
    io.add_argument("--eval-interval", type=int, default=200, help="evaluate every N steps and at the end; 0: only at the end (default: %(default)s)")
    io.add_argument(
        "--eval-samples", type=int, default=100,
        help="held-out samples for exact-match accuracy; 0: no evaluation (default: %(default)s)",
    )
    io.add_argument(
        "--stop-after", type=int,
        help="TESTING AID: SIGKILL this process right after step N (after its checkpoint, if one is due)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a :class:`TrainConfig` (flags left out are ``None``); nothing is checked yet."""
    return TrainConfig(**vars(build_parser().parse_args(argv)))


# --------------------------------------------------------------------------- #
# Resolving: the loaded run, the recipe, the model config
# --------------------------------------------------------------------------- #


def resolve(config: TrainConfig) -> Run:
    """Fill every ``None`` of ``config``: from the loaded run, then the recipe, then fixed defaults."""
    mode, load, saved, model_config = "fresh", None, None, None
    if config.load is not None:
        try:
            load = resolve_checkpoint(config.load)
            model_config = read_checkpoint_config(load)
            saved_dict = read_train_config(load)
            training_checkpoint = is_training_checkpoint(load)
            stage = read_checkpoint_state(load).get("stage") if training_checkpoint else None
        except CheckpointError as error:
            raise CheckpointError(f"--load: {error}") from None
        saved = TrainConfig.from_dict(saved_dict) if saved_dict else None
        mode = "resume" if training_checkpoint and stage == config.stage else "init"
    if saved is not None:
        inherited = INHERITED_BY_NEW_STAGE if mode != "resume" else [
            f.name for f in fields(TrainConfig)
            if f.name not in NOT_INHERITED_ON_RESUME and (f.name == "preset" or f.name not in MODEL_FLAGS)
        ]
        config = replace(config, **{k: getattr(saved, k) for k in inherited if getattr(config, k) is None})
    preset = config.preset or (saved.preset if saved is not None else None) or DEFAULT_PRESET
    recipe = get_recipe(preset)
    stage = recipe.stage(config.stage)

    folder = config.data_path not in (None, "synthetic")
    filled = {
        "preset": preset,
        "data_path": config.data_path or "synthetic",
        "valid_fraction": 0.0 if config.valid_fraction is None else config.valid_fraction,
        "allow_missing_audio": bool(config.allow_missing_audio),
        "num_samples": stage.num_samples if config.num_samples is None else config.num_samples,
        "num_turns": 1 if folder else (stage.num_turns if config.num_turns is None else config.num_turns),
        "question_types": None if folder else (config.question_types or stage.question_types),
        "follow_up_types": None if folder else (
            FOLLOW_UP_TYPES if config.follow_up_types is None else config.follow_up_types),
        "false_claim_attributes": None if folder else (config.false_claim_attributes or FALSE_CLAIM_ATTRIBUTES),
        "micro_batch_size": config.micro_batch_size or stage.micro_batch_size,
        "train_iters": config.train_iters or stage.train_iters,
        "lr": stage.lr if config.lr is None else config.lr,
        "weight_decay": stage.weight_decay if config.weight_decay is None else config.weight_decay,
        "seed": 0 if config.seed is None else config.seed,
        "recipe_version": recipe.version,
    }
    filled.update({
        "min_lr": (stage.min_lr if config.lr is None else filled["lr"] / 10) if config.min_lr is None else config.min_lr,
        "warmup_iters": (round(stage.warmup_fraction * filled["train_iters"]) if config.warmup_iters is None
                         else config.warmup_iters),
    })
    for component, frozen in STAGE_FREEZING[config.stage].items():
        flag = f"freeze_{component}"
        filled[flag] = frozen if getattr(config, flag) is None else getattr(config, flag)
    if folder and config.num_turns is not None and config.num_turns != 1:
        filled["num_turns"] = config.num_turns  # refused by check_data with a message
    config = replace(config, **filled)
    if model_config is None:
        model_config = build_model_config(config)
    else:
        check_model_flags_match(config, model_config, load)
    if config.stage in AUDIO_OUT_STAGES:  # answers in sound need the audio-out tokens: a text model is extended
        model_config = extend_config(model_config)
    return Run(config, model_config, mode, load, recipe)


MODEL_FLAGS = (
    "preset", "config", "num_layers", "hidden_size", "num_attention_heads", "vision_backbone_type",
    "audio_backbone_type", "num_frames", "vision_temporal_compression", "audio_seq_len", "clip_duration_s",
    "clip_window", "av_layout", "av_positions", "chunk_seconds", "av_time_embedding", "max_sequence_length", "hf_vision_path",
    "hf_audio_path",
)


def build_model_config(config: TrainConfig) -> MIMOConfig:
    """The preset (or ``--config``), with the command line's overrides; ``MIMOConfig`` validates the result."""
    if config.config is not None:
        try:
            data = json.loads(Path(config.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"--config {config.config}: cannot read a JSON config ({error})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("language_model", "vision", "audio")):
            raise ConfigError(f"--config {config.config}: not a MIMOConfig JSON (a model folder's config.json)")
    else:
        data = get_preset(config.preset or DEFAULT_PRESET).to_dict()
    lm, vision, audio, projector = data["language_model"], data["vision"], data["audio"], data.setdefault("projector", {})
    if config.num_layers is not None:
        lm["num_layers"] = config.num_layers
    if config.hidden_size is not None:
        lm["hidden_size"] = config.hidden_size
        lm["ffn_hidden_size"] = 4 * config.hidden_size
    if config.num_attention_heads is not None:
        lm["num_attention_heads"] = config.num_attention_heads
    if config.vision_backbone_type is not None:
        vision["backbone_type"] = config.vision_backbone_type
        if config.vision_backbone_type == "hf-clip":
            vision["patch_embedding_type"] = "linear"  # a CLIP checkpoint brings its own patch embedding
    if config.hf_vision_path is not None:
        vision["pretrained_path"] = config.hf_vision_path
    if config.audio_backbone_type is not None and config.audio_backbone_type != audio["backbone_type"]:
        audio["backbone_type"] = config.audio_backbone_type
        audio["num_mel_bins"] = None  # the new backbone's own (80 log-mel or 128 fbank) ...
        audio["audio_seq_len"] = None  # ... and its own natural token count, unless given below
    if config.hf_audio_path is not None:
        audio["pretrained_path"] = config.hf_audio_path
    if config.num_frames is not None:
        vision["num_frames"] = config.num_frames
    if config.vision_temporal_compression is not None:
        projector["vision_temporal_compression"] = config.vision_temporal_compression
    if config.clip_duration_s is not None:
        audio["clip_duration_s"] = config.clip_duration_s
        if config.audio_seq_len is None:
            audio["audio_seq_len"] = None  # the encoder's natural count for the new length, halved
    if config.audio_seq_len is not None:
        audio["audio_seq_len"] = config.audio_seq_len
    if config.clip_window is not None:
        data["clip_window"] = config.clip_window
    for name in ("av_layout", "av_positions", "chunk_seconds", "av_time_embedding"):
        if getattr(config, name) is not None:
            data[name] = getattr(config, name)
    if data.get("av_layout") == "interleaved" and config.vision_temporal_compression is None:
        # merge frames within a chunk only: all of a chunk's frames when a flag changed the chunk's frame count
        # (or the configuration has no value, or one that does not fit it); else the --config file's or preset's own
        per_chunk, own = _frames_per_chunk(data), projector.get("vision_temporal_compression")
        geometry_given = any(
            getattr(config, name) is not None for name in ("num_frames", "clip_duration_s", "chunk_seconds", "av_layout")
        )
        misfit = isinstance(own, int) and own >= 1 and per_chunk % own != 0  # (a value below 1: MIMOConfig's error)
        if geometry_given or own is None or misfit:
            projector["vision_temporal_compression"] = per_chunk
    if config.max_sequence_length is not None:
        lm["max_sequence_length"] = config.max_sequence_length
    check_frames_fit_projector(vision, projector, config)
    try:
        return MIMOConfig.from_dict(data)
    except TypeError as error:  # a wrong type in a --config file
        raise ConfigError(f"invalid model configuration: {error}") from None


def _frames_per_chunk(data: dict) -> int:
    """Frames in one time chunk of the interleaved layout (at least 1): the temporal compression it allows."""
    frames = data["vision"].get("num_frames", 8)
    seconds = data["audio"].get("clip_duration_s", 1.0)
    chunk = data.get("chunk_seconds", 0.25)
    per_chunk = max(1, round(chunk / (seconds / frames)))
    while frames % per_chunk:
        per_chunk -= 1
    return per_chunk


def check_frames_fit_projector(vision: dict, projector: dict, config: TrainConfig) -> None:
    """A frame count the projector's temporal compression does not divide (``--num-frames 6 --av-layout block`` on
    the toy preset, whose projector merges 4 frames): say which flag fixes it."""
    frames, merged = vision.get("num_frames", 8), projector.get("vision_temporal_compression", 1)
    if frames >= 1 and merged >= 1 and frames % merged:
        raise ConfigError(
            f"--num-frames {frames}: the projector merges {merged} consecutive frames into one video token, so the "
            f"frame count must be a multiple of {merged}; also pass --vision-temporal-compression with a divisor "
            f"of {frames} (e.g. {max(d for d in range(1, frames + 1) if frames % d == 0 and d <= merged)})"
        )


def check_model_flags_match(config: TrainConfig, loaded: MIMOConfig, load: Path) -> None:
    """With ``--load``, model flags may restate the checkpoint's model, never change it."""
    given = [f"--{n.replace('_', '-')}" for n in MODEL_FLAGS if n != "preset" and getattr(config, n) is not None]
    if not given:
        return
    wanted = build_model_config(config)
    differences = _config_differences(loaded.to_dict(), wanted.to_dict())
    if differences:
        raise ConfigError(
            f"the model flags ({', '.join(given)}) describe another model than the loaded checkpoint {load} "
            f"({'; '.join(differences)}); drop them to use the checkpoint's config"
        )


def _config_differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """``["language_model.hidden_size: checkpoint 32, flags 64", ...]`` for two ``MIMOConfig.to_dict()``."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "pretrained_path":
            out.append(f"{prefix}{key}: checkpoint {a!r}, flags {b!r}")
    return out


# --------------------------------------------------------------------------- #
# Checks: every one before any work, each naming the flag or file and the fix
# --------------------------------------------------------------------------- #


def check_numbers(config: TrainConfig) -> None:
    """Counts, rates and fractions in range."""
    for name, low in (("micro_batch_size", 1), ("train_iters", 1), ("num_samples", 1), ("save_interval", 0),
                      ("eval_interval", 0), ("eval_samples", 0), ("keep_checkpoints", 1), ("seed", 0),
                      ("num_turns", 1), ("warmup_iters", 0)):
        value = getattr(config, name)
        if value is not None and value < low:
            raise MimoInputError(f"--{name.replace('_', '-')} must be at least {low} (got {value})")
    threads_problem = check_threads_flag(config.threads)
    if threads_problem:
        raise MimoInputError(threads_problem)
    if config.stop_after is not None and config.stop_after < 1:
        raise MimoInputError("--stop-after must be a step number, at least 1")
    if not 0.0 <= config.valid_fraction < 1.0:
        raise MimoInputError(f"--valid-fraction must be in [0, 1) (got {config.valid_fraction})")
    if not config.lr > 0:
        raise MimoInputError(f"--lr must be positive (got {config.lr})")
    if not 0 <= config.min_lr <= config.lr:
        raise MimoInputError(f"--min-lr must be between 0 and --lr {config.lr} (got {config.min_lr})")
    if config.warmup_iters > config.train_iters:
        raise MimoInputError(f"--warmup-iters must be at most --train-iters {config.train_iters} (got {config.warmup_iters})")
    if not config.weight_decay >= 0 or not config.grad_clip > 0:
        raise MimoInputError("--weight-decay must be >= 0 and --grad-clip > 0")
    if all(getattr(config, f"freeze_{c}") for c in STAGE_FREEZING[config.stage]):
        raise MimoInputError("every component is frozen: nothing to train (unfreeze something with --no-freeze-...)")


def check_backbone_paths(config: TrainConfig, model_config: MIMOConfig, mode: str) -> None:
    """``--hf-*-path`` only with an hf backbone, pointing at a folder; an hf backbone needs one (fresh runs)."""
    for backbone, flag, path in (
        (model_config.vision.backbone_type, "--hf-vision-path", config.hf_vision_path),
        (model_config.audio.backbone_type, "--hf-audio-path", config.hf_audio_path),
    ):
        if path is not None and not backbone.startswith("hf-"):
            raise MimoInputError(f"{flag} is only used with an hf backbone (the model uses {backbone!r})")
        if path is not None and not Path(path).is_dir():
            raise MimoInputError(f"{flag} {path} is not a folder: point it at a local transformers checkpoint folder")
    if mode == "fresh":
        if model_config.vision.backbone_type == "hf-clip" and model_config.vision.pretrained_path is None:
            raise MimoInputError("--vision-backbone-type hf-clip needs --hf-vision-path (a local CLIP checkpoint folder)")
        if model_config.audio.backbone_type == "hf-whisper" and model_config.audio.pretrained_path is None:
            raise MimoInputError("--audio-backbone-type hf-whisper needs --hf-audio-path (a local Whisper checkpoint folder)")


def check_tower_checkpoints(config: TrainConfig, model_config: MIMOConfig, mode: str) -> None:
    """Explicit tower files exist and were trained for this model's towers (``--load`` brings its own)."""
    if mode != "fresh":
        return
    for modality in ("vision", "audio"):
        value, option = getattr(config, f"{modality}_tower_checkpoint"), f"--{modality}-tower-checkpoint"
        if value is None or value == "none":
            continue
        backbone = getattr(model_config, modality).backbone_type
        if backbone.startswith("hf-"):
            raise MimoInputError(f"{option} cannot be used with the {backbone} backbone")
        if not Path(value).is_file():
            raise MimoInputError(f"{option} {value} not found; pass a file from mimo_lib.pretrain_towers or 'none'")
        differences = tower_config_differences(read_tower_config(value), getattr(model_config, modality))
        if differences:
            raise MimoInputError(f"{option} {value}: trained for another tower ({'; '.join(differences)})")


def check_data(config: TrainConfig, model_config: MIMOConfig) -> None:
    """A folder's annotations read and check (media existence included); synthetic lists name known types."""
    if config.data_path != "synthetic":
        for flag in ("question_types", "follow_up_types", "false_claim_attributes"):
            if getattr(config, flag) is not None:
                raise MimoInputError(f"--{flag.replace('_', '-')} only applies to --data-path synthetic (a folder has its own questions)")
        if config.num_turns != 1:
            raise MimoInputError("--num-turns only applies to --data-path synthetic (a folder has its own questions)")
        load_annotations(config.data_path)
        return
    if config.valid_fraction:
        raise MimoInputError("--valid-fraction only applies to a folder (synthetic runs evaluate on fresh held-out clips)")
    speaks = AUDIO_OUT_TYPES if model_config.audio_output is not None else ()
    for flag, names, allowed, allow_empty in (
        ("--question-types", config.question_types, ALL_QUESTION_TYPES + speaks, False),
        ("--follow-up-types", config.follow_up_types, ALL_QUESTION_TYPES, True),
        ("--false-claim-attributes", config.false_claim_attributes, CLAIM_ATTRIBUTES, False),
    ):
        unknown = [t for t in names if t not in allowed]
        if unknown or not (names or allow_empty):
            raise MimoInputError(f"{flag}: unknown {unknown or 'empty list'}; choose from {', '.join(allowed)}")
    try:
        synthetic_config_for(model_config)
    except ValueError as error:
        raise MimoInputError(f"the synthetic data cannot be rendered for this model: {error}") from None


def check_frame_rate(model_config: MIMOConfig) -> None:
    """``--num-frames`` within the time window: at most :data:`MAX_FRAMES_PER_SECOND` a second."""
    frames, seconds = model_config.vision.num_frames, model_config.audio.clip_duration_s
    if frames > MAX_FRAMES_PER_SECOND * seconds:
        raise MimoInputError(
            f"--num-frames {frames} in a {seconds:g}-s window is {frames / seconds:,.0f} frames a second, more than "
            f"any video has ({MAX_FRAMES_PER_SECOND}): use at most {int(MAX_FRAMES_PER_SECOND * seconds)} frames, or "
            "a longer --clip-duration"
        )


def check_sequence_length(config: TrainConfig, model_config: MIMOConfig, mode: str) -> MIMOConfig:
    """Does the longest sample fit the language model once its placeholders are expanded?

    The media alone are checked first, by arithmetic, so a huge ``--num-frames`` fails at once. A fresh
    RoPE decoder whose length was not given grows to fit (a multiple of 64): rotary positions have no
    table, so the limit costs nothing (the seed's ``--audio-seq-len 1024`` runs as written). Returns the
    model config to build.
    """
    lm = model_config.language_model
    can_grow = mode == "fresh" and lm.position_embedding_type == "rope" and config.max_sequence_length is None
    limit = max(lm.max_sequence_length, GROWN_SEQUENCE_LIMIT) if can_grow else lm.max_sequence_length
    media = model_config.num_video_tokens + model_config.num_audio_tokens
    text, needed = (0, media) if media > limit else longest_sample(config, model_config)
    if needed <= lm.max_sequence_length:
        return model_config
    if can_grow and needed <= limit:
        grown = -(-needed // 64) * 64
        print(f"note: a training sample needs {needed} decoder positions; the decoder's max_sequence_length grows "
              f"from {lm.max_sequence_length} to {grown} (RoPE: no parameters change; --max-sequence-length sets it)")
        return replace(model_config, language_model=replace(lm, max_sequence_length=grown))
    raise MimoInputError(
        f"a training sample needs {needed} decoder positions ({text} text tokens + {model_config.num_video_tokens} "
        f"per video + {model_config.num_audio_tokens} per audio clip) but the language model's max_sequence_length "
        f"is {lm.max_sequence_length}: use fewer --num-frames, a smaller --audio-seq-len, a larger "
        "--max-sequence-length (a new run), or a preset with longer sequences"
    )


def check_device(config: TrainConfig) -> str:
    """The device to train on: ``auto`` picks CUDA when present; an absent one is refused up front."""
    device = config.device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as error:
        raise MimoInputError(f"--device {device!r}: {error}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise MimoInputError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or auto)")
    if kind not in ("cpu", "cuda"):
        raise MimoInputError(f"--device {device}: only cpu and cuda are supported")
    return device


def check_run_folders(config: TrainConfig, mode: str, load: Path | None) -> None:
    """``--save`` must be a folder that holds no other run; a resumed run must not be past ``--train-iters``."""
    if config.save is not None:
        save = Path(config.save)
        if save.exists() and not save.is_dir():
            raise MimoInputError(f"--save {save} is a file, not a folder: give a folder for the run")
        holds_run = (save / "latest").is_file()
        same_run = load is not None and save.resolve() in (load.resolve(), load.resolve().parent)
        if holds_run and not (mode == "resume" and same_run):
            raise MimoInputError(
                f"--save {save} already holds a run; pass --load {save} (same --stage) to resume it, "
                "or save to a new folder"
            )
    if mode == "resume":
        step = read_checkpoint_state(load)["step"]
        if step > config.train_iters:
            raise MimoInputError(f"--load {load} is at step {step}, beyond --train-iters {config.train_iters}")


def prepare_run(config: TrainConfig) -> Run:
    """Resolve ``config`` and run every check; nothing is built or written yet."""
    check_numbers_given(config)
    run = resolve(config)
    config = run.config
    config.device = check_device(config)
    check_numbers(config)
    check_model_size(run.model_config, TRAIN_BYTES_PER_PARAMETER, "the model to train")  # before allocating
    check_backbone_paths(config, run.model_config, run.mode)
    check_tower_checkpoints(config, run.model_config, run.mode)
    check_data(config, run.model_config)
    check_frame_rate(run.model_config)
    run = replace(run, model_config=check_sequence_length(config, run.model_config, run.mode))
    check_run_folders(config, run.mode, run.load)
    return check_parallel(run)


def check_parallel(run: Run) -> Run:
    """Backend, TP size, world size and batch sizes fit together (:func:`mimo_lib.parallel.check_parallel_setup`)."""
    from mimo_lib.parallel import check_parallel_setup

    config = run.config
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    data_parallel = world_size // max(1, config.tensor_model_parallel_size)
    if config.global_batch_size is None:
        config.global_batch_size = config.micro_batch_size * max(1, data_parallel)
    data_parallel, accumulation = check_parallel_setup(
        run.model_config.language_model, config.backend, config.tensor_model_parallel_size, config.micro_batch_size,
        config.global_batch_size, world_size,
    )
    if config.precision == "bf16" and not config.device.startswith("cuda"):
        print("note: bf16 on the CPU is slow and only for trying the GPU path; fp32 is the CPU's precision")
    return replace(run, data_parallel_size=data_parallel, accumulation_steps=accumulation)


def check_numbers_given(config: TrainConfig) -> None:
    """Numbers that make resolving itself meaningless (a negative seed picks no clips) fail first."""
    if config.seed is not None and config.seed < 0:
        raise MimoInputError(f"--seed must be at least 0 (got {config.seed})")


def longest_sample(config: TrainConfig, model_config: MIMOConfig) -> tuple[int, int]:
    """``(text tokens, decoder positions)`` of the longest sample: all of a folder's, or a few synthetic ones.

    Synthetic question types cycle, so the first few samples show every type's length (answers of one
    type differ by a token or two: ``combine_multimodal_inputs`` still reports a rare longer one by name).
    """
    tokenizer = tokenizer_for(model_config)
    if config.data_path == "synthetic":
        synthetic = synthetic_config_for(model_config)
        types = config.question_types
        count = min(config.num_samples, (4 if config.num_turns == 1 else 16) * len(types))
        conversations = [
            make_sample([config.seed, i], types[i % len(types)], synthetic, config.num_turns,
                        follow_up_types=config.follow_up_types).conversations
            for i in range(count)
        ]
    else:
        conversations = [a.conversations for a in load_annotations(config.data_path)]
    text, positions = 0, 0
    for turns in conversations:
        ids, _ = encode_conversation(tokenizer, turns)
        video, audio = ids.count(model_config.video_token_id), ids.count(model_config.audio_token_id)
        needed = len(ids) - video - audio + video * model_config.num_video_tokens + audio * model_config.num_audio_tokens
        if needed > positions:
            text, positions = len(ids) - video - audio, needed
    return text, positions


# --------------------------------------------------------------------------- #
# Data order, resumable
# --------------------------------------------------------------------------- #


class DataSampler:
    """Batches of dataset indices in a random order, epoch after epoch, that can be saved and resumed.

    Each epoch is a fresh ``torch.randperm`` drawn from this sampler's own generator; the state is that
    generator, the current epoch's order and the position in it, so a resumed run draws exactly the batches
    it would have. A batch may straddle two epochs.
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


def training_loss(model: MIMOModel, batch) -> tuple[torch.Tensor, int]:
    """Mean answer-token loss of one batch, and the number of decoder positions it processed.

    The batch carries media (``video``, ``audio``) or, from a :class:`TowerFeatureCache`, tower outputs
    (``video_features``, ``audio_features``).
    """
    out = model(
        batch.input_ids, batch.video, batch.audio, batch.labels, batch.attention_mask, sample_ids=batch.id,
        video_features=batch.video_features, audio_features=batch.audio_features,
    )
    return out.loss, int(out.combined.attention_mask.sum())


def build_model(run: Run) -> MIMOModel:
    """Seed, build, then load tower checkpoints (fresh run) or the ``--load`` weights (init and resume)."""
    config = run.config
    torch.manual_seed(config.seed)  # the model is the first thing drawn after seeding: tests rebuild it this way
    if run.load is not None:
        loaded = load_model(run.load)  # checked files, the TP=1 layout every backend saves
        if run.model_config.audio_output is not None:  # --stage speak from a text model: extend its vocabulary
            loaded = extend_model(loaded, run.model_config.audio_output.codebook_size, seed=config.seed)
        if config.backend == "local":
            return loaded.train()
        from mimo_lib.parallel import load_full_state_dict

        model = MIMOModel(run.model_config, backend=config.backend)
        load_full_state_dict(model, loaded.state_dict())  # this rank's slice of every split weight
        return model.train()
    model = MIMOModel(run.model_config, backend=config.backend)
    for modality in ("vision", "audio"):
        value = getattr(config, f"{modality}_tower_checkpoint")
        if value == "none" or getattr(run.model_config, modality).backbone_type.startswith("hf-"):
            continue  # random tower asked for, or the weights came with the transformers checkpoint
        path = Path(value) if value is not None else shipped_checkpoint(modality, config.preset)
        if value is None and not path.is_file():
            print(f"note: no pretrained {modality} tower for preset {config.preset}; the {modality} tower starts "
                  "random (python -m mimo_lib.pretrain_towers makes one)")
            continue
        differences = tower_config_differences(read_tower_config(path), getattr(run.model_config, modality))
        if differences:  # only the shipped default gets here (an explicit path was checked by check_tower_checkpoints)
            print(f"warning: the shipped {modality} tower {path.name} does not fit this model, so the {modality} "
                  f"tower starts random ({'; '.join(differences)})")
            continue
        model.load_towers(**{f"{modality}_path": path})
        print(f"loaded the {modality} tower from {path.name}")
    return model.train()


@dataclass
class TrainingData:
    train_set: torch.utils.data.Dataset
    eval_set: torch.utils.data.Dataset | None


def build_data(run: Run, tokenizer: Tokenizer) -> TrainingData:
    """The training set and the held-out set (fresh synthetic clips, or a folder's validation split)."""
    config, model_config = run.config, run.model_config
    train_set = build_dataset(
        config.data_path, model_config, tokenizer, config.num_samples, config.seed, config.question_types,
        config.num_turns, config.follow_up_types, config.false_claim_attributes,
        allow_missing_audio=config.allow_missing_audio,
    )
    eval_set = None
    if config.data_path == "synthetic":
        if config.eval_samples > 0:
            held_out = build_dataset(
                config.data_path, model_config, tokenizer, config.eval_samples, config.seed + HELD_OUT_SEED_OFFSET,
                config.question_types,
            )
            eval_set = evaluation_subset(held_out, config.eval_samples)
        return TrainingData(train_set, eval_set)
    train_set.check_media(progress=config.progress)  # decode every clip once: a broken clip fails now, not at step 700
    if config.valid_fraction > 0:
        train_set, valid_set = split_dataset(train_set, config.valid_fraction, config.seed)
        eval_set = evaluation_subset(valid_set, config.eval_samples) if config.eval_samples > 0 else None
    elif config.eval_samples > 0:
        print("warning: no --valid-fraction, so evaluation during training scores training samples; "
              "hold some out with --valid-fraction 0.1")
        eval_set = evaluation_subset(train_set, config.eval_samples)
    return TrainingData(train_set, eval_set)


@dataclass
class TrainResult:
    model: MIMOModel
    metrics: list[dict[str, Any]]
    checkpoint: Path | None  # the last step folder written
    final: Path | None  # the model folder written at the end


def train_step(
    model, batch, optimizer: torch.optim.Optimizer, lr: float, grad_clip: float, step: int,
    last_checkpoint: Path | None = None, precision: str = "fp32",
) -> dict[str, Any]:
    """One optimizer step: forward, check the loss, backward, clip, update. Returns its numbers.

    ``batch`` is one :class:`~mimo_lib.data.dataset.Batch`, or a list of micro-batches whose gradients are
    accumulated (each weighted by its answer tokens, so the step follows the mean over every answer token of
    the global batch, on every data-parallel rank together: :func:`micro_batch_weights`). ``model`` may be
    wrapped in ``DistributedDataParallel``.
    """
    micro_batches = batch if isinstance(batch, list) else [batch]
    for group in optimizer.param_groups:
        group["lr"] = lr
    weights, total_tokens = micro_batch_weights(micro_batches)
    loss_sum, positions = 0.0, 0
    for i, micro in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        no_sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        with no_sync, autocast(precision, micro.input_ids.device):
            loss, tokens = training_loss(model, micro)
        if not torch.isfinite(loss):
            raise _non_finite(step, f"non-finite loss {loss.item()}", last_checkpoint)
        (loss if weights is None else loss * weights[i]).backward()
        loss_sum += loss.item() * _answer_tokens(micro)
        positions += tokens
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_grad_norm(parameters, grad_clip)
    if not torch.isfinite(grad_norm):
        raise _non_finite(step, f"non-finite gradient norm {grad_norm.item()}", last_checkpoint)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mean_loss = loss.item() if weights is None else _global_sum(loss_sum) / total_tokens
    return {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm.item(), "tokens": positions}


def _answer_tokens(batch) -> int:
    """Tokens the loss scores in ``batch``: labels that are not ignored, after the one-place shift."""
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def _global_sum(value: float) -> float:
    """``value`` summed over the data-parallel ranks (itself in one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    from megatron.core import parallel_state

    total = torch.tensor([value], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        total = total.cuda()
    torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return float(total.item())


def micro_batch_weights(micro_batches: list) -> tuple[list[float] | None, float]:
    """Loss weights that make accumulated, data-parallel gradients those of one big batch.

    Each micro-batch's loss is a mean over its own answer tokens ``n_i``. Weighting it by
    ``n_i x D / N`` (``N``: answer tokens of the whole global batch, over the ``D`` data-parallel ranks,
    whose gradients DDP averages) gives the gradient of the mean over all ``N``: what one process with the
    whole batch computes. ``(None, n)`` for one micro-batch in one process: the loss is used as it is.
    """
    counts = [_answer_tokens(micro) for micro in micro_batches]
    data_parallel = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from megatron.core import parallel_state

        data_parallel = parallel_state.get_data_parallel_world_size()
    if len(micro_batches) == 1 and data_parallel == 1:
        return None, float(counts[0])
    total = max(1.0, _global_sum(float(sum(counts))))
    return [n * data_parallel / total for n in counts], total


def autocast(precision: str, device: torch.device):
    """bf16 autocast (weights and optimizer stay fp32), or nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def run_training(run: Run) -> TrainResult:
    """Train as the checked ``run`` says (see :func:`prepare_run`). Raises :class:`NonFiniteLossError` on nan/inf."""
    config, model_config = run.config, run.model_config
    if config.device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA init)
        torch.backends.cudnn.benchmark = False
    parallel = start_processes(run)  # None for one plain process; a ParallelContext under torchrun / megatron
    main_process = parallel is None or parallel.is_main
    if parallel is not None:
        config = replace(config, device=str(parallel.device))
        run = replace(run, config=config)
    precision = config.precision if config.precision != "auto" else ("bf16" if config.device.startswith("cuda") else "fp32")
    say = print if main_process else (lambda *args, **kwargs: None)
    tokenizer = tokenizer_for(model_config)  # the book's; with audio-out tokens for a model that speaks
    if model_config.language_model.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"the model's vocab_size {model_config.language_model.vocab_size} differs from the tokenizer's "
            f"{tokenizer.vocab_size}; build the config from a preset"
        )

    # ---- 1. data, model, optimizer, schedule, data order
    data = build_data(run, tokenizer)
    model = build_model(run).to(config.device)
    model.set_trainable(**{c: not getattr(config, f"freeze_{c}") for c in STAGE_FREEZING[config.stage]})
    optimizer, parameter_names = make_optimizer(model.named_parameters(), config.lr, config.weight_decay)
    stepped = model  # what the step runs: the model, or DDP around it (gradients averaged over the DP group)
    if parallel is not None:
        from mimo_lib.parallel import wrap_data_parallel

        stepped = wrap_data_parallel(model)
    if hasattr(model.language_model, "gather_output"):
        model.language_model.gather_output = False  # the loss works on vocabulary-split logits (chapter 9)
    started = time.perf_counter()  # elapsed_s counts from here: encoding the clips below is part of the run
    cache = None
    if config.cache_tower_features and config.freeze_vision_tower and config.freeze_audio_tower:
        cache = TowerFeatureCache(model, data.train_set, tokenizer.pad_id, device=config.device)
        cache.fill(progress=config.progress and main_process)
    schedule = WarmupCosineSchedule(config.lr, config.min_lr, config.warmup_iters, config.train_iters)
    sampler = DataSampler(len(data.train_set), config.seed)

    # ---- 2. resume: optimizer, data order, generators, metrics and schedule continue
    metrics: list[dict[str, Any]] = []
    start_step = 0
    if run.mode == "resume":
        checkpoint = load_checkpoint(run.load)
        if sorted(checkpoint.parameter_names or []) != sorted(parameter_names):
            raise CheckpointError(
                f"{checkpoint.path} trained other parameters than this run would (did the --freeze-* flags "
                "change?); resume with the same flags"
            )
        optimizer.load_state_dict(optimizer_state_for_this_rank(
            checkpoint.optimizer_state, checkpoint.parameter_names, parameter_names, model_config, parallel))
        sampler.load_state_dict(checkpoint.sampler_state)
        restore_rng_state(checkpoint.rng_state)
        if parallel is not None:
            restore_tracker_state(checkpoint.rng_state, parallel.rank)
        metrics, start_step = checkpoint.metrics, checkpoint.step
        schedule = _resumed_schedule(schedule, checkpoint.scheduler_state, start_step)
        _warn_changed_settings(read_train_config(run.load) or {}, config)
        print(f"resuming {config.stage} from {checkpoint.path} at step {start_step}")
    elif run.mode == "init":
        print(f"{config.stage}: starting from the weights of {run.load} (fresh optimizer, step 0)")

    summary = model.trainable_summary()
    say(f"{config.stage}: training {sum(t for t, _ in summary.values()):,} of {model.num_parameters():,} parameters "
          f"({', '.join(name for name, (t, _) in summary.items() if t)}) on {len(data.train_set)} samples, "
          f"{config.train_iters} steps of {config.global_batch_size} (micro-batches of {config.micro_batch_size}, "
          f"{run.data_parallel_size} data-parallel x {config.tensor_model_parallel_size} tensor-parallel, "
          f"{run.accumulation_steps} accumulated), {config.backend} backend, device {config.device}, {precision}")

    # ---- 3. where metrics and checkpoints go
    metrics_path = None
    if config.save is not None and main_process:
        Path(config.save).mkdir(parents=True, exist_ok=True)
        metrics_path = Path(config.save) / "metrics.jsonl"
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in metrics))  # drop a killed run's extra lines
    elif config.save is None:
        say("note: no --save given: nothing will be written")

    def save(step: int) -> Path | None:
        """A checkpoint in the TP=1 layout, written by the main process (collective under torchrun)."""
        weights, optimizer_state, rng_state = model, optimizer, capture_rng_state()
        if parallel is not None:
            weights, optimizer_state = gathered_model_and_optimizer(model, optimizer, parameter_names)
            rng_state.update(gathered_tracker_state(parallel))
        path = None
        if main_process:
            path = save_checkpoint(
                config.save, weights, step, stage=config.stage, optimizer=optimizer_state,
                parameter_names=parameter_names, scheduler_state=schedule.state_dict(),
                sampler_state=sampler.state_dict(), metrics=metrics,
                extra={"initialized_from": None if run.load is None else str(run.load)}, tokenizer=tokenizer,
                rng_state=rng_state, keep=config.keep_checkpoints, train_config=config.to_dict(),
            )
        if parallel is not None:
            torch.distributed.barrier()
        return path

    # ---- 4. the loop: a step, sometimes an evaluation and a checkpoint
    last_checkpoint: Path | None = run.load if run.mode == "resume" else None
    saved_step: int | None = None  # the last step saved into --save by this process
    elapsed_before = metrics[-1]["elapsed_s"] if metrics else 0.0
    bar = tqdm(total=config.train_iters, initial=start_step, desc=config.stage, unit="step", dynamic_ncols=True,
               disable=not (main_process and config.progress))
    per_micro_step = config.micro_batch_size * run.data_parallel_size  # samples of one micro-step, all DP ranks
    try:
        with deterministic_algorithms():
            for step in range(start_step + 1, config.train_iters + 1):
                t0 = time.perf_counter()
                indices = sampler.next_indices(config.global_batch_size)  # the same on every rank
                batches = []
                for a in range(run.accumulation_steps):  # this rank's share of each micro-step
                    mine = indices[a * per_micro_step : (a + 1) * per_micro_step]
                    if parallel is not None:
                        mine = shard_batch_indices(mine, parallel.dp_rank, parallel.dp_size)
                    if cache is not None:  # frozen towers: their outputs, computed once per clip
                        batches.append(cache.batch(mine).to(config.device))
                    else:
                        batches.append(collate_av_batch([data.train_set[i] for i in mine], tokenizer.pad_id).to(config.device))
                record = train_step(
                    stepped, batches if len(batches) > 1 else batches[0], optimizer, schedule(step), config.grad_clip,
                    step, last_checkpoint, precision,
                )
                record["tokens_per_s"] = record["tokens"] / max(time.perf_counter() - t0, 1e-9)
                record["elapsed_s"] = elapsed_before + time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")

                last = step == config.train_iters
                if data.eval_set is not None and (_due(step, config.eval_interval) or last):
                    with full_logits(model):  # every rank takes part: the decoder's layers are collective
                        record["eval"] = evaluate_accuracy(model, data.eval_set, tokenizer, EVAL_BATCH_SIZE)
                    bar.write(f"step {step}: exact match " + ", ".join(f"{k} {v:.2f}" for k, v in record["eval"].items()))
                metrics.append(record)
                if metrics_path is not None:
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if config.save is not None and (_due(step, config.save_interval) or last):
                    last_checkpoint, saved_step = save(step), step
                if config.stop_after == step and main_process:
                    bar.close()
                    print(f"--stop-after {step}: killing this process (SIGKILL), as asked", flush=True)
                    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    finally:
        bar.close()

    # ---- 5. the model folder for generate and evaluate
    final = None
    if config.save is not None:
        if saved_step != config.train_iters:  # no step ran here (a finished run was loaded): save it in --save too
            last_checkpoint = save(config.train_iters)
        weights = model if parallel is None else gathered_model_and_optimizer(model, None, parameter_names)[0]
        if main_process:
            final = save_model_only(weights, Path(config.save) / "final", tokenizer, train_config=config.to_dict())
            say(f"saved {last_checkpoint} and the model for generate/evaluate in {final}")
        if parallel is not None:
            torch.distributed.barrier()
    return TrainResult(model.eval(), metrics, last_checkpoint, final)


# --------------------------------------------------------------------------- #
# Many processes (the megatron backend under torchrun; chapter 9)
# --------------------------------------------------------------------------- #


def start_processes(run: Run):
    """Join the process group and megatron-core's TP/DP groups when the run needs them; None otherwise."""
    config = run.config
    if config.backend == "local" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return None
    from mimo_lib.parallel import init_parallel

    return init_parallel(config.tensor_model_parallel_size, seed=config.seed, device=config.device)


@contextlib.contextmanager
def full_logits(model: MIMOModel):
    """Full-vocabulary logits inside the block (generation needs them); training skips the TP gather."""
    language_model = model.language_model
    if not hasattr(language_model, "gather_output"):
        yield
        return
    language_model.gather_output = True
    try:
        yield
    finally:
        language_model.gather_output = False


def gathered_model_and_optimizer(model: MIMOModel, optimizer, parameter_names: list[str]):
    """The model (on the ``meta`` device, holding the gathered tensors) and the optimizer state in the TP=1
    layout, as one process would hold them. Collective: every rank must call it; use the result on rank 0."""
    from mimo_lib.parallel import full_state_dict, gather_named_tensors

    lm_config = model.config.language_model
    with torch.device("meta"):
        shell = MIMOModel(model.config)
    shell.load_state_dict(full_state_dict(model), strict=True, assign=True)
    if optimizer is None:
        return shell, None
    state = optimizer.state_dict()
    stepped = [(index, name) for index, name in enumerate(parameter_names) if index in state["state"]]
    full = {"param_groups": state["param_groups"], "state": {i: dict(state["state"][i]) for i, _ in stepped}}
    for key in ("exp_avg", "exp_avg_sq"):  # AdamW's moments are shaped like their parameters: split alike
        gathered = gather_named_tensors({name: state["state"][i][key] for i, name in stepped}, lm_config)
        for i, name in stepped:
            full["state"][i][key] = gathered[name]
    return shell, _StateOnly(full)


class _StateOnly:
    """An optimizer stand-in that :func:`save_checkpoint` can read the (gathered) state of."""

    def __init__(self, state: dict) -> None:
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def optimizer_state_for_this_rank(
    saved: dict, saved_names: list[str], names: list[str], model_config: MIMOConfig, parallel,
) -> dict:
    """A checkpoint's optimizer state (TP=1 layout) for this run: reordered by parameter name where the
    parameter order differs (another backend), and cut to this rank's slices at TP > 1."""
    position = {name: i for i, name in enumerate(saved_names)}
    state = {"param_groups": saved["param_groups"], "state": {}}
    for index, name in enumerate(names):
        entry = saved["state"].get(position[name])
        if entry is not None:
            state["state"][index] = dict(entry)
    if len(saved_names) == len(names) and saved_names != names:
        groups, start = [], 0  # the same groups (decay, no decay) with their sizes, in this run's order
        for group in saved["param_groups"]:
            size = len(group["params"])
            groups.append({**group, "params": list(range(start, start + size))})
            start += size
        state["param_groups"] = groups
    if parallel is not None and parallel.tp_size > 1:
        from mimo_lib.parallel import shard_for_this_rank

        for key in ("exp_avg", "exp_avg_sq"):
            named = {names[i]: entry[key] for i, entry in state["state"].items()}
            mine = shard_for_this_rank(named, model_config.language_model)
            for i, entry in state["state"].items():
                entry[key] = mine[names[i]]
    return state


def gathered_tracker_state(parallel) -> dict[str, torch.Tensor]:
    """Every rank's megatron RNG-tracker states (empty on the CPU), keyed ``megatron_tracker.rank<r>.<name>``."""
    from mimo_lib.parallel import capture_parallel_rng_state

    everyone: list[dict] = [None] * parallel.world_size
    torch.distributed.all_gather_object(everyone, capture_parallel_rng_state())
    return {f"megatron_tracker.rank{rank}.{key}": value for rank, states in enumerate(everyone)
            for key, value in states.items()}


def restore_tracker_state(rng_state: dict[str, Any], rank: int) -> None:
    """Put back this rank's megatron RNG-tracker states from a checkpoint's ``rng_state``."""
    from mimo_lib.parallel import restore_parallel_rng_state

    prefix = f"megatron_tracker.rank{rank}."
    restore_parallel_rng_state({k[len(prefix):]: v for k, v in rng_state.items() if k.startswith(prefix)})


def train(config: TrainConfig) -> TrainResult:
    """Check ``config`` (every check before any work), then train. The same as ``python -m mimo_lib.train``."""
    return run_training(prepare_run(config))


def _due(step: int, interval: int) -> bool:
    return bool(interval) and step % interval == 0


def _resumed_schedule(schedule: WarmupCosineSchedule, saved: dict[str, Any] | None, step: int) -> WarmupCosineSchedule:
    """The saved schedule for the steps taken, extended (not re-warmed) if ``--train-iters`` was raised."""
    if not saved:
        return schedule
    previous = WarmupCosineSchedule.from_state_dict(saved)
    same_shape = (previous.lr, previous.min_lr, previous.warmup_iters) == (schedule.lr, schedule.min_lr, schedule.warmup_iters)
    if not same_shape:  # the learning rates were changed on purpose: use them (reported as not an exact resume)
        return schedule
    return previous.extended_to(schedule.train_iters, step)


def _non_finite(step: int, what: str, last_checkpoint: Path | None) -> NonFiniteLossError:
    where = (
        f"The last good checkpoint is {last_checkpoint}: resume from it with --load and a lower --lr"
        if last_checkpoint is not None
        else "No checkpoint was written yet"
    )
    return NonFiniteLossError(
        f"step {step}: {what}. Training stopped before applying step {step}. {where}, or check that step's inputs."
    )


def _warn_changed_settings(saved: dict[str, Any], config: TrainConfig) -> None:
    now = config.to_dict()
    changed = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in RESUME_SENSITIVE
               if k in saved and saved.get(k) != now.get(k)]
    if changed:
        print("warning: resuming with changed settings, so this is not an exact resume: " + "; ".join(changed))
    if "train_iters" in saved and saved["train_iters"] != now["train_iters"]:
        print(f"note: --train-iters {saved['train_iters']} -> {now['train_iters']}: the learning-rate schedule "
              "continues from where it stopped to --min-lr at the new end")


def _main(argv: list[str] | None) -> int:
    config = parse_args(argv)
    apply_thread_policy(config.threads)
    try:
        train(config)
    except NonFiniteLossError as error:
        print(f"mimo-train: error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("mimo-train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
