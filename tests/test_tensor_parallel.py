"""Tensor and data parallelism: split/merge of state dicts, the start-up checks, and two-process parity.

The parity tests launch ``torchrun --nproc_per_node=2 tests/tp_worker.py`` once
(gloo, CPU, about 20 s on two cores) and read the measurements it reports: TP=2
against the one-process local model (logits, loss, weights after a step) for a
GeLU/LayerNorm/bias and a SwiGLU/RMSNorm/no-bias decoder; DP=2 against one
process with the whole batch; a TP=2 model folder loaded at TP=1; the shipped
mimo_toy answering at TP=2; megatron-core's ``MimoModel`` against ``MIMOModel``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mimo_lib.config import LanguageModelConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.language_model import GPTLanguageModel
from mimo_lib.parallel import (
    MegatronCoreError,
    ParallelConfigError,
    check_batch_sizes,
    check_distributed_environment,
    check_megatron_core,
    check_parallel_setup,
    check_world_size,
    shard_batch_indices,
)
from mimo_lib.tp_convert import (
    TensorParallelSizeError,
    check_tensor_parallel_size,
    merge_state_dicts,
    split_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
HAVE_MEGATRON = importlib.util.find_spec("megatron") is not None

SMALL = LanguageModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, vocab_size=100)
SHAPES = {
    "gelu-LayerNorm-bias": SMALL,
    "swiglu-RMSNorm-nobias": replace(SMALL, activation="swiglu", normalization="RMSNorm", add_bias_linear=False),
    "learned-tied": replace(SMALL, position_embedding_type="learned_absolute", share_embeddings_and_output_weights=True),
}


# ----------------------------------------------------------------------------- split and merge


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_split_then_merge_is_the_identity(name: str, tp: int) -> None:
    config = SHAPES[name]
    full = GPTLanguageModel(config).state_dict()
    shards = split_state_dict(full, config, tp)
    assert len(shards) == tp
    merged = merge_state_dicts(shards, config)
    assert sorted(merged) == sorted(full)
    for key in full:
        assert torch.equal(merged[key], full[key]), key


def test_each_shard_has_the_expected_slices() -> None:
    config = SHAPES["gelu-LayerNorm-bias"]
    full = GPTLanguageModel(config).state_dict()
    rank1 = split_state_dict(full, config, 2)[1]
    d, v = config.hidden_size, config.padded_vocab_size
    layer = "decoder.layers.0."
    assert torch.equal(rank1["embedding.word_embeddings.weight"], full["embedding.word_embeddings.weight"][v // 2 :])
    assert torch.equal(rank1["output_layer.weight"], full["output_layer.weight"][v // 2 :])
    # per-head QKV: rank 1 holds heads 2 and 3 whole, i.e. the second half of the rows
    qkv = full[layer + "self_attention.linear_qkv.weight"]
    assert torch.equal(rank1[layer + "self_attention.linear_qkv.weight"], qkv[3 * d // 2 :])
    # row-parallel: columns split, bias whole (added once after the all-reduce)
    proj = full[layer + "self_attention.linear_proj.weight"]
    assert torch.equal(rank1[layer + "self_attention.linear_proj.weight"], proj[:, d // 2 :])
    assert torch.equal(rank1[layer + "self_attention.linear_proj.bias"], full[layer + "self_attention.linear_proj.bias"])
    assert torch.equal(rank1[layer + "mlp.linear_fc2.bias"], full[layer + "mlp.linear_fc2.bias"])
    assert torch.equal(rank1[layer + "input_layernorm.weight"], full[layer + "input_layernorm.weight"])


def test_swiglu_fc1_shards_pair_gate_and_up_of_the_same_features() -> None:
    config = SHAPES["swiglu-RMSNorm-nobias"]
    full = GPTLanguageModel(config).state_dict()
    key = "decoder.layers.0.mlp.linear_fc1.weight"
    f = config.ffn_hidden_size
    gate, up = full[key][:f], full[key][f:]
    for tp in (2, 4):
        for rank, shard in enumerate(split_state_dict(full, config, tp)):
            rows = slice(rank * f // tp, (rank + 1) * f // tp)
            assert torch.equal(shard[key], torch.cat([gate[rows], up[rows]]))
            # a plain contiguous split would be something else
            assert not torch.equal(shard[key], full[key].chunk(tp)[rank])


def test_split_works_under_a_prefix_and_leaves_other_keys_whole() -> None:
    config = SHAPES["gelu-LayerNorm-bias"]
    state = {f"language_model.{k}": t for k, t in GPTLanguageModel(config).state_dict().items()}
    state["vision_projector.weight"] = torch.randn(3, 5)
    shards = split_state_dict(state, config, 2, prefix="language_model.")
    assert torch.equal(shards[1]["vision_projector.weight"], state["vision_projector.weight"])
    assert shards[1]["language_model.output_layer.weight"].shape[0] == config.padded_vocab_size // 2
    merged = merge_state_dicts(shards, config, prefix="language_model.")
    assert all(torch.equal(merged[k], state[k]) for k in state)


# ----------------------------------------------------------------------------- checks before any work


def test_tp_size_must_divide_heads_hidden_ffn_and_vocab() -> None:
    check_tensor_parallel_size(SMALL, 4)
    with pytest.raises(TensorParallelSizeError, match="num_attention_heads"):
        check_tensor_parallel_size(replace(SMALL, num_attention_heads=2), 4)
    with pytest.raises(TensorParallelSizeError, match="padded vocabulary"):
        check_tensor_parallel_size(replace(SMALL, make_vocab_size_divisible_by=2, vocab_size=6), 4)
    with pytest.raises(TensorParallelSizeError, match="ffn_hidden_size"):
        check_tensor_parallel_size(replace(SMALL, ffn_hidden_size=66), 4)
    assert issubclass(TensorParallelSizeError, MimoInputError)


def test_world_size_and_batch_checks_say_what_to_change() -> None:
    assert check_world_size(4, 2) == 2
    with pytest.raises(ParallelConfigError, match="multiple of 2"):
        check_world_size(3, 2)
    assert check_batch_sizes(global_batch_size=16, micro_batch_size=2, dp_size=2) == 4
    with pytest.raises(ParallelConfigError, match="not divisible by --micro-batch-size 2 x 2"):
        check_batch_sizes(global_batch_size=10, micro_batch_size=2, dp_size=2)


def test_tp_above_one_needs_megatron_and_a_launcher() -> None:
    check_distributed_environment("megatron", 2, {"WORLD_SIZE": "2"})
    check_distributed_environment("megatron", 1, {})
    with pytest.raises(ParallelConfigError, match="torchrun --nproc_per_node=2"):
        check_distributed_environment("megatron", 2, {})
    with pytest.raises(ParallelConfigError, match="needs --backend megatron"):
        check_distributed_environment("local", 2, {"WORLD_SIZE": "2"})


def test_megatron_core_version_range(monkeypatch) -> None:
    check_megatron_core("0.16.1")
    check_megatron_core("0.19.2")
    for bad in ("0.15.0", "0.20.0"):
        with pytest.raises(MegatronCoreError, match="outside the supported range"):
            check_megatron_core(bad)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(MegatronCoreError, match="not installed"):
        check_megatron_core()


@pytest.mark.skipif(not HAVE_MEGATRON, reason="megatron-core is not installed")
def test_check_parallel_setup_returns_dp_and_accumulation() -> None:
    assert check_parallel_setup(SMALL, "megatron", 2, 2, 8, world_size=4, environ={"WORLD_SIZE": "4"}) == (2, 2)
    with pytest.raises(MimoInputError, match="unknown --backend"):
        check_parallel_setup(SMALL, "deepspeed", 1, 1, 1, environ={})


def test_shard_batch_indices_cuts_contiguous_equal_slices() -> None:
    assert shard_batch_indices(range(8), 0, 2) == [0, 1, 2, 3]
    assert shard_batch_indices([5, 6, 7, 8], 1, 2) == [7, 8]
    assert shard_batch_indices([1, 2], 0, 1) == [1, 2]
    with pytest.raises(ParallelConfigError, match="multiple of 2"):
        shard_batch_indices(range(3), 0, 2)


# ----------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> list[dict]:
    if not HAVE_MEGATRON:
        pytest.skip("megatron-core is not installed")
    out = tmp_path_factory.mktemp("tp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
        str(ROOT / "tests" / "tp_worker.py"), str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("name", ["gelu-LayerNorm-bias", "swiglu-RMSNorm-nobias"])
def test_tp2_matches_the_local_model(report, name) -> None:
    for rank in report:
        assert rank["tp_context"] == {"tp_size": 2, "dp_size": 1, "backend": "gloo"}
        r = rank[name]
        assert r["shard_shape_qkv"] == [3 * 32 // 2, 32]  # half the heads on each rank
        assert r["logits_scale"] > 1.0
        assert r["logits_max_abs_diff"] < 1e-5
        assert r["loss_megatron"] == pytest.approx(r["loss_local"], abs=1e-5)
        assert r["weights_after_step_max_abs_diff"] < 1e-5


def test_tp1_matches_the_local_model(report) -> None:
    r = report[0]["tp1"]
    assert r["logits_max_abs_diff"] < 1e-5
    assert r["loss_megatron"] == pytest.approx(r["loss_local"], abs=1e-5)


def test_dp2_equals_one_process_with_the_whole_batch(report) -> None:
    r0, r1 = (rank["data_parallel"] for rank in report)
    assert report[0]["dp_context"] == {"tp_size": 1, "dp_size": 2}
    assert r0["rows"] == [0, 1] and r1["rows"] == [2, 3]
    assert r0["tokens_this_rank"] != r1["tokens_this_rank"]  # so a plain mean of the two means would be wrong
    for r in (r0, r1):
        assert r["loss_dp"] == pytest.approx(r["loss_reference"], abs=1e-5)
        assert r["loss_this_rank_alone"] != pytest.approx(r["loss_reference"], abs=1e-3)
        assert r["weights_max_abs_diff"] < 1e-5


def test_a_tp2_model_folder_loads_at_tp1_and_on_local(report) -> None:
    r = report[0]["tp2_checkpoint"]
    assert r["megatron_tp1_max_abs_diff"] < 1e-5
    assert r["local_max_abs_diff"] < 1e-5


def test_shipped_mimo_toy_answers_the_same_at_tp2(report) -> None:
    r = report[0]["mimo_toy"]
    assert r["megatron_tp2"] == r["local"]
    assert all(answer for answer in r["local"])


def test_megatron_core_mimo_model_gives_the_same_loss(report) -> None:
    r = report[0]["megatron_mimo"]
    assert r["loss_mimo_model"] == pytest.approx(r["loss_ours"], abs=1e-5)
