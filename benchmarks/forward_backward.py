"""Time one forward + backward pass of a MIMO preset on a batch of synthetic clips.

    python benchmarks/forward_backward.py                      # toy preset, batch 8, CPU
    python benchmarks/forward_backward.py --preset small --batch-size 4 --repeats 3

Clips: 8 frames at the preset's image size and 1 s of 16 kHz audio (the preset's
clip_duration_s), one synthetic conversation each. Prints the median over
``--repeats`` timed steps after ``--warmup`` untimed ones, and peak memory
(resident set size of this process, which includes Python and torch themselves).
Nothing here is asserted in tests: numbers belong to the machine that made them.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from mimo_lib.config import get_preset
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch
from mimo_lib.data.synthetic import synthetic_config_for
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = get_preset(args.preset)
    tokenizer = Tokenizer.default()
    torch.manual_seed(0)
    model = MIMOModel(config).to(args.device)
    dataset = SyntheticAVDataset(args.batch_size, seed=0, config=synthetic_config_for(config), tokenizer=tokenizer)
    batch = collate_av_batch([dataset[i] for i in range(args.batch_size)], tokenizer.pad_id).to(args.device)
    inputs = {
        "input_ids": batch.input_ids, "video": batch.video, "audio": batch.audio, "labels": batch.labels,
        "attention_mask": batch.attention_mask,
    }

    def step() -> tuple[float, int]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(**inputs)
        out.loss.backward()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, out.combined.embeddings.shape[1]

    for _ in range(args.warmup):
        step()
    times, seq_len = [], 0
    for _ in range(args.repeats):
        seconds, seq_len = step()
        times.append(seconds)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"preset {args.preset}: {model.num_parameters() / 1e6:.2f} M parameters, batch {args.batch_size}, "
          f"{config.vision.num_frames} frames, {config.audio.clip_duration_s:g} s audio, "
          f"combined sequence {seq_len} positions")
    print(f"forward+backward: median {statistics.median(times) * 1e3:.0f} ms "
          f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}) over {args.repeats} steps; "
          f"peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
