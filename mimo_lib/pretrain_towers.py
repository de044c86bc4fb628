"""Teach the towers to see and hear before the language model uses them.

In real LLaVA the vision tower arrives pretrained (CLIP); a language model
trained on top of a random tower learns to ignore it. A measured prototype of
this book's model, trained end to end from random towers, did exactly that:
the vision path became a constant, and shape, motion and cross-modal questions
stayed at chance. So each tower is pretrained here first, CLIP-style:

* a *caption* for each clip says what the tower should notice —
  ``"a red circle moves to the left"`` for the vision tower,
  ``"an acoustic guitar plays a low note"`` for the audio tower (CLAP-style);
* a small :class:`TextEncoder` embeds every caption the synthetic world can
  produce (60 for vision, 8 for audio);
* a :class:`PoolingHead` turns the tower's token sequence (the very features
  the projector will later read) into one clip embedding;
* the loss is contrastive: cross-entropy of the clip's cosine similarities to
  *all* captions, with its own caption as the target. (CLIP contrasts a batch
  against the captions in the same batch; our world is small enough to
  contrast against every caption at once, which removes false negatives.)

Zero-shot classification then works as in CLIP: embed each candidate caption,
pick the most similar. ``python -m mimo_lib.pretrain_towers`` reproduces the
shipped checkpoints in ``mimo_lib/pretrained/``;
:func:`mimo_lib.towers.load_tower_weights` loads a tower from one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from mimo_lib.atomic import atomic_save_tensors
from mimo_lib.audio_tower import build_audio_tower
from mimo_lib.cli import run_command
from mimo_lib.config import PRESETS, AudioTowerConfig, VisionTowerConfig, get_preset
from mimo_lib.constants import HELD_OUT_SEED_OFFSET
from mimo_lib.data.synthetic import (
    COLOURS,
    INSTRUMENTS,
    MOTIONS,
    PITCHES,
    SHAPES,
    SyntheticConfig,
    article,
    motion_phrase,
    random_events,
    render_audio,
    render_video,
    synthetic_config_for,
)
from mimo_lib.optim import WarmupCosineSchedule
from mimo_lib.recipes import TowerRecipe, get_recipe
from mimo_lib.threads import THREADS_HELP, apply_thread_policy, check_threads_flag, map_in_processes
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.towers import (  # noqa: F401  (load_tower_weights, shipped_checkpoint: moved there, still importable here)
    PRETRAINED_DIR,
    load_tower_weights,
    read_metadata,
    read_tower_config,
    shipped_checkpoint,
)
from mimo_lib.vision_tower import build_vision_tower

VISION_ATTRIBUTES = ("shape", "colour", "motion")
#: Linear warm-up over this fraction of the steps (at least one step), as the training stages' recipes.
WARMUP_FRACTION = 0.05
AUDIO_ATTRIBUTES = ("instrument", "pitch")


# --------------------------------------------------------------------------- captions


def vision_caption(shape: str, colour: str, motion: str) -> str:
    return f"{article(colour + ' ' + shape)} {motion_phrase(motion)}"


def audio_caption(instrument: str, pitch: str) -> str:
    return f"{article(instrument)} plays {article(pitch)} note"


def all_captions(modality: str) -> tuple[list[str], list[dict[str, str]]]:
    """Every caption of one modality, and the attributes each one states."""
    if modality == "vision":
        attrs = [{"shape": s, "colour": c, "motion": m} for s in SHAPES for c in COLOURS for m in MOTIONS]
        return [vision_caption(**a) for a in attrs], attrs
    if modality == "audio":
        attrs = [{"instrument": i, "pitch": p} for i in INSTRUMENTS for p in PITCHES]
        return [audio_caption(**a) for a in attrs], attrs
    raise ValueError(f"modality must be 'vision' or 'audio', got {modality!r}")


def attribute_captions(modality: str) -> dict[str, list[tuple[str, str]]]:
    """Short captions that each name ONE attribute: ``{attribute: [(value, caption), ...]}``.

    Contrasting a clip against these as well as against the full captions gives
    every attribute its own, dense learning signal ("a circle" vs "a square"),
    instead of one 60-way choice in which colour, the easiest cue, dominates.
    """
    if modality == "vision":
        return {
            "shape": [(s, article(s)) for s in SHAPES],
            "colour": [(c, f"{article(c)} shape") for c in COLOURS],
            "motion": [(m, f"a shape that {motion_phrase(m)}") for m in MOTIONS],
        }
    if modality == "audio":
        return {
            "instrument": [(i, article(i)) for i in INSTRUMENTS],
            "pitch": [(p, f"{article(p)} note") for p in PITCHES],
        }
    raise ValueError(f"modality must be 'vision' or 'audio', got {modality!r}")


# --------------------------------------------------------------------------- modules


@dataclass
class PretrainConfig:
    """The small extra modules used only for pretraining."""

    embed_dim: int = 64  # width of the shared clip/caption embedding space
    text_hidden_size: int = 64  # width of the caption encoder
    text_num_layers: int = 2  # transformer blocks in the caption encoder
    text_max_length: int = 16  # longest caption, in tokens
    head_num_heads: int = 4  # attention heads of the pooling head


class TextEncoder(nn.Module):
    """Caption token ids (C, L) → caption embeddings (C, embed_dim), a tiny transformer with mean pooling."""

    def __init__(self, vocab_size: int, config: PretrainConfig, pad_id: int) -> None:
        super().__init__()
        d = config.text_hidden_size
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size, d)
        self.position_embedding = nn.Parameter(torch.randn(config.text_max_length, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.text_num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, config.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != self.pad_id  # (C, L)
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]  # (C, L, d)
        x = self.norm(self.blocks(x, src_key_padding_mask=~keep))
        x = (x * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)  # mean over real tokens, (C, d)
        return self.proj(x)  # (C, embed_dim)


class PoolingHead(nn.Module):
    """Tower tokens (B, N, D) → one clip embedding (B, embed_dim).

    1. Max-pool each frame's tokens (frame-major: ``tokens_per_frame`` at a
       time) into one vector per frame — "is there a red corner anywhere in
       this frame?" — the inductive bias that makes a CNN learn shapes fast.
    2. A learned query token joins the per-frame vectors for one transformer
       block, and its output is the summary. Attention lets it compare early and
       late frames, which a plain average could not (motion is a *difference*
       over time). For audio, ``tokens_per_frame = 1``: every token is a step in time.
    """

    def __init__(self, input_size: int, config: PretrainConfig, tokens_per_frame: int = 1) -> None:
        super().__init__()
        self.tokens_per_frame = tokens_per_frame
        self.query = nn.Parameter(torch.randn(1, 1, input_size) * 0.02)
        heads = config.head_num_heads if input_size % config.head_num_heads == 0 else 1
        self.block = nn.TransformerEncoderLayer(
            input_size, heads, 4 * input_size, dropout=0.0, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(input_size)
        self.proj = nn.Linear(input_size, config.embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        if n % self.tokens_per_frame:
            raise ValueError(f"{n} tokens do not split into frames of {self.tokens_per_frame}")
        frames = tokens.reshape(b, n // self.tokens_per_frame, self.tokens_per_frame, d).amax(dim=2)  # (B, T, D)
        x = torch.cat([self.query.expand(b, -1, -1), frames], dim=1)  # (B, 1 + T, D)
        return self.proj(self.norm(self.block(x)[:, 0]))  # (B, embed_dim)


class ContrastivePretrainer(nn.Module):
    """A tower, its pooling head, a caption encoder and a learned temperature."""

    def __init__(self, modality: str, tower: nn.Module, tokenizer: Tokenizer, config: PretrainConfig | None = None):
        super().__init__()
        self.modality = modality
        self.config = config or PretrainConfig()
        self.tower = tower
        tokens_per_frame = tower.config.tokens_per_frame if modality == "vision" else 1
        self.head = PoolingHead(tower.output_size, self.config, tokens_per_frame)
        self.text_encoder = TextEncoder(tokenizer.vocab_size, self.config, tokenizer.pad_id)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        captions, self.caption_attributes = all_captions(modality)
        self.captions = captions
        # every attribute caption, after the full captions, in one table of ids
        self.attribute_values = {name: [v for v, _ in pairs] for name, pairs in attribute_captions(modality).items()}
        extra = [c for pairs in attribute_captions(modality).values() for _, c in pairs]
        ids = [tokenizer.encode(c) for c in captions + extra]
        if max(map(len, ids)) > self.config.text_max_length:
            raise ValueError(f"a caption is longer than text_max_length={self.config.text_max_length}")
        padded = torch.full((len(ids), max(map(len, ids))), tokenizer.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            padded[row, : len(seq)] = torch.tensor(seq)
        self.register_buffer("caption_ids", padded, persistent=False)  # (C, L)

    def clip_embeddings(self, media: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.tower(media)), dim=-1)  # (B, E)

    def all_caption_embeddings(self) -> torch.Tensor:
        return F.normalize(self.text_encoder(self.caption_ids), dim=-1)  # (C + A, E)

    def caption_embeddings(self) -> torch.Tensor:
        """Embeddings of the full captions only. ``(C, E)``"""
        return self.all_caption_embeddings()[: len(self.captions)]

    def forward(self, media: torch.Tensor, caption_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and (B, C) logits over the full captions.

        The loss adds, to the clip-vs-every-caption cross-entropy, one
        cross-entropy per attribute: the clip against that attribute's short
        captions ("a circle" / "a square" / "a triangle").
        """
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        clips = self.clip_embeddings(media)  # (B, E)
        texts = self.all_caption_embeddings()  # (C + A, E)
        logits = scale * clips @ texts[: len(self.captions)].T  # (B, C)
        loss = F.cross_entropy(logits, caption_index)
        start = len(self.captions)
        for name, values in self.attribute_values.items():
            attribute_logits = scale * clips @ texts[start : start + len(values)].T  # (B, values)
            target = torch.tensor(
                [values.index(self.caption_attributes[i][name]) for i in caption_index.tolist()], device=clips.device
            )
            loss = loss + F.cross_entropy(attribute_logits, target)
            start += len(values)
        return loss, logits


# --------------------------------------------------------------------------- data


def caption_index_of(modality: str, event) -> int:
    captions, _ = all_captions(modality)
    if modality == "vision":
        return captions.index(vision_caption(event.shape, event.colour, event.motion))
    return captions.index(audio_caption(event.instrument, event.pitch))


def pretraining_clip(modality: str, seed: int, synthetic: SyntheticConfig, index: int) -> tuple[torch.Tensor, int]:
    """Clip ``index`` of a pretraining set: its media (only the sense being trained) and its caption's index."""
    rng = np.random.default_rng([seed, index])
    events = random_events(rng, synthetic, two_events=False)
    render = render_video if modality == "vision" else render_audio
    return render(events, synthetic, rng), caption_index_of(modality, events[0])


def make_pretraining_set(
    modality: str, num_clips: int, seed: int, synthetic: SyntheticConfig, progress: bool = False,
    processes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``num_clips`` one-event clips: (media, caption index). Media: video uint8 or audio float.

    The clips are rendered by ``processes`` worker processes (:func:`mimo_lib.threads.map_in_processes`;
    the same clips with any number).
    """
    clips = []
    group = 256  # clips a progress-bar tick
    bar = tqdm(total=num_clips, desc=f"rendering {modality} clips", disable=not progress, leave=False)
    with bar, map_in_processes(partial(pretraining_clip, modality, seed, synthetic), processes) as pool:
        for start in range(0, num_clips, group):
            clips += pool.map(range(start, min(start + group, num_clips)))
            bar.update(min(group, num_clips - start))
    return torch.stack([media for media, _ in clips]), torch.tensor([target for _, target in clips])


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def zero_shot_accuracy(
    model: ContrastivePretrainer, media: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
) -> dict[str, float]:
    """Accuracy of picking the most similar caption: per attribute, and for the whole caption."""
    was_training = model.training
    model.eval()
    captions = model.caption_embeddings()  # (C, E)
    predictions = []
    for start in range(0, len(media), batch_size):
        predictions.append((model.clip_embeddings(media[start : start + batch_size]) @ captions.T).argmax(-1))
    predicted = torch.cat(predictions)
    model.train(was_training)
    attrs = model.caption_attributes
    result = {"caption": (predicted == targets).float().mean().item()}
    for name in attrs[0]:
        hits = [attrs[p][name] == attrs[t][name] for p, t in zip(predicted.tolist(), targets.tolist())]
        result[name] = sum(hits) / len(hits)
    return result


# --------------------------------------------------------------------------- training


def pretrain(
    model: ContrastivePretrainer,
    media: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    time_budget_s: float | None = None,
    weight_decay: float = 0.01,
) -> list[float]:
    """AdamW, a warm-up over the first 5% of ``steps``, then a cosine to 0; returns the loss of every step.

    The schedule is :class:`mimo_lib.optim.WarmupCosineSchedule`, the one ``mimo_lib.train`` uses.
    ``time_budget_s`` stops early (a notebook's way to train "as long as its budget allows").
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(WARMUP_FRACTION * steps))  # steps // 20
    schedule = WarmupCosineSchedule(lr, min_lr=0.0, warmup_iters=warmup, train_iters=steps)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=f"pretraining {model.modality} tower", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        index = torch.randint(len(media), (batch_size,), generator=generator)
        loss, _ = model(media[index], targets[index])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            break
    return losses


# --------------------------------------------------------------------------- checkpoints


def tower_config_of(model: ContrastivePretrainer):
    return model.tower.config


def save_pretrained(model: ContrastivePretrainer, path: str | Path, extra: dict | None = None) -> Path:
    """Write tower, head, caption encoder and temperature to one safetensors file, atomically.

    The tower's config and the pretraining config go in the file's metadata (JSON
    text), so loading can check that the weights fit the tower they are loaded into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "modality": model.modality,
        "tower_config": json.dumps(asdict(tower_config_of(model))),
        "pretrain_config": json.dumps(asdict(model.config)),
        "extra": json.dumps(extra or {}),
    }
    return atomic_save_tensors(path, model.state_dict(), metadata)


def load_pretrainer(path: str | Path, tokenizer: Tokenizer | None = None) -> ContrastivePretrainer:
    """Rebuild the whole pretrainer (tower, head, caption encoder) from a checkpoint."""
    tower_config = read_tower_config(path)  # checks that the file is a tower checkpoint
    meta = read_metadata(path)
    modality = meta["modality"]
    tower = (
        build_vision_tower(VisionTowerConfig(**tower_config))
        if modality == "vision"
        else build_audio_tower(AudioTowerConfig(**tower_config))
    )
    model = ContrastivePretrainer(
        modality, tower, tokenizer or Tokenizer.default(), PretrainConfig(**json.loads(meta["pretrain_config"]))
    )
    model.load_state_dict(load_file(str(path)))
    return model


# --------------------------------------------------------------------------- command line


def run(modality: str, preset: str, recipe: TowerRecipe, out: Path) -> Path:
    """Pretrain one tower of ``preset`` as ``recipe`` says, score it on held-out clips, save it in ``out``."""
    config = get_preset(preset)
    synthetic = synthetic_config_for(config)
    torch.manual_seed(recipe.seed)
    tower = build_vision_tower(config.vision) if modality == "vision" else build_audio_tower(config.audio)
    model = ContrastivePretrainer(modality, tower, Tokenizer.default())
    media, targets = make_pretraining_set(modality, recipe.num_clips, recipe.seed, synthetic, progress=True)
    held_out = make_pretraining_set(modality, 512, recipe.seed + HELD_OUT_SEED_OFFSET, synthetic)
    start = time.perf_counter()
    losses = pretrain(model, media, targets, recipe.steps(modality), recipe.batch_size, recipe.lr, recipe.seed,
                      weight_decay=recipe.weight_decay)
    minutes = (time.perf_counter() - start) / 60
    accuracy = zero_shot_accuracy(model, *held_out)
    extra = {"steps": len(losses), "batch_size": recipe.batch_size, "lr": recipe.lr,
             "weight_decay": recipe.weight_decay, "num_clips": recipe.num_clips, "seed": recipe.seed,
             "recipe": get_recipe(preset).version, "train_minutes": round(minutes, 2),
             "final_loss": round(losses[-1], 4),
             "held_out_zero_shot_accuracy": {k: round(v, 4) for k, v in accuracy.items()}}
    path = save_pretrained(model, out / f"{modality}_tower_{preset}.safetensors", extra)
    print(json.dumps({"checkpoint": str(path), **extra}, indent=2))
    return path


def build_parser() -> argparse.ArgumentParser:
    """The flags; every tuning flag defaults to the preset's recipe (``mimo_lib.recipes``), shown as None."""
    parser = argparse.ArgumentParser(
        prog="python -m mimo_lib.pretrain_towers",
        description="Pretrain the vision and/or audio tower contrastively on captions. Every flag left out "
        "takes the preset's recipe (mimo_lib/recipes.py), which made the shipped checkpoints.",
    )
    parser.add_argument("--modality", choices=("vision", "audio", "both"), default="both")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="toy", help="model preset (default: toy)")
    parser.add_argument("--steps", type=int, help="optimizer steps of each tower (recipe: vision_steps, audio_steps)")
    parser.add_argument("--batch-size", type=int, help="clips per step")
    parser.add_argument("--lr", type=float, help="peak learning rate (warm-up, then cosine to 0)")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    parser.add_argument("--num-clips", type=int, help="training clips rendered once, then sampled")
    parser.add_argument("--seed", type=int, help="tower init, clips and batch order")
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="folder for the checkpoints")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    return parser


def recipe_from_args(args: argparse.Namespace) -> tuple[TowerRecipe, int | None]:
    """The preset's tower recipe with every flag given replacing its field, and the ``--steps`` override."""
    given = {name: getattr(args, name) for name in ("batch_size", "lr", "weight_decay", "num_clips", "seed")}
    recipe = replace(get_recipe(args.preset).towers, **{k: v for k, v in given.items() if v is not None})
    return recipe, args.steps


def check_tower_recipe(recipe: TowerRecipe, steps: int | None) -> str | None:
    """What is wrong with the flags (None if nothing)."""
    if steps is not None and steps < 1:
        return f"--steps must be at least 1 (got {steps})"
    for flag, value in (("--batch-size", recipe.batch_size), ("--num-clips", recipe.num_clips)):
        if value < 1:
            return f"{flag} must be at least 1 (got {value})"
    if not recipe.lr > 0:
        return f"--lr must be positive (got {recipe.lr})"
    if recipe.weight_decay < 0:
        return f"--weight-decay must be 0 or more (got {recipe.weight_decay})"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    recipe, steps = recipe_from_args(args)
    problem = check_tower_recipe(recipe, steps) or check_threads_flag(args.threads)
    if problem:
        parser.error(problem)
    apply_thread_policy(args.threads)
    if steps is not None:
        recipe = replace(recipe, vision_steps=steps, audio_steps=steps)
    for modality in ("vision", "audio") if args.modality == "both" else (args.modality,):
        run(modality, args.preset, recipe, args.out)


if __name__ == "__main__":
    sys.exit(run_command("mimo-pretrain-towers", main))
