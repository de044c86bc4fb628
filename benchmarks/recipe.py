"""The whole training recipe of chapter 7, timed: towers, align, instruct, then evaluation.

    python benchmarks/recipe.py                     # everything from scratch, towers included
    python benchmarks/recipe.py --shipped-towers    # start from the committed towers (their recorded times are used)
    python benchmarks/recipe.py --publish           # also copy the final model to mimo_lib/pretrained/mimo_toy
                                                    # (and, without --shipped-towers, the run's towers beside it)

The recipe itself (steps, learning rates, data mix) lives in ``mimo_lib/recipes.py``, and the command
lines take their defaults from it; so each stage here runs as its own process with the same short
commands a reader types (printed before each stage), and what is measured is what a user gets:

1. ``python -m mimo_lib.pretrain_towers``: contrastive pretraining of the vision and audio towers;
2. ``python -m mimo_lib.train --stage align``: projectors only, on captions;
3. ``python -m mimo_lib.train --stage instruct --load ALIGN``: projectors and decoder, on questions,
   evaluated on held-out clips every ``--eval-interval`` steps;
4. ``python -m mimo_lib.evaluate``: exact match per question type, with the ablations.

``--publish`` replaces ``mimo_lib/pretrained/mimo_toy`` atomically (:func:`mimo_lib.atomic.copy_folder_atomically`):
a crash at any moment leaves the old model or the new one, never neither.

It prints the wall time of each stage, the accuracy-versus-minutes curve
(minutes since the recipe started, evaluation pauses included) and the
ablation table, and writes ``OUT/recipe.json`` and ``OUT/accuracy_vs_minutes.png``.
Nothing is asserted: the numbers belong to the machine that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimo_lib.atomic import atomic_write_bytes, copy_folder_atomically  # noqa: E402
from mimo_lib.recipes import get_recipe  # noqa: E402
from mimo_lib.towers import read_metadata, shipped_checkpoint  # noqa: E402

PRESET = "toy"
PRETRAINED = REPO / "mimo_lib" / "pretrained"
PUBLISHED_MODEL = PRETRAINED / "mimo_toy"


def stage_environment() -> dict[str, str]:
    """The stages' environment: every usable core for torch (``MIMO_NUM_THREADS``, unless already set).

    The recipe is a benchmark run alone on its machine. The library's default thread policy keeps one of two
    cores free for a browser (``mimo_lib.threads``); with both cores an instruct step of the toy preset took
    0.225 s instead of 0.403 s (60 steps of 32 on the reference machine, nothing else running).
    """
    from mimo_lib.threads import ENV_VAR, usable_cores

    return {**os.environ, ENV_VAR: os.environ.get(ENV_VAR, str(usable_cores()))}


def run(command: list[str]) -> float:
    """Run ``python -m ...`` in the repository, echoing the command; return its wall time in seconds."""
    env = stage_environment()
    print(f"\n$ MIMO_NUM_THREADS={env['MIMO_NUM_THREADS']} python " + " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=REPO, check=True, env=env)
    return time.perf_counter() - start


def load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (None where the OS has none): how shared the CPU was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/recipe"), help="folder for every stage's output")
    parser.add_argument("--shipped-towers", action="store_true", help="skip tower pretraining: use the committed towers")
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="instruct steps between held-out evaluations (default: a third of the recipe's steps)")
    parser.add_argument("--eval-samples", type=int, default=350, help="held-out clips per evaluation during instruct")
    parser.add_argument("--final-eval-samples", type=int, default=500, help="held-out clips for the final table")
    parser.add_argument("--publish", action="store_true", help=f"copy the final model to {PUBLISHED_MODEL}")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {args.out} is not empty: give a new folder (nothing is overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    recipe = get_recipe(PRESET)
    # three evaluations, the last at the last step (a third rounded down would add a fourth one step before it)
    eval_interval = args.eval_interval or max(1, -(-recipe.instruct.train_iters // 3))
    threads = stage_environment()["MIMO_NUM_THREADS"]
    load_before = load_average()
    print(f"load average before: {load_before} on {os.cpu_count()} cores")
    print(f"recipe {recipe.version} (mimo_lib/recipes.py): {json.dumps(recipe.to_dict())}")

    # 1. towers
    if args.shipped_towers:
        vision, audio = shipped_checkpoint("vision"), shipped_checkpoint("audio")
        for name, path in (("vision", vision), ("audio", audio)):
            recorded = json.loads(read_metadata(path)["extra"])
            seconds[f"{name} tower (recorded)"] = 60 * recorded["train_minutes"]
            print(f"{name} tower: shipped {path.name}, {recorded['steps']} steps in {recorded['train_minutes']} min "
                  f"when it was made (training loop only)")
    else:
        # one process, the vision tower then the audio tower, each with both cores: on 2 cores this is faster than
        # the two side by side with one thread each: the vision tower dominates, and a step of it took 0.61 s with
        # 2 threads alone, 1.25 s with 1 thread beside another job (benchmarks/results/vision_stem_1000.json)
        seconds["towers (vision, then audio)"] = run(
            ["-m", "mimo_lib.pretrain_towers", "--preset", PRESET, "--modality", "both", "--out", str(out / "towers")])
        vision, audio = out / "towers" / "vision_tower_toy.safetensors", out / "towers" / "audio_tower_toy.safetensors"

    # 2. align, 3. instruct: every optimisation and data flag is the recipe's default
    seconds["align"] = run([
        "-m", "mimo_lib.train", "--preset", PRESET, "--stage", "align", "--vision-tower-checkpoint", str(vision),
        "--audio-tower-checkpoint", str(audio), "--eval-samples", "0", "--save", str(out / "align"),
    ])
    before_instruct = sum(seconds.values())
    seconds["instruct"] = run([
        "-m", "mimo_lib.train", "--stage", "instruct", "--load", str(out / "align"),
        "--eval-interval", str(eval_interval), "--eval-samples", str(args.eval_samples),
        "--save", str(out / "instruct"),
    ])

    # 4. the final table
    table_file = out / "evaluation.txt"
    start = time.perf_counter()
    print(f"\n$ python -m mimo_lib.evaluate --load {out / 'instruct'} --num-samples {args.final_eval_samples}")
    table = subprocess.run(
        [sys.executable, "-m", "mimo_lib.evaluate", "--load", str(out / "instruct"),
         "--num-samples", str(args.final_eval_samples)],
        cwd=REPO, check=True, capture_output=True, text=True, env=stage_environment(),
    ).stdout
    table_file.write_text(table)
    evaluation_s = time.perf_counter() - start

    # the curve: held-out accuracy at each evaluation step, against minutes since the recipe started
    records = [json.loads(line) for line in (out / "instruct" / "metrics.jsonl").read_text().splitlines()]
    curve = [
        {"step": r["step"], "minutes": round((before_instruct + r["elapsed_s"]) / 60, 2), **r["eval"]}
        for r in records if "eval" in r
    ]
    total = sum(seconds.values())
    print("\n== wall time per stage ==")
    for name, s in seconds.items():
        print(f"{name:<24} {s / 60:6.1f} min")
    print(f"{'recipe in all':<24} {total / 60:6.1f} min   (+ {evaluation_s / 60:.1f} min for the final table)")
    print("\n== held-out exact match during instruct, against minutes since the recipe started ==")
    columns = [k for k in curve[0] if k not in ("step", "minutes")]
    print("  ".join(["step".rjust(5), "minutes".rjust(7)] + [c.rjust(6) for c in columns]))
    for point in curve:
        print("  ".join([str(point["step"]).rjust(5), f"{point['minutes']:7.1f}"]
                        + [f"{point[c]:6.2f}" for c in columns]))
    print(f"\n== final evaluation ({args.final_eval_samples} held-out clips) ==\n{table}")

    load_after = load_average()
    print(f"load average before: {load_before}, after: {load_after} on {os.cpu_count()} cores "
          "(above 2 on 2 cores: other work shared the CPU)")
    summary = {"recipe": recipe.to_dict(), "shipped_towers": args.shipped_towers, "seconds": seconds,
               "total_minutes": round(total / 60, 2), "final_table_minutes": round(evaluation_s / 60, 2),
               "total_with_final_table_minutes": round((total + evaluation_s) / 60, 2),
               "load_average": {"before": load_before, "after": load_after, "cpus": os.cpu_count()},
               "threads": int(threads),
               "curve": curve, "final_table": table}
    (out / "recipe.json").write_text(json.dumps(summary, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        from mimo_lib.plotting import plot_accuracy_curve

        plot_accuracy_curve(curve).figure.savefig(out / "accuracy_vs_minutes.png", dpi=120, bbox_inches="tight")
    except ImportError as error:  # the plot is a convenience; the numbers are already printed
        print(f"(no plot: {error})")
    if args.publish:
        if not args.shipped_towers:  # the model was trained on this run's towers: they are the shipped ones now
            for path in (vision, audio):
                copy_file_atomically(path, PRETRAINED / path.name)
            print(f"published the towers {vision.name} and {audio.name} to {PRETRAINED}")
        publish(out / "instruct" / "final", summary, out / "publish")
        print(f"published the final model to {PUBLISHED_MODEL}")


def copy_file_atomically(source: Path, target: Path) -> Path:
    """Replace ``target`` with a copy of ``source``: a crash leaves the old file or the new one."""
    return atomic_write_bytes(target, source.read_bytes())


def publish(model_folder: Path, summary: dict, staging: Path, target: Path = PUBLISHED_MODEL) -> Path:
    """Put ``model_folder`` plus its ``recipe.json`` at ``target`` in one atomic step."""
    shutil.copytree(model_folder, staging)
    (staging / "recipe.json").write_text(json.dumps(summary, indent=2))
    return copy_folder_atomically(staging, target)


if __name__ == "__main__":
    main()
