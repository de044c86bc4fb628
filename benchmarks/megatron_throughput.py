"""Training throughput of the megatron backend: tokens/s, peak memory and model FLOPs utilisation (MFU).

Trains the language model of a preset (default ``gpt-1b``, 1.06B parameters)
on random token ids for a few dozen steps and reports, after a warm-up:

* **tokens/s** over all ranks;
* **peak memory** per rank (``torch.cuda.max_memory_allocated``; on the CPU the
  process's peak resident size);
* **MFU** = achieved model FLOP/s / (number of devices x the device's dense
  peak). Model FLOPs per token, forward and backward (PaLM's count):
  ``6 x (matmul parameters) + 12 x layers x hidden x sequence`` — every weight
  is used in one multiply-add forward and two backward; the second term is the
  attention scores and their weighted sum. Recomputation is not counted.

Precision: on a GPU the weights are bf16 (Megatron's ``params_dtype``) with
fp32 master weights and fp32 Adam states, as Megatron's mixed-precision
optimizer keeps them; ``--tiny`` runs the ``tiny`` preset in fp32 on the CPU,
against a peak measured here with one fp32 matmul (that is what CI runs).

Examples::

    python benchmarks/megatron_throughput.py --tiny                        # CPU, seconds
    python benchmarks/megatron_throughput.py                               # one GPU, TP=1
    torchrun --nproc_per_node=2 benchmarks/megatron_throughput.py --tensor-model-parallel-size 2

Dense bf16 peaks used (NVIDIA data sheets, SXM unless named): H100/H200 989
TFLOP/s, H100 PCIe 756, A100 312, L40S 362; anything else needs
``--peak-tflops``. The attention is megatron-core's local-spec
``DotProductAttention`` (unfused; this book runs without Transformer Engine),
so expect lower MFU than a Transformer-Engine build. No GPU number has been
measured in this repository yet (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mimo_lib.config import PRESETS, LanguageModelConfig, get_preset  # noqa: E402

#: Dense bf16 tensor-core peaks in TFLOP/s, matched against torch.cuda.get_device_name() (first match wins).
GPU_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0))


def model_flops_per_token(config: LanguageModelConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per token (see the module docstring)."""
    d, f, v, layers = config.hidden_size, config.ffn_hidden_size, config.padded_vocab_size, config.num_layers
    fc1 = 2 * f if config.activation == "swiglu" else f
    matmul_params = layers * (3 * d * d + d * d + d * fc1 + f * d) + v * d  # qkv, proj, fc1, fc2; output layer
    return 6.0 * matmul_params + 12.0 * layers * d * seq_len


def device_peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float, str]:
    """``(peak FLOP/s of one device, where the number comes from)``."""
    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"dense bf16 peak of {name}"
        raise SystemExit(f"unknown GPU {name!r}: give its dense bf16 peak with --peak-tflops")
    n = 512  # CPU: measure one fp32 matmul
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start), f"measured fp32 {n}x{n} matmul on this CPU"


class MasterWeightAdam:
    """AdamW on fp32 master copies of low-precision weights (Megatron's mixed-precision optimizer, in short)."""

    def __init__(self, params, lr: float):
        self.params = [p for p in params if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.inner = torch.optim.AdamW(self.master, lr=lr, weight_decay=0.0)

    def step(self) -> None:
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpt-1b")
    parser.add_argument("--tensor-model-parallel-size", type=int, default=1)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30, help="measured steps, after --warmup")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default: bf16 on GPUs, fp32 on CPUs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, if not known here")
    parser.add_argument("--tiny", action="store_true", help="CPU, fp32, tiny preset, 3 steps: what CI runs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset, args.micro_batch_size, args.seq_length, args.steps, args.warmup = "tiny", 2, 32, 3, 1
        args.precision = "fp32"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    from mimo_lib.language_backends import MegatronLanguageModel
    from mimo_lib.parallel import check_megatron_core, check_tensor_parallel_size, destroy_parallel, init_parallel

    check_megatron_core()
    config = get_preset(args.preset).language_model
    check_tensor_parallel_size(config, args.tensor_model_parallel_size)
    if args.seq_length > config.max_sequence_length:
        raise SystemExit(f"--seq-length {args.seq_length} exceeds the preset's {config.max_sequence_length}")
    device_arg = "cpu" if args.tiny else None
    ctx = init_parallel(args.tensor_model_parallel_size, seed=0, device=device_arg)
    if ctx.dp_size != 1:
        raise SystemExit("this benchmark measures tensor parallelism: launch exactly --tensor-model-parallel-size processes")
    precision = args.precision or ("bf16" if ctx.device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    model = MegatronLanguageModel(config, params_dtype=dtype).to(ctx.device).train()
    model.gather_output = False  # training needs the loss only: no full-vocabulary gather
    optimizer = MasterWeightAdam(model.parameters(), lr=1e-4) if dtype != torch.float32 else None
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    B, S = args.micro_batch_size, args.seq_length
    batches = [torch.randint(0, config.vocab_size, (B, S), generator=g).to(ctx.device) for _ in range(4)]

    def step(i: int) -> float:
        ids = batches[i % len(batches)]
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return out.loss.item()  # .item() synchronises with the device

    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup):
        step(i)
    start = time.perf_counter()
    losses = [step(i) for i in range(args.steps)]
    elapsed = time.perf_counter() - start

    tokens_per_s = B * S * args.steps / elapsed  # one model replica (TP ranks share its tokens)
    flops_per_s = tokens_per_s * model_flops_per_token(config, S)
    peak, peak_source = device_peak_flops(ctx.device, args.peak_tflops)
    if ctx.device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated()
        device_name = torch.cuda.get_device_name(ctx.device)
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        device_name = "cpu"
    result = {
        "preset": args.preset,
        "parameters_per_rank": model.num_parameters(),
        "tensor_model_parallel_size": ctx.tp_size,
        "precision": precision,
        "device": device_name,
        "micro_batch_size": B,
        "seq_length": S,
        "steps": args.steps,
        "seconds": elapsed,
        "tokens_per_s": tokens_per_s,
        "model_tflops_per_s": flops_per_s / 1e12,
        "peak_tflops_per_device": peak / 1e12,
        "peak_source": peak_source,
        "mfu": flops_per_s / (peak * ctx.tp_size),
        "peak_memory_gib_rank0": peak_memory / 2**30,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    if ctx.is_main:
        print(json.dumps(result))
    if "WORLD_SIZE" in os.environ or args.tiny:
        destroy_parallel()
    return result


if __name__ == "__main__":
    main()
