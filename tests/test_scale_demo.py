"""mimo_lib.scale_demo, chapter 9's torchrun program: its batch, and one TP=2 run against one local process.

The two-process test launches ``torchrun --nproc_per_node=2 -m mimo_lib.scale_demo`` once on a
tiny saved model (gloo, CPU, about 20 s on two cores, most of it start-up) and checks its JSON
report against the same model run in this process: logits at every real position, the loss,
megatron-core's ``MimoModel`` loss, the weights after the SGD step, and what each rank holds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimo_lib.checkpoint import load_model, save_model_only
from mimo_lib.config import get_preset
from mimo_lib.model import MIMOModel
from mimo_lib.scale_demo import SHOWN_SHARDS, demo_batch, main, parameters_held, run_model, sgd_step

ROOT = Path(__file__).resolve().parents[1]
HAVE_MEGATRON = importlib.util.find_spec("megatron") is not None
LR = 0.1


def test_demo_batch_is_a_pure_function_of_its_seed() -> None:
    config = get_preset("tiny")
    a, b, c = demo_batch(config, seed=1), demo_batch(config, seed=1), demo_batch(config, seed=2)
    assert sorted(a) == ["attention_mask", "audio", "input_ids", "labels", "video"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_demo_batch_has_padding_placeholders_and_answer_labels() -> None:
    config = get_preset("tiny")
    batch = demo_batch(config, batch_size=4)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert mask.sum(dim=1).tolist() == [14, 11, 8, 14]  # right padding of different lengths
    assert (ids[~mask] == config.pad_token_id).all() and (labels[~mask] == config.ignore_index).all()
    assert (labels[:, :6] == config.ignore_index).all() and (labels[mask & (torch.arange(14) >= 6)] >= 0).all()
    has_video = (ids == config.video_token_id).sum(dim=1).tolist()
    has_audio = (ids == config.audio_token_id).sum(dim=1).tolist()
    assert has_video == [1, 0, 1, 0] and has_audio == [1, 1, 0, 0]  # both, audio only, video only, text only
    assert batch["video"].shape == (4, config.vision.num_frames, 3, config.vision.image_size, config.vision.image_size)
    assert batch["audio"].shape == (4, config.audio.num_samples)


def test_parameters_held_splits_decoder_from_the_rest() -> None:
    model = MIMOModel(get_preset("tiny"))
    held = parameters_held(model)
    assert held["decoder"] == sum(p.numel() for p in model.language_model.parameters())
    assert held["decoder"] + held["towers_and_projectors"] == held["total"] == sum(p.numel() for p in model.parameters())


def test_a_tp_size_without_a_launcher_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    if not HAVE_MEGATRON:
        pytest.skip("megatron-core is not installed")
    status = main(["--model", str(tmp_path), "--tensor-model-parallel-size", "3", "--out", str(tmp_path / "r.json")])
    assert status == 2
    assert "mimo_lib.scale_demo: error:" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tp2(tmp_path_factory) -> tuple[dict, Path, MIMOModel]:
    """(report, folder of the model after the step, the model before it) of one TP=2 run on a tiny model."""
    if not HAVE_MEGATRON:
        pytest.skip("megatron-core is not installed")
    folder = tmp_path_factory.mktemp("scale_demo")
    torch.manual_seed(0)
    model = MIMOModel(get_preset("tiny")).eval()
    save_model_only(model, folder / "model")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
        "-m", "mimo_lib.scale_demo", "--model", str(folder / "model"), "--tensor-model-parallel-size", "2",
        "--out", str(folder / "report.json"), "--save", str(folder / "after"), "--lr", str(LR), "--megatron-mimo",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "2 processes = TP 2 x DP 1 on gloo (cpu)" in result.stdout
    return json.loads((folder / "report.json").read_text()), folder / "after", model


def test_tp2_report_matches_one_local_process(tp2) -> None:
    report, _, model = tp2
    assert (report["world_size"], report["tp_size"], report["dp_size"], report["backend"]) == (2, 2, 1, "gloo")
    batch = demo_batch(model.config)
    with torch.no_grad():
        out = run_model(model, batch)
    real = out.combined.attention_mask
    assert [len(row) for row in report["logits"]] == real.sum(dim=1).tolist()
    logits = torch.cat([torch.tensor(row) for row in report["logits"]])  # (real positions, V)
    torch.testing.assert_close(logits, out.logits[real], atol=1e-5, rtol=0)
    assert report["loss"] == pytest.approx(out.loss.item(), abs=1e-5)
    assert report["megatron_mimo_loss"] == pytest.approx(out.loss.item(), abs=1e-5)


def test_tp2_step_matches_one_local_process(tp2) -> None:
    _, after, model = tp2
    reference = MIMOModel(model.config)
    reference.load_state_dict(model.state_dict())
    out = run_model(reference.train(), demo_batch(model.config))
    out.loss.backward()
    sgd_step(reference, LR)
    expected, got = reference.state_dict(), load_model(after).state_dict()
    assert sorted(expected) == sorted(got)
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) < 1e-5


def test_tp2_ranks_hold_half_the_decoder(tp2) -> None:
    report, _, model = tp2
    full = parameters_held(model)
    ranks = report["ranks"]
    assert [(r["rank"], r["tp_rank"], r["dp_rank"], r["rows"]) for r in ranks] == [(0, 0, 0, [0, 1, 2, 3]), (1, 1, 0, [0, 1, 2, 3])]
    for rank in ranks:
        held = rank["parameters"]
        assert held["towers_and_projectors"] == full["towers_and_projectors"]  # copied
        assert full["decoder"] / 2 <= held["decoder"] < 0.6 * full["decoder"]  # split, norms and some biases copied
        state = model.state_dict()
        for key in SHOWN_SHARDS:
            shape = rank["shards"][key.removeprefix("language_model.")]
            assert shape[0] * shape[1] * 2 == state[key].numel(), key
