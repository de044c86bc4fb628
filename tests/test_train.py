"""Training, evaluation and generation from the command line, on a tiny model that steps in a fraction of a second.

Most runs call ``main(argv)`` in this process (torch is imported once); the
exact-resume test starts a real ``python -m mimo_lib.train`` and SIGKILLs it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mimo_lib import evaluate, generate, train
from mimo_lib.checkpoint import load_checkpoint, load_model, read_train_config, save_model_only
from mimo_lib.config import MIMOConfig, get_preset
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch
from mimo_lib.data.synthetic import QUESTION_TYPES
from mimo_lib.model import MIMOModel
from mimo_lib.optim import WarmupCosineSchedule
from mimo_lib.recipes import get_recipe
from mimo_lib.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA_SAMPLES = ROOT / "data_samples"
SEED_FLAGS = (
    "--num-layers", "--hidden-size", "--num-attention-heads", "--vision-backbone-type", "--audio-backbone-type",
    "--num-frames", "--audio-seq-len", "--data-path", "--preset", "--stage", "--freeze-vision-tower",
    "--no-freeze-vision-tower", "--freeze-audio-tower", "--freeze-projectors", "--freeze-language-model",
    "--vision-tower-checkpoint", "--audio-tower-checkpoint", "--micro-batch-size", "--train-iters", "--lr",
    "--min-lr", "--warmup-iters", "--weight-decay", "--seed", "--device", "--save", "--load", "--save-interval",
    "--eval-interval", "--eval-samples", "--num-samples", "--question-types", "--hf-vision-path", "--hf-audio-path",
    "--valid-fraction", "--allow-missing-audio", "--vision-temporal-compression", "--clip-duration",
    "--clip-window", "--max-sequence-length", "--av-layout", "--av-positions", "--chunk-seconds", "--backend",
    "--tensor-model-parallel-size", "--global-batch-size", "--precision",
)


def tiny_config() -> MIMOConfig:
    """The tiny preset: a model that builds and steps in milliseconds."""
    return get_preset("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(tiny_config().to_dict()))
    return path


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


def tiny_args(tiny_json: Path, *extra: str) -> list[str]:
    return [
        "--config", str(tiny_json), "--vision-tower-checkpoint", "none", "--audio-tower-checkpoint", "none",
        "--micro-batch-size", "2", "--num-samples", "16", "--eval-samples", "0", "--device", "cpu", *extra,
    ]


def exit_code(argv: list[str]) -> int:
    """``mimo-train ARGV``'s exit status: argparse exits for a malformed flag, ``main`` returns for the rest."""
    try:
        return train.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).state_dict()


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


# --------------------------------------------------------------------------- the command line


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in SEED_FLAGS:
        assert flag in text, f"--help does not mention {flag}"
    for action in train.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--hidden-size", "100", "--num-attention-heads", "3"], "not divisible by num_attention_heads"),
        (["--audio-seq-len", "0"], "--audio-seq-len 0: the number of audio tokens must be a positive"),
        (["--data-path", "/no/such/folder"], "does not exist"),
        (["--load", "/no/such/run"], "--load: checkpoint /no/such/run does not exist"),
        (["--question-types", "vision,smell"], "unknown ['smell']"),
        (["--freeze-projectors"], "every component is frozen"),
        (["--vision-backbone-type", "hf-clip"], "needs --hf-vision-path"),
        (["--vision-tower-checkpoint", "/no/tower.safetensors"], "not found"),
        (["--num-frames", "10000"], "10,000 frames a second"),  # by arithmetic, before any sample is rendered
        (["--num-frames", "48", "--vision-temporal-compression", "1", "--max-sequence-length", "512"],
         "max_sequence_length is 512"),  # 48 frames x 16 cells = 768 video tokens
        (["--num-frames", "4", "--vision-temporal-compression", "8"], "--vision-temporal-compression"),
        (["--num-turns", "0"], "--num-turns must be at least 1"),
        (["--follow-up-types", "vision,taste"], "--follow-up-types: unknown ['taste']"),
        (["--data-path", "data_samples", "--num-turns", "2"], "--num-turns only applies to --data-path synthetic"),
        (["--false-claim-attributes", "shape,smell"], "--false-claim-attributes: unknown ['smell']"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--num-layers", "100000"], "more than this machine's"),
        (["--device", "cuda"], "no CUDA GPU is available"),
        (["--valid-fraction", "0.2"], "--valid-fraction only applies to a folder"),
        (["--valid-fraction", "1.5", "--data-path", "data_samples"], "--valid-fraction must be in [0, 1)"),
    ],
)
def test_bad_command_lines_fail_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(train, "run_training", lambda run: pytest.fail("training started"))
    started = time.perf_counter()
    assert exit_code([*argv, "--save", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) <= 2 or error.count("error:") == 1  # argparse adds a usage line
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 30, "a bad flag must fail at once, not after rendering data"


def test_the_seeds_command_runs_as_written(monkeypatch, capsys):
    """BEATs with 1,024 audio tokens: any --audio-seq-len works, and a fresh RoPE decoder grows to fit."""
    monkeypatch.chdir(ROOT)
    argv = ["--audio-backbone-type", "beats", "--audio-seq-len", "1024", "--num-frames", "8", "--num-layers", "2",
            "--hidden-size", "64", "--num-attention-heads", "2", "--vision-tower-checkpoint", "none",
            "--audio-tower-checkpoint", "none"]
    run = train.prepare_run(train.parse_args(argv))
    assert run.model_config.num_audio_tokens == 1024 and run.model_config.audio.backbone_type == "beats"
    assert run.model_config.language_model.max_sequence_length == 1088  # 1,040 + text, in multiples of 64
    assert "grows from 512 to 1088" in capsys.readouterr().out


@pytest.mark.parametrize("chunk, merged", [(0.25, 2), (0.5, 4)])
def test_the_interleaved_layout_is_one_flag_and_merges_frames_per_chunk(chunk, merged):
    argv = ["--av-layout", "interleaved", "--av-positions", "time", "--chunk-seconds", str(chunk), "--num-frames", "8"]
    config = train.resolve(train.parse_args(argv)).model_config
    assert (config.av_layout, config.av_positions, config.chunk_seconds) == ("interleaved", "time", chunk)
    assert config.projector.vision_temporal_compression == merged  # 8 frames in 1 s: the frames of one chunk
    assert config.num_video_tokens == 16 * 8 // merged  # 16 cells per merged frame group: a time axis is kept


@pytest.mark.parametrize("merged", [1, 2, 4])
def test_a_config_files_temporal_compression_is_kept_in_the_interleaved_layout(tmp_path, merged):
    """The frames-per-chunk default applies when a flag changes the chunk; a --config file's own value that fits it stays."""
    data = get_preset("toy").to_dict()  # interleaved, 4 frames a chunk
    data["projector"]["vision_temporal_compression"] = merged
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    config = train.resolve(train.parse_args(["--config", str(path)])).model_config
    assert config.av_layout == "interleaved" and config.projector.vision_temporal_compression == merged
    assert config.num_video_tokens == 16 * 8 // merged
    # a flag that changes the frames in a chunk re-derives it: 16 frames, 8 a chunk
    config = train.resolve(train.parse_args(["--config", str(path), "--num-frames", "16"])).model_config
    assert config.projector.vision_temporal_compression == 8


def test_a_save_path_that_is_a_file_or_a_bad_config_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "run_training", lambda run: pytest.fail("training started"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert exit_code(["--save", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"  # the user's file is left alone
    bad = tmp_path / "config.json"
    bad.write_text("[]")
    assert exit_code(["--config", str(bad)]) == 2
    assert "not a MIMOConfig JSON" in capsys.readouterr().err


def test_defaults_come_from_the_presets_recipe(tiny_json):
    recipe = get_recipe("toy").instruct
    run = train.resolve(train.parse_args(["--stage", "instruct"]))
    config = run.config
    assert config.recipe_version == get_recipe("toy").version
    assert (config.train_iters, config.micro_batch_size, config.lr, config.min_lr, config.weight_decay) == (
        recipe.train_iters, recipe.micro_batch_size, recipe.lr, recipe.min_lr, recipe.weight_decay)
    assert (config.num_samples, config.num_turns, config.question_types) == (
        recipe.num_samples, recipe.num_turns, recipe.question_types)
    assert config.warmup_iters == round(recipe.warmup_fraction * recipe.train_iters)
    assert run.model_config == get_preset("toy")
    align = train.resolve(train.parse_args(["--stage", "align"])).config
    assert align.question_types == ("caption",) and align.train_iters == get_recipe("toy").align.train_iters
    assert (align.freeze_language_model, align.freeze_projectors) == (True, False)
    tiny = train.resolve(train.parse_args(["--preset", "tiny", "--stage", "instruct"])).config
    assert tiny.train_iters == get_recipe("tiny").instruct.train_iters
    given = train.resolve(train.parse_args(["--stage", "instruct", "--lr", "2e-3", "--train-iters", "100"])).config
    assert (given.lr, given.min_lr, given.warmup_iters) == (2e-3, 2e-4, 5)  # min_lr follows a given lr: lr/10


# --------------------------------------------------------------------------- data order and schedule


def test_the_data_sampler_resumes_mid_epoch():
    sampler = train.DataSampler(7, seed=3)
    sampler.next_indices(5)
    state = sampler.state_dict()
    expected = [sampler.next_indices(5) for _ in range(4)]  # crosses two epoch boundaries
    resumed = train.DataSampler(7, seed=999)
    resumed.load_state_dict(state)
    assert [resumed.next_indices(5) for _ in range(4)] == expected
    first_epoch = train.DataSampler(7, seed=3).next_indices(7)
    assert sorted(first_epoch) == list(range(7))  # an epoch visits every sample once


def test_warmup_then_cosine_to_min_lr():
    schedule = WarmupCosineSchedule(lr=1.0, min_lr=0.1, warmup_iters=4, train_iters=14)
    assert [schedule(s) for s in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert schedule(9) == pytest.approx(0.55) and schedule(14) == pytest.approx(0.1)
    assert all(schedule(s) >= schedule(s + 1) for s in range(4, 14))


def test_raising_train_iters_continues_the_cosine_instead_of_rewarming():
    schedule = WarmupCosineSchedule(lr=1.0, min_lr=0.1, warmup_iters=4, train_iters=14)
    longer = schedule.extended_to(24, done_steps=9)
    assert [longer(s) for s in range(1, 10)] == [schedule(s) for s in range(1, 10)]  # the steps taken keep theirs
    assert longer(10) < longer(9) and longer(24) == pytest.approx(0.1)  # no jump up, same floor at the new end
    assert all(longer(s) >= longer(s + 1) for s in range(9, 24))
    assert WarmupCosineSchedule.from_state_dict(longer.state_dict()) == longer


# --------------------------------------------------------------------------- training runs


def test_a_short_synthetic_run_learns_and_writes_metrics_and_checkpoints(tiny_json, tmp_path):
    run = tmp_path / "run"
    argv = tiny_args(tiny_json, "--stage", "instruct", "--train-iters", "8", "--lr", "3e-3", "--warmup-iters", "1",
                     "--micro-batch-size", "4", "--save", str(run), "--save-interval", "4", "--eval-samples", "9")
    assert train.main(argv) == 0
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    for m in metrics:
        assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= m.keys()
    losses = [m["loss"] for m in metrics]
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.2, losses
    # evaluated at the end, on held-out clips of the recipe's question mix (9 samples: one per entry)
    assert set(metrics[-1]["eval"]) == set(get_recipe("toy").instruct.question_types) | {"all"}
    assert (run / "latest").read_text().strip() == "step-000008"
    assert [p.name for p in sorted(run.glob("step-*"))] == ["step-000004", "step-000008"]
    checkpoint = load_checkpoint(run)
    assert checkpoint.step == 8 and checkpoint.stage == "instruct" and checkpoint.metrics == metrics
    assert_equal_weights(checkpoint.model_state, weights(run / "final"))


def test_a_run_on_a_dataset_folder(tiny_json, tmp_path):
    run = tmp_path / "run"
    argv = tiny_args(tiny_json, "--data-path", str(DATA_SAMPLES), "--stage", "instruct", "--train-iters", "2",
                     "--eval-samples", "2", "--save", str(run))
    assert train.main(argv) == 0
    metrics = read_metrics(run)
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    assert "eval" in metrics[-1]
    assert load_checkpoint(run).step == 2


def latest_step(run: Path) -> int:
    try:
        return int((run / "latest").read_text().strip().removeprefix("step-"))
    except (FileNotFoundError, ValueError):
        return 0


def test_resume_after_sigkill_gives_the_same_weights(tiny_json, tmp_path):
    """Train 5 steps in one go; and train, SIGKILL once checkpoint 2 exists, resume to 5: equal weights."""
    total, kill_after = 5, 2
    argv = tiny_args(tiny_json, "--stage", "instruct", "--train-iters", str(total), "--save-interval", "1",
                     "--eval-samples", "2", "--eval-interval", "2")
    killed = tmp_path / "killed"
    # --stop-after is only a safety net: if this test is too slow to kill the run, it kills itself at step 4.
    command = [sys.executable, "-m", "mimo_lib.train", *argv, "--save", str(killed), "--stop-after", str(total - 1)]
    with open(tmp_path / "killed.log", "w") as log:
        # one thread, like this process (see one_thread): the same arithmetic on both sides of the kill
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if latest_step(killed) >= kill_after:
                process.send_signal(signal.SIGKILL)  # whatever it is doing: stepping, evaluating or saving
                break
            time.sleep(0.002)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    stopped_at = latest_step(killed)
    assert kill_after <= stopped_at < total

    assert train.main([*argv, "--save", str(killed), "--load", str(killed)]) == 0  # resume
    uninterrupted = tmp_path / "uninterrupted"
    assert train.main([*argv, "--save", str(uninterrupted)]) == 0

    assert_equal_weights(weights(killed / "final"), weights(uninterrupted / "final"))
    timing = ("tokens_per_s", "elapsed_s")
    resumed_log = [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(killed)]
    reference_log = [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(uninterrupted)]
    assert resumed_log == reference_log  # losses, learning rates, gradient norms and evaluations alike


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_json, tmp_path, capsys):
    run = tmp_path / "run"
    argv = tiny_args(tiny_json, "--stage", "instruct", "--train-iters", "6", "--save-interval", "1",
                     "--lr", "1e30", "--warmup-iters", "0", "--save", str(run))
    assert train.main(argv) == 1
    error = capsys.readouterr().err
    match = re.search(r"step (\d+): non-finite", error)
    assert match, error
    bad_step = int(match.group(1))
    assert bad_step >= 2, "the first step should still be finite at this learning rate"
    last_good = f"step-{bad_step - 1:06d}"
    assert last_good in error
    assert (run / "latest").read_text().strip() == last_good
    checkpoint = load_checkpoint(run)  # intact, and loadable
    assert checkpoint.step == bad_step - 1
    assert all(torch.isfinite(t).all() for t in checkpoint.model_state.values())
    assert not (run / "final").exists()


def test_a_resumed_run_keeps_its_data_and_an_extended_one_continues_its_schedule(tiny_json, tmp_path):
    run = tmp_path / "run"
    first = tiny_args(tiny_json, "--data-path", str(DATA_SAMPLES), "--valid-fraction", "0.2", "--stage", "instruct",
                      "--train-iters", "3", "--warmup-iters", "1", "--eval-samples", "2", "--save", str(run))
    assert train.main(first) == 0
    resumed = train.resolve(train.parse_args(["--stage", "instruct", "--load", str(run), "--train-iters", "5"])).config
    assert (resumed.data_path, resumed.valid_fraction, resumed.warmup_iters) == (str(DATA_SAMPLES), 0.2, 1)
    assert train.main(["--stage", "instruct", "--load", str(run), "--save", str(run), "--train-iters", "5"]) == 0
    lrs = [m["lr"] for m in read_metrics(run)]
    assert len(lrs) == 5 and all(a >= b for a, b in zip(lrs[1:], lrs[2:])), lrs  # no second warm-up
    assert lrs[-1] == pytest.approx(resumed.min_lr)


def test_align_trains_only_the_projectors_and_instruct_starts_from_it(tiny_json, tmp_path):
    align, instruct = tmp_path / "align", tmp_path / "instruct"
    assert train.main(tiny_args(tiny_json, "--stage", "align", "--seed", "1", "--train-iters", "2",
                                "--save", str(align))) == 0
    torch.manual_seed(1)
    initial = MIMOModel(tiny_config()).state_dict()  # what train built before its first step
    aligned = weights(align / "final")
    changed = {k for k in initial if not torch.equal(initial[k], aligned[k])}
    assert changed and all(k.startswith(("vision_projector.", "audio_projector.")) for k in changed), changed
    assert read_train_config(align)["question_types"] == ["caption"]

    assert train.main(tiny_args(tiny_json, "--stage", "instruct", "--seed", "2", "--train-iters", "2",
                                "--load", str(align), "--save", str(instruct))) == 0
    checkpoint = load_checkpoint(instruct)
    assert checkpoint.step == 2 and checkpoint.stage == "instruct"  # a fresh step counter ...
    assert [m["step"] for m in checkpoint.metrics] == [1, 2]
    assert float(checkpoint.optimizer_state["state"][0]["step"]) == 2  # ... and a fresh optimizer
    torch.manual_seed(2)
    other_init = MIMOModel(tiny_config()).state_dict()
    for key, value in checkpoint.model_state.items():
        if key.startswith(("vision_tower.", "audio_tower.")):  # frozen: still the align run's towers
            assert torch.equal(value, aligned[key]), key
    assert any(not torch.equal(aligned[k], other_init[k]) for k in aligned if k.startswith("vision_tower."))
    assert checkpoint.extra["initialized_from"] == str(align / "step-000002")


# --------------------------------------------------------------------------- evaluation and generation


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    return save_model_only(MIMOModel(tiny_config()), tmp_path_factory.mktemp("model") / "final", tokenizer)


def test_exact_match_scores_answers_up_to_eos(tiny_model_folder, tokenizer, monkeypatch):
    model = load_model(tiny_model_folder)
    dataset = SyntheticAVDataset(5, seed=3, config=evaluate.synthetic_config_for(model.config), tokenizer=tokenizer)
    answers = [dataset[i]["conversations"][1]["value"] for i in range(5)]
    calls = iter(range(100))

    def oracle(input_ids, video, audio, attention_mask, max_new_tokens, eos_token_id):
        call = next(calls)
        rows = []
        for row in range(input_ids.shape[0]):
            text = answers[row] if call == 0 and row != 1 else "wrong"  # the second question is answered wrongly
            ids = tokenizer.encode(" " + text) + [eos_token_id] + tokenizer.encode(" trailing")
            rows.append((ids + [eos_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)

    monkeypatch.setattr(model, "generate", oracle)
    accuracy = evaluate.evaluate_accuracy(model, dataset, tokenizer, batch_size=5)
    assert accuracy == {"vision": 1.0, "motion": 0.0, "audio": 1.0, "both": 1.0, "time": 1.0, "all": 0.8}


def test_shuffling_gives_every_sample_another_clip(tokenizer):
    dataset = SyntheticAVDataset(4, seed=0, tokenizer=tokenizer)
    batch = collate_av_batch([dataset[i] for i in range(4)], tokenizer.pad_id)
    shuffled = evaluate.ABLATIONS["video shuffled"](batch)
    for row in range(4):
        assert torch.equal(shuffled.video[row], batch.video[(row + 1) % 4])
    assert not evaluate.ABLATIONS["audio zeros"](batch).audio.any()
    assert batch.audio.any()  # the original batch is left alone


def test_evaluate_prints_accuracy_and_ablation_table(tiny_model_folder, capsys):
    assert evaluate.main(["--load", str(tiny_model_folder), "--num-samples", "5", "--batch-size", "5"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("condition"))
    for question_type in QUESTION_TYPES:
        assert question_type in header
    for condition in evaluate.ABLATIONS:
        assert re.search(rf"^{condition}\s+\d\.\d\d", out, re.M), condition


def test_run_ablations_returns_every_condition_and_type(tiny_model_folder, tokenizer):
    model = load_model(tiny_model_folder)
    dataset = SyntheticAVDataset(5, seed=9, config=evaluate.synthetic_config_for(model.config), tokenizer=tokenizer)
    results = evaluate.run_ablations(model, dataset, tokenizer, batch_size=5)
    assert list(results) == list(evaluate.ABLATIONS)
    for row in results.values():
        assert list(row) == [*QUESTION_TYPES, "all"] and all(0.0 <= v <= 1.0 for v in row.values())
    table = evaluate.format_table(results)
    assert len(table.splitlines()) == 1 + len(evaluate.ABLATIONS)


def test_generate_answers_about_a_clip(tiny_model_folder, capsys):
    argv = ["--load", str(tiny_model_folder), "--video", str(DATA_SAMPLES / "clip-00.mp4"),
            "--prompt", "What instrument is playing?", "--max-new-tokens", "6"]
    assert generate.main(argv) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.strip()  # an answer (gibberish from a random model, which may hold newlines)
    assert generate.main([*argv, "--audio", str(DATA_SAMPLES / "sound-01.wav"), "--do-sample", "--top-k", "5"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert generate.main(["--load", str(tiny_model_folder), "--video", "/no/clip.mp4", "--prompt", "Hi?"]) == 2  # a user error
    assert "/no/clip.mp4" in capsys.readouterr().err


# --------------------------------------------------------------------------- multi-turn data and the feature cache

def test_instruct_defaults_to_four_turn_conversations_with_follow_ups(tiny_json):
    config = train.resolve(train.parse_args(tiny_args(tiny_json, "--stage", "instruct"))).config
    assert config.num_turns == get_recipe("toy").instruct.num_turns == 4
    assert config.follow_up_types == train.FOLLOW_UP_TYPES
    assert "both" not in config.follow_up_types and "check" not in config.follow_up_types  # would be given away
    assert "time" in config.follow_up_types  # asked about a two-event clip's other event (test_synthetic)
    align = train.resolve(train.parse_args(tiny_args(tiny_json, "--stage", "align"))).config
    assert align.num_turns == 1


def test_check_questions_are_a_training_type_and_evaluation_scores_them(tiny_json):
    config = train.resolve(train.parse_args(tiny_args(tiny_json, "--stage", "instruct", "--question-types", "both,check,check"))).config
    assert config.question_types == ("both", "check", "check")  # repeats weight a type
    results = [{"question_type": t, "correct": ok} for t, ok in [("check", True), ("both", False), ("check", False)]]
    assert list(evaluate.accuracy_by_type(results).items()) == [("both", 0.0), ("check", 0.5), ("all", 1 / 3)]


def test_the_feature_cache_changes_no_number(tiny_json, tmp_path):
    """Frozen towers: cached tower outputs train bitwise like running the towers every step."""
    common = ("--stage", "instruct", "--train-iters", "3", "--micro-batch-size", "4", "--eval-samples", "0")
    cached = train.train(train.parse_args(tiny_args(tiny_json, *common, "--save", str(tmp_path / "a"))))
    uncached = train.train(train.parse_args(
        tiny_args(tiny_json, *common, "--no-cache-tower-features", "--save", str(tmp_path / "b"))
    ))
    for a, b in zip(cached.metrics, uncached.metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for name, tensor in cached.model.state_dict().items():
        torch.testing.assert_close(tensor, uncached.model.state_dict()[name], rtol=1e-4, atol=1e-6)
