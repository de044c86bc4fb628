"""How much rendering synthetic clips in worker processes saves (``mimo_lib.threads.map_in_processes``).

    python benchmarks/render_processes.py                 # 512 instruct clips, 1 and 2 processes, 2 torch threads
    python benchmarks/render_processes.py --clips 256 --processes 1 2 4 --json ''   # a quick look, nothing written

Two timings per number of processes, each the median of ``--repeats``:

1. **rendering** ``--clips`` training samples of the toy recipe's instruct stage (its question mix, four turns,
   follow-ups): clip, conversation and tokens, as ``mimo_lib.train`` draws them;
2. **the whole feature cache** of those clips (``TowerFeatureCache.fill``): rendering, then the frozen towers
   of the shipped ``mimo_toy`` with torch's threads. This is the part of the instruct stage's start-up
   the worker processes speed up; the towers themselves are not.

Each configuration checks that the cached features equal those of one process, bit for bit. Writes
``benchmarks/results/render_processes.json`` (``--json ''`` writes nothing). Nothing is asserted in tests:
the numbers belong to the machine that made them; run it with nothing else on the machine.
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

from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.checkpoint import load_model, load_tokenizer  # noqa: E402
from mimo_lib.data.dataset import SyntheticAVDataset  # noqa: E402
from mimo_lib.data.synthetic import synthetic_config_for  # noqa: E402
from mimo_lib.feature_cache import TowerFeatureCache  # noqa: E402
from mimo_lib.recipes import get_recipe  # noqa: E402
from mimo_lib.threads import map_in_processes  # noqa: E402
from mimo_lib.towers import PRETRAINED_DIR  # noqa: E402
from mimo_lib.train import FOLLOW_UP_TYPES  # noqa: E402


def median_seconds(work, argument, repeats: int) -> float:
    """Median wall time of ``work(argument)`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work(argument)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shipped_model_and_instruct_clips(num_clips: int):
    """The shipped ``mimo_toy`` (eval mode), its tokenizer, and ``num_clips`` training samples of the toy
    recipe's instruct stage (its question mix, turns and follow-ups, data seed 0), as ``mimo_lib.train``
    draws them."""
    model = load_model(PRETRAINED_DIR / "mimo_toy").eval()
    tokenizer = load_tokenizer(PRETRAINED_DIR / "mimo_toy")
    instruct = get_recipe("toy").instruct
    dataset = SyntheticAVDataset(
        num_clips, seed=0, config=synthetic_config_for(model.config), tokenizer=tokenizer,
        question_types=instruct.question_types, num_turns=instruct.num_turns, follow_up_types=FOLLOW_UP_TYPES,
    )
    return model, tokenizer, dataset


def save_result(path: str, script: str, argv: list[str] | None, **fields) -> None:
    """Write a benchmark's result file (nothing when ``path`` is empty): the script, the command that ran it,
    the machine (cores, processor, load average when the timings ended), then ``fields``."""
    if not path:
        return
    result = {
        "script": script,
        "command": "python " + " ".join([script, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        **fields,
    }
    atomic_write_json(Path(path), result)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512, help="instruct training samples rendered per timing")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="numbers of rendering processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the towers (the recipe uses 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "render_processes.json"))
    args = parser.parse_args(argv)
    if args.clips < 1 or args.repeats < 1 or args.threads < 1 or min(args.processes) < 1:
        parser.error("--clips, --repeats, --threads and every --processes must be at least 1")
    torch.set_num_threads(args.threads)
    model, tokenizer, dataset = shipped_model_and_instruct_clips(args.clips)

    def fill(processes: int) -> TowerFeatureCache:
        cache = TowerFeatureCache(model, dataset, tokenizer.pad_id)
        cache.fill(progress=False, processes=processes)
        return cache

    def render(processes: int) -> None:
        with map_in_processes(dataset.__getitem__, processes) as pool:
            pool.map(range(len(dataset)))

    reference = fill(1).features
    rows = []
    for processes in args.processes:
        same = all(torch.equal(fill(processes).features[m], reference[m]) for m in reference)
        rows.append({
            "processes": processes,
            "render_s": round(median_seconds(render, processes, args.repeats), 3),
            "fill_s": round(median_seconds(fill, processes, args.repeats), 3),
            "features_equal_one_process": same,
        })
        print(f"{processes} process(es): rendering {rows[-1]['render_s']:.2f} s | whole cache {rows[-1]['fill_s']:.2f} s "
              f"| features equal to one process's: {same}")
    save_result(args.json, "benchmarks/render_processes.py", argv,
                clips=args.clips, torch_threads=args.threads, repeats=args.repeats, rows=rows)


if __name__ == "__main__":
    main()
