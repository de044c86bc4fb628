"""Train the audio codec of chapter 10 and measure what survives the round trip through its codes.

    python benchmarks/audio_codec.py                      # train, measure, write benchmarks/results/audio_codec.json
    python benchmarks/audio_codec.py --publish            # ... and write mimo_lib/pretrained/audio_codec_toy.safetensors
    python benchmarks/audio_codec.py --steps 100 --train-clips 256 --held-out-clips 64 --json ''   # a quick look

The codec (:mod:`mimo_lib.audio_codec`) is trained on one-event synthetic clips (4 instruments x 2
pitches, random loudness, seeded), then judged on held-out clips (seed + ``HELD_OUT_SEED_OFFSET``,
the same held-out stream the audio tower was scored on) in four conditions:

* ``original``: the clips themselves, the ceiling;
* ``griffin_lim_of_original``: the *original* log-mel turned into a waveform by Griffin-Lim, the
  cost of the vocoder alone (no codes involved);
* ``codec_mel``: the log-mel decoded from the codes, fed straight into the tower (no vocoder), the
  cost of the codes alone;
* ``codec_waveform``: codes -> log-mel -> Griffin-Lim -> waveform, read by the tower like any clip:
  what a listener of the model's answer gets.

For each: the chapter-3 audio tower's zero-shot accuracy (instrument, pitch, both = caption) and the
mean absolute log-mel error against the original; for the two waveform conditions also the mean cosine
between the tower's clip embedding of the round trip and of the original (a finer ruler than accuracy,
which saturates). A mean baseline (every frame predicted as the
training set's mean frame) gives the log-mel error's scale. Nothing is asserted here;
``tests/test_audio_codec.py`` checks the shipped checkpoint's recorded numbers against a floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimo_lib.atomic import atomic_write_json  # noqa: E402
from mimo_lib.audio_codec import (  # noqa: E402
    SHIPPED_CODEC,
    AudioCodec,
    AudioCodecConfig,
    mel_to_waveform,
    save_codec,
    train_codec,
)
from mimo_lib.constants import HELD_OUT_SEED_OFFSET  # noqa: E402
from mimo_lib.data.synthetic import INSTRUMENTS, SyntheticConfig  # noqa: E402
from mimo_lib.features import log_mel_spectrogram  # noqa: E402
from mimo_lib.pretrain_towers import (  # noqa: E402
    ContrastivePretrainer,
    load_pretrainer,
    make_pretraining_set,
    zero_shot_accuracy,
)
from mimo_lib.towers import shipped_checkpoint  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "audio_codec.json"


@torch.no_grad()
def zero_shot_on_mels(model: ContrastivePretrainer, mels: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """:func:`zero_shot_accuracy`, but the tower reads log-mel ``(B, 80, 100)`` directly instead of a waveform."""
    model.eval()
    captions = model.caption_embeddings()  # (C, E)
    tower = model.tower
    clips = model.head(tower.pool(tower.encode_features(mels)))  # (B, E)
    predicted = (torch.nn.functional.normalize(clips, dim=-1) @ captions.T).argmax(-1)  # (B,)
    attrs = model.caption_attributes
    result = {"caption": (predicted == targets).float().mean().item()}
    for name in attrs[0]:
        result[name] = sum(attrs[p][name] == attrs[t][name] for p, t in zip(predicted.tolist(), targets.tolist())) / len(
            targets
        )
    return result


def instrument_accuracy_by_instrument(
    model: ContrastivePretrainer, waves: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """Instrument accuracy for the clips of each instrument separately (which instrument suffers most)."""
    attrs = model.caption_attributes
    result = {}
    for instrument in INSTRUMENTS:
        rows = torch.tensor([attrs[t]["instrument"] == instrument for t in targets.tolist()])
        if rows.any():
            result[instrument] = zero_shot_accuracy(model, waves[rows], targets[rows])["instrument"]
    return result


def rounded(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in scores.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips a step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine to 0 (default: %(default)s)")
    parser.add_argument("--train-clips", type=int, default=2048, help="training clips (default: %(default)s)")
    parser.add_argument("--held-out-clips", type=int, default=256, help="held-out clips (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="clips, init and batch order (default: %(default)s)")
    parser.add_argument("--time-budget-s", type=float, default=None, help="stop training after this many seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--json", default=str(RESULT.relative_to(REPO)), help="result file ('' for none)")
    parser.add_argument("--publish", action="store_true", help=f"write the checkpoint to {SHIPPED_CODEC.name}")
    parser.add_argument("--out", help="write the checkpoint here instead (or as well)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    synthetic = SyntheticConfig()
    config = AudioCodecConfig()
    train_waves, _ = make_pretraining_set("audio", args.train_clips, args.seed, synthetic)
    held_waves, held_targets = make_pretraining_set(
        "audio", args.held_out_clips, args.seed + HELD_OUT_SEED_OFFSET, synthetic
    )
    torch.manual_seed(args.seed)
    codec = AudioCodec(config)
    train_mels = codec.features(train_waves)  # (N, 80, 100)
    print(f"codec: {sum(p.numel() for p in codec.parameters()):,} parameters, {config.codebook_size} codes, "
          f"{config.codes_per_second:g} codes/s ({config.bits_per_second:g} bit/s); {args.train_clips} training clips")

    train_start = time.perf_counter()
    log = train_codec(codec, train_mels, args.steps, args.batch_size, args.lr, args.seed,
                      time_budget_s=args.time_budget_s, log_every=100)
    train_minutes = (time.perf_counter() - train_start) / 60
    print(f"trained {len(log)} steps in {train_minutes:.1f} min")

    # ---- held-out round trips
    eval_start = time.perf_counter()
    with torch.no_grad():
        held_mels = codec.features(held_waves)  # (H, 80, 100)
        codes = codec.encode(held_waves)  # (H, 25)
        codec_mels = codec.decode(codes)  # (H, 80, 100)
        codec_waves = mel_to_waveform(codec_mels, config)  # (H, 16000)
        vocoded_waves = mel_to_waveform(held_mels, config)  # (H, 16000)
        mean_frame = train_mels.mean(dim=(0, 2), keepdim=True)  # (1, 80, 1)

        def mel_error(waves_or_mels: torch.Tensor) -> float:
            mels = waves_or_mels if waves_or_mels.dim() == 3 else log_mel_spectrogram(waves_or_mels)
            return (mels[..., : held_mels.shape[-1]] - held_mels).abs().mean().item()

        mel_mae = {
            "mean_baseline": (mean_frame - held_mels).abs().mean().item(),
            "griffin_lim_of_original": mel_error(vocoded_waves),
            "codec_mel": mel_error(codec_mels),
            "codec_waveform": mel_error(codec_waves),
        }
    tower = load_pretrainer(shipped_checkpoint("audio"))  # the chapter-3 audio tower and its captions: the judge
    accuracy = {
        "original": zero_shot_accuracy(tower, held_waves, held_targets),
        "griffin_lim_of_original": zero_shot_accuracy(tower, vocoded_waves, held_targets),
        "codec_mel": zero_shot_on_mels(tower, codec_mels, held_targets),
        "codec_waveform": zero_shot_accuracy(tower, codec_waves, held_targets),
    }
    with torch.no_grad():  # how close the tower's clip embedding of each round trip stays to the original's
        reference = tower.clip_embeddings(held_waves)  # (H, E), unit length
        cosine = {
            "griffin_lim_of_original": (tower.clip_embeddings(vocoded_waves) * reference).sum(-1).mean().item(),
            "codec_waveform": (tower.clip_embeddings(codec_waves) * reference).sum(-1).mean().item(),
        }
    counts = torch.bincount(codes.flatten(), minlength=config.codebook_size).float()
    probabilities = counts / counts.sum()
    perplexity = torch.exp(-(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()).item()
    eval_minutes = (time.perf_counter() - eval_start) / 60

    print(f"\nheld-out: {args.held_out_clips} clips; codes used {int((counts > 0).sum())} of "
          f"{config.codebook_size}, perplexity {perplexity:.1f}")
    print(f"{'condition':26s} {'mel MAE':>8s} {'instrument':>11s} {'pitch':>6s} {'both':>6s}")
    for name, scores in accuracy.items():
        mae = mel_mae.get(name, 0.0)
        print(f"{name:26s} {mae:8.4f} {scores['instrument']:11.1%} {scores['pitch']:6.1%} {scores['caption']:6.1%}")
    print(f"{'mean_baseline':26s} {mel_mae['mean_baseline']:8.4f}")
    print("tower clip-embedding cosine to the original: "
          + ", ".join(f"{k} {v:.3f}" for k, v in cosine.items()))

    metrics = {
        "held_out_clips": args.held_out_clips,
        "mel_mae": {k: round(v, 4) for k, v in mel_mae.items()},
        "tower_zero_shot_accuracy": {k: rounded(v) for k, v in accuracy.items()},
        "tower_embedding_cosine_to_original": {k: round(v, 4) for k, v in cosine.items()},
        "codec_waveform_instrument_accuracy_by_instrument": rounded(
            instrument_accuracy_by_instrument(tower, codec_waves, held_targets)
        ),
        "codes_used": int((counts > 0).sum()),
        "code_perplexity": round(perplexity, 1),
    }
    training = {
        "steps": len(log), "batch_size": args.batch_size, "lr": args.lr, "train_clips": args.train_clips,
        "seed": args.seed, "threads": args.threads, "train_minutes": round(train_minutes, 2),
        "final_mel_l1": round(sum(e["mel_l1"] for e in log[-50:]) / len(log[-50:]), 4),
    }
    result = {
        "script": "benchmarks/audio_codec.py",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "torch": torch.__version__,
        "codec_config": {**config.__dict__, "codes_per_second": config.codes_per_second,
                         "bits_per_second": config.bits_per_second},
        "parameters": sum(p.numel() for p in codec.parameters()),
        "training": training,
        "metrics": metrics,
        "eval_minutes": round(eval_minutes, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "curve": [{k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}
                  for e in log if e["step"] % 100 == 0 or e["step"] == len(log)],
    }
    if args.json:
        path = REPO / args.json if not Path(args.json).is_absolute() else Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result, indent=2)
        print(f"wrote {path}")
    extra = {"training": training, "metrics": metrics, "script": "benchmarks/audio_codec.py"}
    for out in ([SHIPPED_CODEC] if args.publish else []) + ([Path(args.out)] if args.out else []):
        save_codec(codec, out, extra)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
