"""How much encoding frames in groups saves (``mimo_lib.vision_tower.FRAMES_PER_PASS``).

    python benchmarks/vision_tower_speed.py                # 2 torch threads, writes benchmarks/results/
    python benchmarks/vision_tower_speed.py --repeats 2 --json ''   # a quick look, nothing written

Encoding clips with the frozen vision tower is most of the instruct stage's start-up (``TowerFeatureCache``)
and of every evaluation. Two timings per group size, each a median over ``--repeats`` rounds with the sizes
taking turns within each round (a machine that slows down mid-run slows all of them):

1. the vision tower of the shipped ``mimo_toy`` encoding 64 instruct clips without gradients;
2. the whole feature cache of ``--clips`` instruct clips (rendering, both towers), as the recipe fills it.

Each grouped result is checked to equal the one-pass result bit for bit. Training runs one pass whatever
``FRAMES_PER_PASS`` says (see ``VisionTower._hidden_states``), so a training step is not timed here.
Nothing is asserted in tests: the numbers belong to the machine that made them; run it with nothing else
on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.render_processes import save_result, shipped_model_and_instruct_clips  # noqa: E402
from mimo_lib import vision_tower  # noqa: E402
from mimo_lib.data.dataset import collate_av_batch  # noqa: E402
from mimo_lib.feature_cache import TowerFeatureCache  # noqa: E402


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
    parser.add_argument("--clips", type=int, default=1024, help="instruct clips in the feature-cache timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 128, 64, 32],
                        help="FRAMES_PER_PASS values to time (0: every frame in one pass)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "vision_tower_speed.json"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.clips < 64 or min(args.groups) < 0:
        parser.error("--threads and --repeats must be at least 1, --clips at least 64 (the encoding timing uses "
                     "the first 64), every --groups value at least 0")
    torch.set_num_threads(args.threads)
    model, tokenizer, dataset = shipped_model_and_instruct_clips(args.clips)
    video = collate_av_batch([dataset[i] for i in range(64)], tokenizer.pad_id).video  # (64, T, 3, H, W)
    shipped = vision_tower.FRAMES_PER_PASS

    def with_group(size: int, work):
        def run():
            vision_tower.FRAMES_PER_PASS = size or 10**9
            try:
                return work()
            finally:
                vision_tower.FRAMES_PER_PASS = shipped
        return run

    @torch.no_grad()
    def encode() -> torch.Tensor:
        return model.vision_tower(video)

    def fill() -> dict:
        cache = TowerFeatureCache(model, dataset, tokenizer.pad_id)
        cache.fill(progress=False)
        return cache.features

    name = {size: "one pass" if size == 0 else f"{size} frames" for size in args.groups}
    one_pass = with_group(0, encode)()
    one_pass_cache = with_group(0, fill)()
    same = {name[s]: torch.equal(with_group(s, encode)(), one_pass)
            and all(torch.equal(a, one_pass_cache[m]) for m, a in with_group(s, fill)().items()) for s in args.groups}
    encoding = interleaved({name[s]: with_group(s, encode) for s in args.groups}, 3, args.repeats)
    print(f"encoding 64 clips ({video.shape[0] * video.shape[1]} frames) without gradients: {encoding} ms")
    caching = interleaved({name[s]: with_group(s, fill) for s in args.groups}, 1, args.repeats)
    print(f"the feature cache of {args.clips} instruct clips: {caching} ms")
    print(f"equal to one pass, bit for bit: {same}")

    save_result(args.json, "benchmarks/vision_tower_speed.py", argv,
                torch_threads=args.threads, repeats=args.repeats, frames_per_pass_shipped=shipped,
                encode_64_clips_ms=encoding, feature_cache_ms={"clips": args.clips, **caching},
                equal_to_one_pass=same)

if __name__ == "__main__":
    main()
