"""Where the toy vision tower's time goes on a CPU, and what three choices in ``mimo_lib/vision_tower.py`` save.

    python benchmarks/vision_tower_speed.py                # 2 torch threads, writes benchmarks/results/
    python benchmarks/vision_tower_speed.py --repeats 2 --json ''   # a quick look, nothing written

The vision tower is most of the recipe's minutes: its contrastive pretraining (``mimo_lib.pretrain_towers``)
and the encoding of every training and evaluation clip (``TowerFeatureCache``). Each row is a median over
``--repeats`` rounds, the variants of a table interleaved within each round so that a machine that slows
down mid-run slows all of them:

1. ``quick_gelu``, forward and backward on one pretraining step's ``(frames, tokens, ffn)`` tensor: the
   one-line formula under autograd against the library's hand-written backward;
2. the conv stem, forward and backward on one step's frames: pixels in PyTorch's default (channels-first)
   layout against channels-last, which the library passes;
3. ``FRAMES_PER_PASS``: encoding 64 clips without gradients (what the feature cache does), and one whole
   pretraining step of the toy recipe (batch 32), with the frames in one pass or in groups; each grouped
   encoding is checked to equal the one-pass encoding.

Nothing is asserted in tests: the numbers belong to the machine that made them; run it with nothing else
on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from mimo_lib import vision_tower  # noqa: E402
from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.config import get_preset  # noqa: E402
from mimo_lib.data.synthetic import synthetic_config_for  # noqa: E402
from mimo_lib.pretrain_towers import ContrastivePretrainer, make_pretraining_set  # noqa: E402
from mimo_lib.recipes import get_recipe  # noqa: E402
from mimo_lib.tokenizer import Tokenizer  # noqa: E402


def milliseconds(work, calls: int) -> float:
    """Mean wall time of one ``work()`` over ``calls`` calls, after one warm-up call."""
    work()
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) / calls * 1000


def interleaved(variants: dict, calls: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each variant, the variants taking turns within each of ``repeats`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, work in variants.items():
            times[name].append(milliseconds(work, calls))
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the recipe uses 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 128, 64, 32],
                        help="FRAMES_PER_PASS values to time (0: every frame in one pass)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "vision_tower_speed.json"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or min(args.groups) < 0:
        parser.error("--threads and --repeats must be at least 1, every --groups value at least 0")
    torch.set_num_threads(args.threads)
    config = get_preset("toy")
    towers = get_recipe("toy").towers
    batch = towers.batch_size
    frames = batch * config.vision.num_frames
    tokens = 1 + config.vision.grid_size**2

    # 1. quick_gelu on one step's MLP activations
    torch.manual_seed(0)
    hidden = torch.randn(frames, tokens, config.vision.ffn_hidden_size, requires_grad=True)
    upstream = torch.randn_like(hidden)

    def plain_gelu() -> None:
        (hidden * torch.sigmoid(vision_tower.QUICK_GELU_SLOPE * hidden)).backward(upstream)

    def library_gelu() -> None:
        vision_tower.quick_gelu(hidden).backward(upstream)

    gelu = interleaved({"autograd formula": plain_gelu, "hand-written backward": library_gelu}, 5, args.repeats)
    print(f"quick_gelu forward+backward on {tuple(hidden.shape)}: {gelu} ms")

    # 2. the conv stem on one step's frames
    stem = vision_tower.ConvStem(config.vision.num_channels, config.vision.hidden_size, config.vision.patch_size)
    pixels = torch.randn(frames, config.vision.num_channels, config.vision.image_size, config.vision.image_size)

    def stem_step(layout: torch.memory_format):
        return lambda: stem(pixels.contiguous(memory_format=layout)).sum().backward()

    stems = interleaved({"channels-first": stem_step(torch.contiguous_format),
                         "channels-last": stem_step(torch.channels_last)}, 5, args.repeats)
    print(f"conv stem forward+backward on {tuple(pixels.shape)}: {stems} ms")

    # 3. frames per pass: encoding (no gradients) and a whole pretraining step
    synthetic = synthetic_config_for(config)
    media, targets = make_pretraining_set("vision", 256, towers.seed, synthetic)
    torch.manual_seed(towers.seed)
    model = ContrastivePretrainer("vision", vision_tower.build_vision_tower(config.vision), Tokenizer.default())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    shipped = vision_tower.FRAMES_PER_PASS

    def with_group(size: int, work):
        def run():
            vision_tower.FRAMES_PER_PASS = size or 10**9
            try:
                work()
            finally:
                vision_tower.FRAMES_PER_PASS = shipped
        return run

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return model.tower(media[:64])

    def train_step() -> None:
        index = torch.randint(len(media), (batch,), generator=generator)
        loss, _ = model(media[index], targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    name = {size: "one pass" if size == 0 else f"{size} frames" for size in args.groups}
    one_pass = []
    with_group(0, lambda: one_pass.append(encode()))()
    same = {}
    for size in args.groups:
        grouped = []
        with_group(size, lambda: grouped.append(encode()))()
        same[name[size]] = torch.equal(grouped[0], one_pass[0])
    encoding = interleaved({name[s]: with_group(s, encode) for s in args.groups}, 3, args.repeats)
    print(f"encoding 64 clips ({64 * config.vision.num_frames} frames), no gradients: {encoding} ms; "
          f"equal to one pass: {same}")
    steps = interleaved({name[s]: with_group(s, train_step) for s in args.groups}, 3, args.repeats)
    print(f"one pretraining step ({batch} clips, {frames} frames): {steps} ms")

    result = {
        "script": "benchmarks/vision_tower_speed.py",
        "command": "python " + " ".join(["benchmarks/vision_tower_speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch_threads": args.threads, "repeats": args.repeats, "frames_per_pass_shipped": shipped,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "quick_gelu_ms": {"shape": list(hidden.shape), **gelu},
        "conv_stem_ms": {"shape": list(pixels.shape), **stems},
        "encode_64_clips_ms": encoding,
        "encoding_equal_to_one_pass": same,
        "pretraining_step_ms": {"batch": batch, **steps},
    }
    if args.json:
        atomic_write_json(Path(args.json), result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
