"""``mimo-train`` at scale: the same command under torchrun, tensor- and data-parallel, on two CPU processes.

Every run starts from one model folder (``--load``, fresh optimizer), so the runs can be compared:

* TP = 2 (two processes, gloo) trains like the one-process ``local`` backend: the same losses and, after
  the same steps, the same weights up to float noise;
* a TP = 2 checkpoint holds the TP = 1 layout: the local backend loads its model, and resuming it at
  TP = 2 from a step folder gives bitwise the weights of the uninterrupted run;
* DP = 2 with micro-batch b trains like one process with micro-batch 2b.

Each torchrun takes about 15-25 s on a busy 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimo_lib import train
from mimo_lib.checkpoint import load_model, save_model_only
from mimo_lib.config import get_preset
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(importlib.util.find_spec("megatron") is None, reason="megatron-core is not installed"),
]
LR = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """A tiny model folder every run starts from."""
    torch.manual_seed(0)
    return save_model_only(MIMOModel(get_preset("tiny")), tmp_path_factory.mktemp("start") / "model", Tokenizer.default())


def flags(start: Path, *extra: str) -> list[str]:
    return ["--stage", "instruct", "--load", str(start), "--preset", "tiny", "--num-samples", "16", "--lr", str(LR),
            "--warmup-iters", "1", "--eval-samples", "0", "--seed", "3", *extra]


def torchrun(argv: list[str], log: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               "-m", "mimo_lib.train", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=600)
    assert result.returncode == 0, log.read_text()[-3000:]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_close_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


def test_tensor_parallel_training_matches_one_process_and_resumes_exactly(start, tmp_path):
    tp2, local = tmp_path / "tp2", tmp_path / "local"
    common = flags(start, "--micro-batch-size", "4", "--train-iters", "4", "--save-interval", "2")
    torchrun([*common, "--backend", "megatron", "--tensor-model-parallel-size", "2", "--save", str(tp2)], tmp_path / "tp2.log")
    assert train.main([*common, "--save", str(local)]) == 0

    # the same losses, and the same weights up to float noise (Adam's first steps move each weight by about lr)
    torch.testing.assert_close(losses(tp2), losses(local), rtol=1e-4, atol=1e-5)
    tp2_model = load_model(tp2 / "final")  # the TP=2 run's model, read by the local backend
    assert_close_weights(tp2_model.state_dict(), load_model(local / "final").state_dict(), atol=0.1 * LR)

    # resume the TP=2 run from its step-2 checkpoint, at TP=2: bitwise the uninterrupted run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tp2 / "step-000002", resumed / "step-000002")
    (resumed / "latest").write_text("step-000002\n")
    torchrun(["--stage", "instruct", "--load", str(resumed), "--save", str(resumed), "--backend", "megatron",
              "--tensor-model-parallel-size", "2"], tmp_path / "resumed.log")
    a, b = load_model(resumed / "final").state_dict(), tp2_model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert losses(resumed) == losses(tp2)


def test_data_parallel_training_equals_one_process_with_the_whole_batch(start, tmp_path):
    dp2, whole = tmp_path / "dp2", tmp_path / "whole"
    common = flags(start, "--train-iters", "3", "--backend", "megatron")
    torchrun([*common, "--tensor-model-parallel-size", "1", "--micro-batch-size", "2", "--save", str(dp2)],
             tmp_path / "dp2.log")
    assert train.main([*common, "--micro-batch-size", "4", "--save", str(whole)]) == 0
    torch.testing.assert_close(losses(dp2), losses(whole), rtol=1e-5, atol=1e-6)
    assert_close_weights(load_model(dp2 / "final").state_dict(), load_model(whole / "final").state_dict(), atol=0.1 * LR)
    metrics = json.loads((dp2 / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["step"] == 1


def test_scale_out_mistakes_fail_before_any_work(capsys, start):
    assert train.main(["--backend", "megatron", "--tensor-model-parallel-size", "2"]) == 2
    assert "torchrun --nproc_per_node=2" in capsys.readouterr().err
    assert train.main(["--tensor-model-parallel-size", "2"]) == 2
    assert "needs --backend megatron" in capsys.readouterr().err
    assert train.main(["--backend", "megatron", "--hidden-size", "96", "--num-attention-heads", "3",
                       "--tensor-model-parallel-size", "2"]) == 2
    assert "error:" in capsys.readouterr().err
    assert train.main(["--micro-batch-size", "3", "--global-batch-size", "8"]) == 2
    assert "--global-batch-size 8 is not divisible" in capsys.readouterr().err
