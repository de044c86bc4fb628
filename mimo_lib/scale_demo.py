"""One batch through one model on several processes: chapter 9's tensor- and data-parallel demonstration.

Launch it with ``torchrun``; every process runs this same file::

    torchrun --standalone --nproc_per_node=2 -m mimo_lib.scale_demo \\
        --model MODEL_FOLDER --tensor-model-parallel-size 2 --out result.json

Each process

1. joins the run (:func:`mimo_lib.parallel.init_parallel`: gloo on a CPU, NCCL on GPUs) and learns
   who it is: its tensor-parallel rank (which slice of each big matrix it holds) and its
   data-parallel rank (which rows of the batch it reads);
2. loads the model folder on the ``megatron`` backend: the full (TP=1) weights are read, and this
   rank keeps only its slice (:func:`mimo_lib.parallel.load_model_parallel`);
3. builds the same batch as everybody else (:func:`demo_batch`, a pure function of its seed) and
   keeps its own rows (all of them when DP = 1);
4. runs the forward pass: logits (full vocabulary rows, gathered over the TP group) and the loss;
5. optionally computes the loss again with megatron-core's own ``MimoModel``
   (:func:`mimo_lib.language_backends.build_megatron_mimo`), assembled from the same parts;
6. takes one plain SGD step (gradients averaged over the DP group) and, with ``--save``, writes the
   updated model in the usual TP=1 layout (:func:`mimo_lib.parallel.save_model_parallel`).

Rank 0 collects what every rank saw and writes one JSON file: the run's layout, the logits of the
whole batch (at each sample's real positions), the loss before the step, and per rank the parameters it holds and the shapes of a
few of its shards. Chapter 9 compares all of it with a one-process run of the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mimo_lib.config import MIMOConfig

#: The tensors whose shard shapes the report lists (layer 0 of the decoder, the vocabulary table).
SHOWN_SHARDS = (
    "language_model.embedding.word_embeddings.weight",
    "language_model.decoder.layers.0.self_attention.linear_qkv.weight",
    "language_model.decoder.layers.0.self_attention.linear_proj.weight",
    "language_model.decoder.layers.0.mlp.linear_fc1.weight",
    "language_model.decoder.layers.0.mlp.linear_fc2.weight",
    "language_model.output_layer.weight",
)


def demo_batch(config: MIMOConfig, batch_size: int = 4, seed: int = 1, length: int = 14) -> dict[str, torch.Tensor]:
    """A small batch in :meth:`MIMOModel.forward`'s format, the same on every process for the same seed.

    Random text ids, right-padded to ``length`` (sample ``b`` is ``3 * (b % 3)`` tokens shorter),
    with ``<video>`` and ``<audio>`` placeholders in some samples, not all; labels on the tokens after
    the first 6 (the "answer"), random frames and waveforms.
    """
    g = torch.Generator().manual_seed(seed)
    first_text_id = max(config.pad_token_id, config.eos_token_id, config.video_token_id, config.audio_token_id) + 2
    ids = torch.randint(first_text_id, config.language_model.vocab_size, (batch_size, length), generator=g)  # (B, L)
    lengths = torch.tensor([length - 3 * (b % 3) for b in range(batch_size)])  # (B,)
    attention_mask = torch.arange(length)[None, :] < lengths[:, None]  # (B, L) True = real token
    ids[0, 2], ids[0, 4] = config.video_token_id, config.audio_token_id  # video and audio
    ids[1, 1] = config.audio_token_id  # audio only
    if batch_size > 2:
        ids[2, 3] = config.video_token_id  # video only; sample 3 (if any) is text only
    ids = ids.masked_fill(~attention_mask, config.pad_token_id)
    labels = ids.masked_fill(~attention_mask, config.ignore_index)
    labels[:, :6] = config.ignore_index  # no loss on the prompt
    frames, size = config.vision.num_frames, config.vision.image_size
    video = torch.randint(0, 256, (batch_size, frames, 3, size, size), generator=g, dtype=torch.uint8)
    audio = 0.1 * torch.randn(batch_size, config.audio.num_samples, generator=g)
    return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels, "video": video, "audio": audio}


def run_model(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """``model`` (a :class:`MIMOModel`, or one wrapped in ``DistributedDataParallel``) on ``batch``."""
    return model(
        batch["input_ids"], batch["video"], batch["audio"], labels=batch["labels"], attention_mask=batch["attention_mask"]
    )


def answer_tokens(output, config: MIMOConfig) -> int:
    """How many tokens the loss is averaged over: labels that are not ``ignore_index``, after the shift."""
    return int((output.combined.labels[:, 1:] != config.ignore_index).sum())


def sgd_step(model: torch.nn.Module, lr: float) -> None:
    """``p <- p - lr * grad`` for every parameter with a gradient (plain SGD: easy to check by hand)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def parameters_held(model: torch.nn.Module) -> dict[str, int]:
    """The parameters this process holds: its decoder shard, and the replicated towers and projectors."""
    decoder = sum(p.numel() for p in model.language_model.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"decoder": decoder, "towers_and_projectors": total - decoder, "total": total}


def run_demo(
    model_dir: Path,
    tp_size: int,
    out: Path,
    save: Path | None = None,
    lr: float = 0.1,
    seed: int = 1,
    batch_size: int = 4,
    megatron_mimo: bool = False,
) -> dict[str, Any] | None:
    """Steps 1-6 of the module docstring on this process; rank 0 writes ``out`` and returns the report."""
    from mimo_lib import parallel

    clock = {"start": time.perf_counter()}
    ctx = parallel.init_parallel(tensor_model_parallel_size=tp_size, seed=0)  # 1. join the run
    model = parallel.load_model_parallel(model_dir)  # 2. this rank's slice of the weights
    config = model.config
    clock["loaded"] = time.perf_counter()

    batch = demo_batch(config, batch_size, seed)  # 3. the same batch everywhere ...
    rows = parallel.shard_batch_indices(range(batch_size), ctx.dp_rank, ctx.dp_size)
    mine = {key: value[rows] for key, value in batch.items()}  # ... and this rank's rows of it

    model.train()  # (dropout is 0 in these configs: train and eval compute the same)
    replica = parallel.wrap_data_parallel(model)  # DDP over the DP group; the model itself when DP = 1
    output = run_model(replica, mine)  # 4. forward: logits (rows, S, V), loss on these rows
    to_backward, loss = parallel.data_parallel_loss(output.loss, answer_tokens(output, config))
    clock["forward"] = time.perf_counter()

    mimo_loss = None
    if megatron_mimo:  # 5. the same loss from megatron-core's MimoModel, made of the same parts
        from mimo_lib.language_backends import build_megatron_mimo, megatron_mimo_loss

        with torch.no_grad():
            mimo_loss = megatron_mimo_loss(
                build_megatron_mimo(model), model, mine["input_ids"], mine["video"], mine["audio"],
                mine["labels"], mine["attention_mask"],
            ).item()

    model.zero_grad()
    to_backward.backward()  # gradients: summed over the TP shards' work, averaged over DP
    sgd_step(model, lr)  # 6. one step, the same on every replica
    clock["step"] = time.perf_counter()
    if save is not None:
        parallel.save_model_parallel(model, save)  # gathered over TP, written by rank 0
    clock["saved"] = time.perf_counter()

    mine_report = {
        "rank": ctx.rank,
        "tp_rank": ctx.tp_rank,
        "dp_rank": ctx.dp_rank,
        "rows": rows,
        # each row's logits at its real positions (S_i, V): full vocabulary rows, gathered over TP
        "logits": [row[real].tolist() for row, real in zip(output.logits.detach(), output.combined.attention_mask)],
        "parameters": parameters_held(model),
        "shards": {key.removeprefix("language_model."): list(model.state_dict()[key].shape) for key in SHOWN_SHARDS},
        "megatron_mimo_loss": mimo_loss,
    }
    everyone: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(everyone, mine_report)
    report = None
    if ctx.is_main:
        logits: list[Any] = [None] * batch_size
        for entry in everyone:
            for row, values in zip(entry["rows"], entry.pop("logits")):
                logits[row] = values  # every TP rank of a DP group has the same rows; any copy will do
        report = {
            "world_size": ctx.world_size,
            "tp_size": ctx.tp_size,
            "dp_size": ctx.dp_size,
            "backend": ctx.backend,
            "device": str(ctx.device),
            "loss": loss.item(),  # the mean over all answer tokens of the whole batch
            "megatron_mimo_loss": everyone[0]["megatron_mimo_loss"] if ctx.dp_size == 1 else None,
            "logits": logits,  # B rows of (S_i, V): row i's real positions (padding differs between shards)
            "ranks": everyone,
            "seconds": {
                "start_and_load": clock["loaded"] - clock["start"],
                "forward": clock["forward"] - clock["loaded"],
                "backward_and_step": clock["step"] - clock["forward"],
                "save": clock["saved"] - clock["step"],
            },
        }
        out.write_text(json.dumps(report))
    parallel.destroy_parallel()
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m mimo_lib.scale_demo",
        description="One batch and one SGD step of a saved MIMO model on N processes (chapter 9).",
    )
    parser.add_argument("--model", type=Path, required=True, help="a model folder (save_model_only / train --save)")
    parser.add_argument("--tensor-model-parallel-size", type=int, default=1, help="TP size; N / TP = DP size")
    parser.add_argument("--out", type=Path, required=True, help="JSON report, written by rank 0")
    parser.add_argument("--save", type=Path, help="also write the model after the step here (TP=1 layout)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate of the one step")
    parser.add_argument("--seed", type=int, default=1, help="seed of demo_batch")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch: split over the DP ranks")
    parser.add_argument("--megatron-mimo", action="store_true", help="also the loss of megatron-core's MimoModel")
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = run_demo(
        args.model, args.tensor_model_parallel_size, args.out, args.save, args.lr, args.seed, args.batch_size,
        args.megatron_mimo,
    )
    if report is not None:
        layout = f"{report['world_size']} processes = TP {report['tp_size']} x DP {report['dp_size']}"
        print(f"{layout} on {report['backend']} ({report['device']}): loss {report['loss']:.6f}")
        for rank in report["ranks"]:
            print(
                f"  rank {rank['rank']} (tp {rank['tp_rank']}, dp {rank['dp_rank']}): rows {rank['rows']}, "
                f"{rank['parameters']['total']:,} parameters"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    from mimo_lib.cli import run_command

    return run_command("mimo_lib.scale_demo", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
