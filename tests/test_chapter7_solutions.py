"""The worked solutions of chapter 7's exercises, run and checked.

The chapter keeps its solutions folded in ``<details>`` blocks (no answer in a stored output); these
tests run the ones that make a claim a student could check, on runs small enough for the test suite.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from mimo_lib.config import get_preset
from mimo_lib.constants import HELD_OUT_SEED_OFFSET
from mimo_lib.data.dataset import SyntheticAVDataset
from mimo_lib.data.synthetic import QUESTION_TYPES, synthetic_config_for
from mimo_lib.evaluate import build_dataset, evaluate_accuracy
from mimo_lib.feature_cache import TowerFeatureCache
from mimo_lib.model import MIMOModel
from mimo_lib.optim import make_optimizer
from mimo_lib.recipes import get_recipe
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.towers import shipped_checkpoint
from mimo_lib.train import parse_args, train, train_step, training_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LR, WEIGHT_DECAY, CLIP, BETA1, BETA2, EPS = 1e-3, 0.1, 1.0, 0.9, 0.999, 1e-8


def test_exercise_1_align_alone_answers_nothing(tmp_path):
    """A short align run on the toy model: the decoder is random and frozen, so exact match stays near 0."""
    result = train(parse_args([
        "--stage", "align", "--train-iters", "10", "--micro-batch-size", "8", "--num-samples", "32",
        "--eval-samples", "0", "--save", str(tmp_path / "align"),
    ]))
    tok = Tokenizer.default()
    held_out = build_dataset("synthetic", get_preset("toy"), tok, 20, HELD_OUT_SEED_OFFSET, QUESTION_TYPES)
    accuracy = evaluate_accuracy(result.model, held_out, tok, batch_size=10)
    assert set(QUESTION_TYPES) <= set(accuracy)
    assert accuracy["all"] < 0.2


def test_exercise_3_changed_lr_on_resume_warns_and_changes_the_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--preset", "tiny", "--stage", "instruct", "--micro-batch-size", "4", "--num-samples", "32",
              "--train-iters", "8", "--save-interval", "2", "--eval-samples", "0",
              "--vision-tower-checkpoint", "none", "--audio-tower-checkpoint", "none"]
    straight = train(parse_args(common + ["--save", "straight", "--threads", "1"]))
    crashed = subprocess.run(
        [sys.executable, "-m", "mimo_lib.train", *common, "--save", "crashed-2", "--stop-after", "4", "--threads", "1"],
        capture_output=True, text=True,
    )
    assert crashed.returncode != 0, crashed.stderr
    capsys.readouterr()
    other_lr = train(parse_args(common + ["--lr", "8e-4", "--save", "crashed-2", "--load", "crashed-2", "--threads", "1"]))
    printed = capsys.readouterr().out
    assert "not an exact resume" in printed and "--lr 0.001 -> 0.0008" in printed, printed
    assert other_lr.metrics[-1]["step"] == 8
    a, c = straight.model.state_dict(), other_lr.model.state_dict()
    assert any(not torch.equal(a[name], c[name]) for name in a)


@pytest.fixture(scope="module")
def toy_examples():
    tok = Tokenizer.default()
    config = get_preset("toy")
    return config, tok, SyntheticAVDataset(10, seed=3, config=synthetic_config_for(config), tokenizer=tok)


def fresh_model(config) -> MIMOModel:
    torch.manual_seed(0)
    model = MIMOModel(config)
    model.load_towers(shipped_checkpoint("vision"), shipped_checkpoint("audio"))
    model.set_trainable(towers=False, projectors=True, language_model=True)
    return model.train()


def test_exercise_4_cache_bytes_per_clip(toy_examples):
    config, tok, examples = toy_examples
    model = fresh_model(config)
    cache = TowerFeatureCache(model, examples, tok.pad_id)
    cache.batch(list(range(len(examples))))  # encode every clip
    per_clip = (config.vision.num_tokens * model.vision_tower.output_size
                + config.audio.audio_seq_len * model.audio_tower.output_size) * 4
    held = sum(t.numel() * t.element_size() for t in cache.features.values() if t is not None)
    assert held == len(cache) * per_clip
    assert per_clip == 78_336  # the number the solution states
    assert round(get_recipe("toy").instruct.num_samples * per_clip / 1e9, 2) == 0.80  # the solution: 10,240 clips


def one_step_decaying_everything(model, batch, lr=LR):
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = [p for p in trainable if p.dim() >= 2] + [p for p in trainable if p.dim() < 2]
    loss, _ = training_loss(model, batch)
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    scale = torch.clamp(CLIP / (norm + 1e-6), max=1.0)
    with torch.no_grad():
        for p in params:
            g = p.grad.mul_(scale)
            m, v = torch.zeros_like(p), torch.zeros_like(p)
            p.mul_(1 - lr * WEIGHT_DECAY)  # every parameter
            m.lerp_(g, 1 - BETA1)
            v.mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
            p.addcdiv_(m, (v.sqrt() / (1 - BETA2) ** 0.5).add_(EPS), value=-lr / (1 - BETA1))
            p.grad = None


def test_exercise_5_decaying_everything_changes_only_the_nonzero_1d_parameters_after_one_step(toy_examples):
    config, tok, examples = toy_examples
    a, b = fresh_model(config), fresh_model(config)
    batch = TowerFeatureCache(a, examples, tok.pad_id).batch([0, 1, 2, 3])
    one_step_decaying_everything(a, batch)
    optimizer, _ = make_optimizer(b.named_parameters(), LR, WEIGHT_DECAY)
    train_step(b, batch, optimizer, LR, CLIP, 1, None)
    differ = [n for (n, p), q in zip(a.named_parameters(), b.parameters()) if not torch.equal(p, q)]
    one_d = [n for n, p in fresh_model(config).named_parameters() if p.requires_grad and p.dim() < 2]
    nonzero = [n for n, p in fresh_model(config).named_parameters() if p.requires_grad and p.dim() < 2 and p.any()]
    assert len(nonzero) < len(one_d)  # biases start at zero: decaying zero leaves zero
    assert sorted(differ) == sorted(nonzero)
    assert not math.isnan(sum(p.sum().item() for p in a.parameters()))
