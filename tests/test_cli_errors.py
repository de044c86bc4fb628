"""Every bad command line of generate, evaluate, checkpoint and make_samples: one clear line, a non-zero exit,
no traceback. Most cases run ``main(argv)`` in-process (what a subprocess would run, minus the start-up);
one subprocess per command checks the real exit code, stderr and that no traceback or torch note is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mimo_lib import checkpoint, evaluate, generate
from mimo_lib.data import make_samples

MIMO_TOY = Path(__file__).resolve().parents[1] / "mimo_lib" / "pretrained" / "mimo_toy"
DATA_SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def run_main(main, argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, err


def damaged_copy(tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "toy"
    shutil.copytree(MIMO_TOY, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    weights.write_bytes(bytes(data))
    return folder


CASES = [
    # (module, argv, message)
    (generate, ["--load", str(MIMO_TOY)], "give --prompt"),
    (generate, ["--load", str(MIMO_TOY), "--prompt", "What?"], "give --video"),
    (generate, ["--load", str(MIMO_TOY), "--video", "x.mp4", "--prompt", "q", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (generate, ["--load", str(MIMO_TOY), "--video", "x.mp4", "--prompt", "q", "--seed", "-1"], "--seed must be at least 0"),
    (generate, ["--load", str(MIMO_TOY), "--audio", "x.wav", "--no-audio", "--prompt", "q"], "contradict"),
    (generate, ["--load", str(MIMO_TOY), "--video", "x.mp4", "--prompt", "q", "--device", "cuda"], "no CUDA GPU"),
    (evaluate, ["--load", str(MIMO_TOY), "--valid-fraction", "1.5"], "--valid-fraction must be at least 0"),
    (evaluate, ["--load", str(MIMO_TOY), "--seed", "-1"], "--seed must be at least 0"),
    (evaluate, ["--load", str(MIMO_TOY), "--question-types", "colour"], "--question-types: unknown"),
    (evaluate, ["--load", str(MIMO_TOY), "--device", "cuda:0"], "no CUDA GPU"),
    (evaluate, ["--load", str(MIMO_TOY), "--data-path", str(DATA_SAMPLES / "clip-00.mp4")], "not an annotation file"),
    (evaluate, ["--load", "nowhere"], "checkpoint nowhere does not exist"),
]


@pytest.mark.parametrize(("module", "argv", "message"), CASES, ids=[f"{m.__name__.split('.')[-1]}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_bad_flags_give_one_clear_line(module, argv, message, capsys):
    if "cuda" in " ".join(argv):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    code, err = run_main(module.main, argv, capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"{module.build_parser().prog}: error:")


def test_generate_refuses_bad_inputs_after_loading(tmp_path, capsys):
    clip = str(DATA_SAMPLES / "clip-00.mp4")
    code, err = run_main(generate.main, ["--load", str(MIMO_TOY), "--video", clip, "--prompt", "q", "--max-new-tokens", "1000"], capsys)
    assert code == 2 and "--max-new-tokens 1000 does not fit" in err and "512 positions" in err
    code, err = run_main(generate.main, ["--load", str(damaged_copy(tmp_path)), "--video", clip, "--prompt", "q"], capsys)
    assert code == 2 and "model.safetensors is corrupt" in err
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"prompt": "What?", "video": "missing.mp4"}) + "\n")
    code, err = run_main(generate.main, ["--load", str(MIMO_TOY), "--questions", str(questions)], capsys)
    assert code == 2 and "questions.jsonl:1" in err and "missing.mp4" in err


def test_generate_asks_several_questions_and_stops_at_repetition(tmp_path, capsys):
    clip = str(DATA_SAMPLES / "clip-00.mp4")
    assert generate.main(["--load", str(MIMO_TOY), "--video", clip, "--prompt", "What shape is it?", "--prompt", "What instrument is playing?", "--no-audio"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)
    assert generate.stop_at_repetition("That is a flute. That is a flute. ........") == "That is a flute."
    assert generate.readable("a\x1b[2Jb\ufffd", "ascii") == "a\\x1b[2Jb\\ufffd"


def test_checkpoint_cli(tmp_path, capsys):
    code, err = run_main(checkpoint.main, ["check", str(damaged_copy(tmp_path))], capsys)
    assert code == 2 and "model.safetensors is corrupt" in err and "Traceback" not in err
    code, err = run_main(checkpoint.main, ["record", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "is not a model folder" in err


def test_make_samples_refuses_a_file_as_out(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, err = run_main(make_samples.main, ["--out", str(target)], capsys)
    assert code == 2 and "is a file; pass a folder" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "mimo_lib.generate", "--load", str(MIMO_TOY), "--prompt", "q", "--video", "x.mp4", "--seed", "-1"], "--seed must be at least 0"),
        (["-m", "mimo_lib.evaluate", "--load", str(MIMO_TOY), "--seed", "-1"], "--seed must be at least 0"),
    ],
)
def test_a_real_command_line_prints_one_line_and_no_noise(argv, message):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and "No CUDA runtime" not in done.stderr
    assert done.stdout == ""
