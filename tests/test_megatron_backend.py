"""The ``megatron`` language-model backend keeps the ``local`` backend's contract, in one process.

megatron-core's parallel state is global, so the megatron side runs once in a
subprocess (this file run as a script, a one-process gloo group that
``MIMOModel(config, backend="megatron")`` starts by itself) and reports JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mimo_lib.config import get_preset
from mimo_lib.language_backends import LANGUAGE_BACKENDS, BackendError, build_language_model
from mimo_lib.language_model import GPTLanguageModel

ROOT = Path(__file__).resolve().parents[1]
HAVE_MEGATRON = importlib.util.find_spec("megatron") is not None


def test_local_backend_is_the_books_gpt() -> None:
    config = get_preset("tiny").language_model
    assert isinstance(build_language_model(config), GPTLanguageModel)
    assert LANGUAGE_BACKENDS == ("local", "megatron")


def test_an_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="choose one of"):
        build_language_model(get_preset("tiny").language_model, "jax")


def measure() -> dict:
    """Runs in the subprocess."""
    import warnings
    from dataclasses import replace

    warnings.filterwarnings("ignore")
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from tp_worker import make_batch, run

    from mimo_lib import megatron_compat as mc
    from mimo_lib.language_backends import MegatronLanguageModel, RecomputeCache
    from mimo_lib.model import MIMOModel

    torch.set_num_threads(1)
    report = {}
    base = get_preset("tiny")
    configs = {
        "rope-LayerNorm-gelu": base,
        "learned-RMSNorm-swiglu-tied": replace(
            base,
            language_model=replace(
                base.language_model, position_embedding_type="learned_absolute", normalization="RMSNorm",
                activation="swiglu", add_bias_linear=False, share_embeddings_and_output_weights=True,
                init_method_std=0.1,
            ),
        ),
    }
    built = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        local = MIMOModel(config).eval()
        megatron = MIMOModel(config, backend="megatron").eval()  # starts a one-process group by itself
        entry = {
            "adapter": type(megatron.language_model).__name__,
            "same_keys": sorted(local.state_dict()) == sorted(megatron.state_dict()),
            "state_values_are_tensors": all(isinstance(v, torch.Tensor) for v in megatron.state_dict().values()),
        }
        megatron.load_state_dict(local.state_dict(), strict=True)
        batch = make_batch(config)
        with torch.no_grad():
            a, b = run(local, batch), run(megatron, batch)
        real = a.combined.attention_mask
        entry["logits_max_abs_diff"] = (a.logits - b.logits).abs()[real].max().item()
        entry["loss"] = [a.loss.item(), b.loss.item()]
        # generation: left-padded prompts; local with its KV cache, megatron recomputing
        prompts = batch["input_ids"][:, :6].clone()
        prompts[3, 4:] = config.pad_token_id
        mask = prompts != config.pad_token_id
        new_local = local.generate(prompts, batch["video"], batch["audio"], attention_mask=mask, max_new_tokens=6, eos_token_id=2)
        new_megatron = megatron.generate(prompts, batch["video"], batch["audio"], attention_mask=mask, max_new_tokens=6, eos_token_id=2)
        entry["generated_equal"] = bool(torch.equal(new_local, new_megatron))
        entry["generated"] = new_megatron.tolist()
        report[name] = entry
        built[name] = megatron

    # the recompute cache gives the same last-position logits as one pass over the whole sequence
    lm = built["rope-LayerNorm-gelu"].language_model
    x = torch.randn(2, 7, base.language_model.hidden_size)
    with torch.no_grad():
        whole = lm(decoder_input=x).logits
        first = lm(decoder_input=x[:, :5], use_cache=True)
        step = lm(decoder_input=x[:, 5:], past_key_values=first.past_key_values, use_cache=True)
    report["recompute_cache"] = {
        "is_recompute": isinstance(first.past_key_values, RecomputeCache),
        "max_abs_diff": (step.logits - whole[:, 5:]).abs().max().item(),
        "shape": list(step.logits.shape),
    }
    # the CPU adaptations are on here (no CUDA), and only here
    report["cpu"] = {
        "on_cpu": mc.on_cpu(),
        "rotary": type(lm.rotary_pos_emb).__name__ if hasattr(lm, "rotary_pos_emb") else None,
        "buffer": type(mc.parallel_state._GLOBAL_MEMORY_BUFFER).__name__,
        "is_adapter": isinstance(lm, MegatronLanguageModel),
    }
    mc.destroy_megatron_cpu()
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    if not HAVE_MEGATRON:
        pytest.skip("megatron-core is not installed")
    result = subprocess.run([sys.executable, __file__], cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


NAMES = ["rope-LayerNorm-gelu", "learned-RMSNorm-swiglu-tied"]


@pytest.mark.parametrize("name", NAMES)
def test_same_parameter_names_and_no_empty_extra_state(report, name) -> None:
    r = report[name]
    assert r["adapter"] == "MegatronLanguageModel"
    assert r["same_keys"] and r["state_values_are_tensors"]  # so the safetensors checkpoint format works


@pytest.mark.parametrize("name", NAMES)
def test_same_logits_and_loss_as_local(report, name) -> None:
    r = report[name]
    assert r["logits_max_abs_diff"] < 1e-5
    assert r["loss"][1] == pytest.approx(r["loss"][0], abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_generation_without_kv_cache_gives_the_same_tokens(report, name) -> None:
    assert report[name]["generated_equal"], report[name]["generated"]


def test_recompute_cache_matches_one_pass(report) -> None:
    r = report["recompute_cache"]
    assert r["is_recompute"] and r["shape"][:2] == [2, 2]
    assert r["max_abs_diff"] < 1e-5


def test_cpu_adaptations_are_installed_without_cuda(report) -> None:
    assert report["cpu"] == {
        "on_cpu": True, "rotary": "CPURotaryEmbedding", "buffer": "CPUGlobalMemoryBuffer", "is_adapter": True
    }



# ----------------------------------------------------------------------------- the throughput benchmark


def test_benchmark_flops_count_for_the_1b_preset() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from megatron_throughput import model_flops_per_token

    config = get_preset("gpt-1b").language_model
    # 6 x (18 layers x (4 D^2 + 3 D F) + V D) + 12 x 18 x D x S
    d, f, v = 2048, 5632, 32_000
    expected = 6 * (18 * (4 * d * d + 3 * d * f) + v * d) + 12 * 18 * d * 2048
    assert model_flops_per_token(config, 2048) == expected
    assert 6.5e9 < expected < 7.0e9  # about 6 x 1.06B plus attention


@pytest.mark.skipif(not HAVE_MEGATRON, reason="megatron-core is not installed")
def test_benchmark_tiny_mode_runs_on_the_cpu() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "megatron_throughput.py"), "--tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["preset"] == "tiny" and r["precision"] == "fp32" and r["device"] == "cpu"
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["peak_memory_gib_rank0"] > 0
    assert r["first_loss"] == pytest.approx(5.94, abs=0.3)  # about ln(359): random init, random tokens

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure()))
