"""The two-process side of tests/test_tensor_parallel.py: run with ``torchrun --nproc_per_node=2``.

Phase 1, TP = 2 (one model in two shards), for a GeLU/LayerNorm/bias shape and a
SwiGLU/RMSNorm/no-bias shape: the same weights as a one-process local model,
the same batch (right padding, video and audio placeholders), fp32 —
logits, loss, and the merged weights after one SGD step. Then a TP=2 model folder
is saved (gathered on rank 0), and the shipped mimo_toy answers at TP = 2.

Phase 2, TP = 1 on both processes (so DP = 2): DP = 2 with micro-batch 2 against
one process with 4; the TP=2 folder loaded at TP = 1; megatron-core's own
``MimoModel`` against ``MIMOModel``.

Rank 0 writes every measurement to ``<out>/report.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mimo_lib.config import get_preset  # noqa: E402
from mimo_lib.model import MIMOModel  # noqa: E402


def shapes() -> dict:
    """The two decoder shapes every parity check runs on (the tiny preset's towers; the first with the time
    embedding, which every backend keeps whole on every rank)."""
    base = get_preset("tiny")
    lm = replace(base.language_model, num_attention_heads=4, init_method_std=0.1)
    return {
        "gelu-LayerNorm-bias": replace(base, language_model=lm, av_time_embedding=True),
        "swiglu-RMSNorm-nobias": replace(
            base, language_model=replace(lm, activation="swiglu", normalization="RMSNorm", add_bias_linear=False)
        ),
    }


def make_batch(config, batch_size: int = 4, seed: int = 1) -> dict:
    """Right-padded prompts of different lengths with <video> and <audio> placeholders, answer-only labels."""
    g = torch.Generator().manual_seed(seed)
    length = 14
    ids = torch.randint(5, config.language_model.vocab_size, (batch_size, length), generator=g)
    lengths = [length - 3 * (b % 3) for b in range(batch_size)]
    mask = torch.zeros(batch_size, length, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    ids[0, 2] = config.video_token_id
    ids[0, 4] = config.audio_token_id
    ids[1, 1] = config.audio_token_id
    if batch_size > 2:
        ids[2, 3] = config.video_token_id
    ids = ids.masked_fill(~mask, config.pad_token_id)
    labels = ids.masked_fill(~mask, config.ignore_index)
    labels[:, :6] = config.ignore_index  # the prompt
    frames = config.vision.num_frames
    size = config.vision.image_size
    video = torch.randint(0, 256, (batch_size, frames, 3, size, size), generator=g, dtype=torch.uint8)
    audio = torch.randn(batch_size, config.audio.num_samples, generator=g) * 0.1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "video": video, "audio": audio}


def sub_batch(batch: dict, rows: list[int]) -> dict:
    return {key: value[rows] for key, value in batch.items()}


def run(model, batch):
    return model(
        batch["input_ids"], batch["video"], batch["audio"], labels=batch["labels"], attention_mask=batch["attention_mask"]
    )


def max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def sgd_step(model, loss, lr: float = 0.1) -> None:
    """One plain SGD step (Adam's first step, about lr * sign(grad), would amplify float noise in tiny grads)."""
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def phase_tensor_parallel(out: Path, report: dict) -> None:
    from mimo_lib import parallel

    ctx = parallel.init_parallel(tensor_model_parallel_size=2, seed=0)
    report["tp_context"] = {"tp_size": ctx.tp_size, "dp_size": ctx.dp_size, "backend": ctx.backend}
    for name, config in shapes().items():
        torch.manual_seed(0)
        local = MIMOModel(config)
        megatron = MIMOModel(config, backend="megatron")
        parallel.load_full_state_dict(megatron, local.state_dict())
        batch = make_batch(config)
        a, b = run(local, batch), run(megatron, batch)
        real = a.combined.attention_mask  # (B, S): padding rows differ on purpose (RoPE positions there)
        entry = {
            "logits_max_abs_diff": (a.logits - b.logits).abs()[real].max().item(),
            "logits_scale": a.logits.abs()[real].max().item(),
            "loss_local": a.loss.item(),
            "loss_megatron": b.loss.item(),
            "shard_shape_qkv": list(megatron.state_dict()["language_model.decoder.layers.0.self_attention.linear_qkv.weight"].shape),
        }
        sgd_step(local, a.loss)
        sgd_step(megatron, b.loss)
        entry["weights_after_step_max_abs_diff"] = max_diff(local.state_dict(), parallel.full_state_dict(megatron))
        report[name] = entry
        if name == "gelu-LayerNorm-bias":
            megatron.eval()
            with torch.no_grad():
                logits = run(megatron, batch).logits
            parallel.save_model_parallel(megatron, out / "tp2_model")
            if ctx.is_main:
                torch.save(logits, out / "tp2_logits.pt")

    # the shipped chapter-7 model, at TP = 2, against the local backend
    from mimo_lib.checkpoint import load_model, load_tokenizer
    from mimo_lib.evaluate import build_dataset, predict
    from mimo_lib.pretrain_towers import PRETRAINED_DIR

    folder = PRETRAINED_DIR / "mimo_toy"
    local = load_model(folder)
    megatron = parallel.load_model_parallel(folder)
    tokenizer = load_tokenizer(folder)
    data = build_dataset("synthetic", local.config, tokenizer, 4, seed=4242)
    start = time.time()
    answers_local = [r["prediction"] for r in predict(local, data, tokenizer, batch_size=4)]
    answers_megatron = [r["prediction"] for r in predict(megatron, data, tokenizer, batch_size=4)]
    report["mimo_toy"] = {
        "local": answers_local,
        "megatron_tp2": answers_megatron,
        "seconds": time.time() - start,
    }


def phase_data_parallel(out: Path, report: dict) -> None:
    from megatron.core import parallel_state

    from mimo_lib import parallel
    from mimo_lib.language_backends import build_megatron_mimo, megatron_mimo_loss

    parallel_state.destroy_model_parallel()  # keep torch.distributed, regroup as TP = 1, DP = 2
    ctx = parallel.init_parallel(tensor_model_parallel_size=1, seed=0)
    report["dp_context"] = {"tp_size": ctx.tp_size, "dp_size": ctx.dp_size}
    config = shapes()["gelu-LayerNorm-bias"]

    # DP = 2 x micro-batch 2 against one process with 4 (both ranks also compute the reference)
    torch.manual_seed(0)
    local = MIMOModel(config)
    reference = MIMOModel(config, backend="megatron")
    reference.load_state_dict(local.state_dict())
    replica = MIMOModel(config, backend="megatron")  # megatron modules hold process groups: no deepcopy
    replica.load_state_dict(local.state_dict())
    batch = make_batch(config, batch_size=4, seed=3)
    ref_out = run(reference, batch)
    sgd_step(reference, ref_out.loss)

    ddp = parallel.wrap_data_parallel(replica)
    rows = parallel.shard_batch_indices(range(4), ctx.dp_rank, ctx.dp_size)
    shard = sub_batch(batch, rows)
    out_shard = run(ddp, shard)
    tokens = int((out_shard.combined.labels[:, 1:] != config.ignore_index).sum())
    loss, logged = parallel.data_parallel_loss(out_shard.loss, tokens)
    replica.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in replica.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    report["data_parallel"] = {
        "rows": rows,
        "tokens_this_rank": tokens,
        "loss_reference": ref_out.loss.item(),
        "loss_dp": logged.item(),
        "loss_this_rank_alone": out_shard.loss.item(),
        "weights_max_abs_diff": max_diff(reference.state_dict(), replica.state_dict()),
    }

    # megatron TP = 1 against local on the phase-1 batch; the TP=2 folder at TP = 1
    batch = make_batch(config)
    megatron = MIMOModel(config, backend="megatron")
    megatron.load_state_dict(local.state_dict())
    a, b = run(local, batch), run(megatron, batch)
    real = a.combined.attention_mask
    report["tp1"] = {
        "logits_max_abs_diff": (a.logits - b.logits).abs()[real].max().item(),
        "loss_local": a.loss.item(),
        "loss_megatron": b.loss.item(),
    }
    from mimo_lib.checkpoint import load_model

    tp2_logits = torch.load(out / "tp2_logits.pt")
    with torch.no_grad():
        at_tp1 = run(parallel.load_model_parallel(out / "tp2_model"), batch).logits
        on_local = run(load_model(out / "tp2_model"), batch).logits
    report["tp2_checkpoint"] = {
        "megatron_tp1_max_abs_diff": (at_tp1 - tp2_logits).abs()[real].max().item(),
        "local_max_abs_diff": (on_local - tp2_logits).abs()[real].max().item(),
    }

    # megatron-core's own MimoModel, assembled from the same towers, projectors and decoder
    mimo = build_megatron_mimo(megatron)
    with torch.no_grad():
        megatron.time_embedding.weight.normal_()  # not zero: MimoModel's projections must add it too
        mimo_loss = megatron_mimo_loss(
            mimo, megatron, batch["input_ids"], batch["video"], batch["audio"], batch["labels"], batch["attention_mask"]
        )
        ours = run(megatron, batch).loss
    report["megatron_mimo"] = {"loss_mimo_model": mimo_loss.item(), "loss_ours": ours.item()}


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    report: dict = {"rank": int(os.environ["RANK"])}
    start = time.time()
    phase_tensor_parallel(out, report)
    phase_data_parallel(out, report)
    report["seconds"] = time.time() - start
    reports = [None, None]
    torch.distributed.all_gather_object(reports, report)
    if report["rank"] == 0:
        (out / "report.json").write_text(json.dumps(reports, indent=1))
    from mimo_lib.parallel import destroy_parallel

    destroy_parallel()


if __name__ == "__main__":
    main()
