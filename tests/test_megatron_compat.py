"""Our GPTLanguageModel and megatron-core's GPTModel (local spec) compute the same logits from the same weights.

megatron-core needs a process group and global parallel state, which would leak
into other tests; so the Megatron side runs once, in a subprocess (this file run
as a script), and reports its measurements as JSON. Skipped, with the reason,
when megatron-core cannot be imported.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mimo_lib.config import LanguageModelConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("megatron") is None, reason="megatron-core is not installed")

ROOT = Path(__file__).resolve().parents[1]
SMALL = LanguageModelConfig(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    ffn_hidden_size=128,
    max_sequence_length=64,
    init_method_std=0.1,  # larger than Megatron's default so the logits are far from uniform
)
CASES = {
    "rope-LayerNorm-gelu-bias": SMALL,
    "rope-RMSNorm-swiglu-nobias": replace(SMALL, normalization="RMSNorm", activation="swiglu", add_bias_linear=False),
    "learned-LayerNorm-gelu-tied": replace(
        SMALL, position_embedding_type="learned_absolute", share_embeddings_and_output_weights=True
    ),
    "rope-base500-RMSNorm-gelu-tied": replace(
        SMALL, rotary_base=500, normalization="RMSNorm", share_embeddings_and_output_weights=True
    ),
}


def compare_in_this_process() -> dict:
    """Build both models for every case and measure how far apart they are (runs in the subprocess)."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from mimo_lib import megatron_compat as mc
    except ImportError as error:
        return {"skip": f"megatron-core cannot be imported: {error}"}
    import torch

    from mimo_lib.language_model import GPTLanguageModel

    mc.init_megatron_cpu(seed=0)
    report = {}
    for name, config in CASES.items():
        torch.manual_seed(0)
        ours = GPTLanguageModel(config).eval()
        megatron = mc.build_megatron_gpt(config).eval()
        megatron.load_state_dict(mc.to_megatron_state_dict(ours.state_dict()), strict=True)
        ids = torch.randint(0, config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ours_out = ours(input_ids=ids, labels=ids)
            theirs = mc.megatron_logits(megatron, ids)
            # Megatron's labels are already shifted: run it on ids[:, :-1] against ids[:, 1:]
            seq = ids.shape[1] - 1
            theirs_loss = megatron(
                ids[:, :-1], torch.arange(seq).expand(2, seq), mc.causal_attention_mask(seq), labels=ids[:, 1:]
            ).mean()
        # and back: Megatron's own initialisation, loaded into ours
        torch.manual_seed(1)
        fresh = mc.build_megatron_gpt(config).eval()
        back = GPTLanguageModel(config).eval()
        back.load_state_dict(mc.from_megatron_state_dict(fresh.state_dict()), strict=True)
        with torch.no_grad():
            back_diff = (back(input_ids=ids).logits - mc.megatron_logits(fresh, ids)).abs().max().item()
        ours_state, fresh_state = ours.state_dict(), fresh.state_dict()
        init = {  # (ours, Megatron's) std of each freshly initialised tensor; norms and biases: (min, max)
            key: [ours_state[key].std().item(), fresh_state[key].std().item()]
            if ours_state[key].dim() == 2
            else [
                ours_state[key].min().item(),
                ours_state[key].max().item(),
                fresh_state[key].min().item(),
                fresh_state[key].max().item(),
            ]
            for key in ours_state
        }
        report[name] = {
            "init": init,
            "shape": list(theirs.shape),
            "logits_max_abs_diff": (ours_out.logits - theirs).abs().max().item(),
            "logits_scale": theirs.abs().max().item(),
            "loss_ours": ours_out.loss.item(),
            "loss_megatron": theirs_loss.item(),
            "from_megatron_max_abs_diff": back_diff,
            "megatron_keys_without_extra_state": sorted(
                k for k in fresh.state_dict() if not k.endswith("._extra_state")
            ),
            "our_keys": sorted(ours.state_dict()),
        }
    # a sanity check of the comparison itself: a wrong weight must show up
    config = CASES["rope-LayerNorm-gelu-bias"]
    torch.manual_seed(0)
    ours = GPTLanguageModel(config).eval()
    megatron = mc.build_megatron_gpt(config).eval()
    state = mc.to_megatron_state_dict(ours.state_dict())
    key = "decoder.layers.0.self_attention.linear_qkv.weight"
    heads, head_dim, d = config.num_attention_heads, config.head_dim, config.hidden_size
    per_head = state[key].view(heads, 3, head_dim, d)  # Megatron: per head [q; k; v]
    state[key] = per_head.permute(1, 0, 2, 3).reshape(3 * d, d)  # the other convention: [all q; all k; all v]
    megatron.load_state_dict(state, strict=True)
    with torch.no_grad():
        wrong = (ours(input_ids=ids).logits - mc.megatron_logits(megatron, ids)).abs().max().item()
    report["wrong_qkv_layout_max_abs_diff"] = wrong
    mc.destroy_megatron_cpu()
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    result = subprocess.run([sys.executable, __file__], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in data:
        pytest.skip(data["skip"])
    return data


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_megatron_gpt_model(report: dict, name: str) -> None:
    r = report[name]
    assert r["shape"] == [2, 11, CASES[name].padded_vocab_size]
    assert r["logits_scale"] > 1.0  # not a trivially small comparison
    assert r["logits_max_abs_diff"] < 1e-4, r["logits_max_abs_diff"]
    assert r["from_megatron_max_abs_diff"] < 1e-4, r["from_megatron_max_abs_diff"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_megatron_with_shifted_labels(report: dict, name: str) -> None:
    r = report[name]
    assert r["loss_ours"] == pytest.approx(r["loss_megatron"], rel=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_names_are_megatron_names(report: dict, name: str) -> None:
    assert report[name]["our_keys"] == report[name]["megatron_keys_without_extra_state"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_initialisation_matches_megatron(report: dict, name: str) -> None:
    for key, stats in report[name]["init"].items():
        if len(stats) == 2:  # a weight matrix: the same std (different seeds, so only roughly)
            assert stats[0] == pytest.approx(stats[1], rel=0.1), key
        else:  # a norm weight (ones) or a bias (zeros): exactly the same constant
            assert stats[0] == stats[1] == stats[2] == stats[3], key
    proj = report[name]["init"]["decoder.layers.0.self_attention.linear_proj.weight"]
    assert proj[1] == pytest.approx(0.1 / 2, rel=0.1)  # std / sqrt(2 * num_layers), num_layers = 2


def test_a_wrong_qkv_layout_is_detected(report: dict) -> None:
    # "all q, then all k, then all v" instead of Megatron's per-head [q; k; v]
    assert report["wrong_qkv_layout_max_abs_diff"] > 1e-2



def test_cpu_adaptations_apply_only_without_cuda(monkeypatch) -> None:
    """With CUDA present, weights are made on the device and no CPU buffer is installed (nothing is patched)."""
    import torch

    from mimo_lib import megatron_compat as mc

    assert mc.on_cpu() == (not torch.cuda.is_available())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not mc.on_cpu()
    assert mc.megatron_transformer_config(SMALL).use_cpu_initialization is False
    before = mc.parallel_state._GLOBAL_MEMORY_BUFFER
    mc.install_cpu_memory_buffer()
    assert mc.parallel_state._GLOBAL_MEMORY_BUFFER is before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mc.megatron_transformer_config(SMALL).use_cpu_initialization is True
    bf16 = mc.megatron_transformer_config(SMALL, params_dtype=torch.bfloat16)
    assert bf16.params_dtype == torch.bfloat16 and bf16.bf16

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(compare_in_this_process()))
