"""Tests for mimo_lib.language_model: a GPT decoder laid out like megatron-core's GPTModel."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mimo_lib.config import LanguageModelConfig, get_preset
from mimo_lib.constants import IGNORE_INDEX
from mimo_lib.language_model import (
    DecodingConstraint,
    GPTLanguageModel,
    LanguageModelOutput,
    apply_rope,
    generate,
    language_model_num_parameters,
    make_position_ids,
    rope_cos_sin,
)

# A small decoder: fast on a CPU, but every feature switched on somewhere.
SMALL = LanguageModelConfig(
    vocab_size=343, num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128, max_sequence_length=64
)
CONFIGS = {
    "rope-LayerNorm-gelu": SMALL,
    "rope-RMSNorm-swiglu": replace(SMALL, normalization="RMSNorm", activation="swiglu", add_bias_linear=False),
    "learned-LayerNorm-gelu": replace(SMALL, position_embedding_type="learned_absolute"),
    "learned-RMSNorm-swiglu": replace(
        SMALL, position_embedding_type="learned_absolute", normalization="RMSNorm", activation="swiglu"
    ),
}
EOS = 2


def build(config: LanguageModelConfig, seed: int = 0) -> GPTLanguageModel:
    torch.manual_seed(seed)
    return GPTLanguageModel(config).eval()


@pytest.fixture(params=sorted(CONFIGS))
def model(request) -> GPTLanguageModel:
    # a larger init std gives peaked next-token distributions, so greedy and sampled tokens differ
    return build(replace(CONFIGS[request.param], init_method_std=0.1))


def random_ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(6, SMALL.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- structure


def test_shapes_and_output_type(model: GPTLanguageModel) -> None:
    c = model.config
    ids = random_ids(3, 7)
    out = model(input_ids=ids, use_cache=True)
    assert isinstance(out, LanguageModelOutput)
    assert out.logits.shape == (3, 7, c.padded_vocab_size) == (3, 7, 384)
    assert out.loss is None
    assert len(out.past_key_values) == c.num_layers
    for k, v in out.past_key_values:
        assert k.shape == v.shape == (3, c.num_attention_heads, 7, c.head_dim)
    assert model(input_ids=ids).past_key_values is None
    assert model.embed_tokens(ids).shape == (3, 7, c.hidden_size)


def test_decoder_input_path_equals_input_ids_path(model: GPTLanguageModel) -> None:
    ids = random_ids(2, 9)
    from_ids = model(input_ids=ids).logits
    from_embeddings = model(decoder_input=model.embed_tokens(ids)).logits
    torch.testing.assert_close(from_embeddings, from_ids)


def test_bad_inputs_raise_clear_errors() -> None:
    m = build(SMALL)
    ids = random_ids(2, 5)
    with pytest.raises(ValueError, match="exactly one of"):
        m(input_ids=ids, decoder_input=m.embed_tokens(ids))
    with pytest.raises(ValueError, match="exactly one of"):
        m()
    with pytest.raises(ValueError, match="decoder_input must be"):
        m(decoder_input=torch.zeros(2, 5, 32))
    with pytest.raises(ValueError, match="attention_mask must be"):
        m(input_ids=ids, attention_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        m(input_ids=ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="position_ids must be"):
        m(input_ids=ids, position_ids=torch.arange(4).expand(2, 4))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 384\)"):
        m(input_ids=torch.full((1, 3), 384))
    learned = build(CONFIGS["learned-LayerNorm-gelu"])
    with pytest.raises(ValueError, match="max_sequence_length=64"):
        learned(input_ids=ids, position_ids=torch.full((2, 5), 64))


def test_state_dict_uses_megatron_names() -> None:
    keys = set(build(CONFIGS["learned-LayerNorm-gelu"]).state_dict())
    layer = "decoder.layers.1."
    expected = {
        "embedding.word_embeddings.weight",
        "embedding.position_embeddings.weight",
        layer + "input_layernorm.weight",
        layer + "input_layernorm.bias",
        layer + "self_attention.linear_qkv.weight",
        layer + "self_attention.linear_qkv.bias",
        layer + "self_attention.linear_proj.weight",
        layer + "self_attention.linear_proj.bias",
        layer + "pre_mlp_layernorm.weight",
        layer + "pre_mlp_layernorm.bias",
        layer + "mlp.linear_fc1.weight",
        layer + "mlp.linear_fc1.bias",
        layer + "mlp.linear_fc2.weight",
        layer + "mlp.linear_fc2.bias",
        "decoder.final_layernorm.weight",
        "decoder.final_layernorm.bias",
        "output_layer.weight",
    }
    assert expected <= keys
    assert len(keys) == 2 + 2 * 12 + 2 + 1  # nothing else (no rotary buffers, no extra state)

    rms = build(CONFIGS["rope-RMSNorm-swiglu"]).state_dict()
    assert rms["decoder.layers.0.mlp.linear_fc1.weight"].shape == (2 * 128, 64)  # [gate; up]
    assert not any(k.endswith(".bias") for k in rms)  # RMSNorm has no bias; add_bias_linear=False
    assert "embedding.position_embeddings.weight" not in rms


def test_tied_output_layer_is_the_word_embedding() -> None:
    m = build(replace(SMALL, share_embeddings_and_output_weights=True))
    assert m.output_layer is None
    assert "output_layer.weight" not in m.state_dict()
    ids = random_ids(1, 4)
    hidden = {}
    m.decoder.final_layernorm.register_forward_hook(lambda mod, inp, out: hidden.setdefault("h", out))
    logits = m(input_ids=ids).logits
    torch.testing.assert_close(logits, hidden["h"] @ m.embedding.word_embeddings.weight.T)


def test_megatron_initialisation() -> None:
    config = replace(SMALL, hidden_size=128, ffn_hidden_size=512, num_layers=8, init_method_std=0.02)
    m = build(config)
    layer = m.decoder.layers[3]
    scaled = 0.02 / math.sqrt(2 * 8)  # residual-stream outputs: std / sqrt(2 L)
    for weight, std in [
        (m.embedding.word_embeddings.weight, 0.02),
        (m.output_layer.weight, 0.02),
        (layer.self_attention.linear_qkv.weight, 0.02),
        (layer.mlp.linear_fc1.weight, 0.02),
        (layer.self_attention.linear_proj.weight, scaled),
        (layer.mlp.linear_fc2.weight, scaled),
    ]:
        assert weight.std().item() == pytest.approx(std, rel=0.05)
        assert abs(weight.mean().item()) < std / 10
    assert torch.all(layer.self_attention.linear_qkv.bias == 0)
    assert torch.all(layer.mlp.linear_fc2.bias == 0)
    assert torch.all(layer.input_layernorm.weight == 1) and torch.all(layer.input_layernorm.bias == 0)
    assert torch.all(m.decoder.final_layernorm.weight == 1)


# ----------------------------------------------------------------------------- Megatron layouts, by hand


def test_attention_uses_megatron_fused_qkv_layout() -> None:
    """Recompute layer 0's attention from the weight read as (heads, [q; k; v], head_dim, D)."""
    m = build(replace(SMALL, init_method_std=0.2))
    attn = m.decoder.layers[0].self_attention
    H, hd, S = SMALL.num_attention_heads, SMALL.head_dim, 6
    x = torch.randn(1, S, SMALL.hidden_size)
    w = attn.linear_qkv.weight.view(H, 3, hd, SMALL.hidden_size)  # per head: q rows, k rows, v rows
    b = attn.linear_qkv.bias.view(H, 3, hd)
    q = torch.einsum("bsd,hed->bhse", x, w[:, 0]) + b[:, 0, None, :]  # (B, H, S, hd)
    k = torch.einsum("bsd,hed->bhse", x, w[:, 1]) + b[:, 1, None, :]
    v = torch.einsum("bsd,hed->bhse", x, w[:, 2]) + b[:, 2, None, :]
    cos, sin = rope_cos_sin(torch.arange(S)[None], hd, SMALL.rotary_base)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, S, -1)  # heads side by side
    expected = attn.linear_proj(context)
    mask = torch.ones(1, 1, S, S, dtype=torch.bool).tril()
    got, _ = attn(x, torch.arange(S)[None], mask)
    torch.testing.assert_close(got, expected)


def test_swiglu_fc1_holds_gate_then_up() -> None:
    m = build(CONFIGS["rope-RMSNorm-swiglu"])
    mlp = m.decoder.layers[0].mlp
    x = torch.randn(2, 3, SMALL.hidden_size)
    w1 = mlp.linear_fc1.weight
    gate, up = x @ w1[: SMALL.ffn_hidden_size].T, x @ w1[SMALL.ffn_hidden_size :].T
    torch.testing.assert_close(mlp(x), (F.silu(gate) * up) @ mlp.linear_fc2.weight.T)


def test_rope_rotates_each_dim_with_its_partner_half_a_head_away() -> None:
    """Non-interleaved RoPE: dims (i, i + hd/2) form a complex number rotated by pos * base^(-2i/hd)."""
    hd, base = 16, 10_000
    x = torch.randn(1, 1, 5, hd)
    pos = torch.tensor([[0, 1, 7, 30, 500]])
    cos, sin = rope_cos_sin(pos, hd, base)
    got = apply_rope(x, cos, sin)
    inv_freq = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,)
    angle = pos[0, :, None].double() * inv_freq  # (5, hd/2)
    z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2 :].double()) * torch.polar(
        torch.ones_like(angle), angle
    )
    expected = torch.cat([z.real, z.imag], dim=-1).float()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position() -> None:
    hd = 32
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(query_pos: int, key_pos: int) -> float:
        cq, sq = rope_cos_sin(torch.tensor([[query_pos]]), hd, 10_000)
        ck, sk = rope_cos_sin(torch.tensor([[key_pos]]), hd, 10_000)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    for d in (0, 1, 5, 40):
        assert score(3 + d, 3) == pytest.approx(score(101 + d, 101), abs=1e-4)
        assert score(3, 3 + d) == pytest.approx(score(57, 57 + d), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)  # but the distance matters


# ----------------------------------------------------------------------------- masking


def test_causal_a_future_token_does_not_change_earlier_logits(model: GPTLanguageModel) -> None:
    ids = random_ids(1, 10)
    changed = ids.clone()
    changed[0, 6] = 7 if ids[0, 6] != 7 else 8
    a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_right_padded_batch_matches_each_sample_alone(model: GPTLanguageModel) -> None:
    lengths = [9, 4, 6]
    samples = [random_ids(1, n, seed=10 + i) for i, n in enumerate(lengths)]
    batch = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, s in enumerate(samples):
        batch[i, : s.shape[1]] = s[0]
        mask[i, : s.shape[1]] = True
    logits = model(input_ids=batch, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
    for i, s in enumerate(samples):
        alone = model(input_ids=s).logits[0]
        torch.testing.assert_close(logits[i, : s.shape[1]], alone, atol=1e-5, rtol=1e-5)
    # without the mask the padded rows would see the padding: the test can tell
    unmasked = model(input_ids=batch).logits
    assert torch.allclose(unmasked[1, :4], logits[1, :4], atol=1e-5)  # causal: padding is after them anyway
    left = torch.cat([torch.zeros(1, 5, dtype=torch.long), samples[1]], dim=1)
    left_mask = torch.arange(9)[None] >= 5
    masked = model(input_ids=left, attention_mask=left_mask, position_ids=make_position_ids(left_mask)).logits
    torch.testing.assert_close(masked[0, 5:], model(input_ids=samples[1]).logits[0], atol=1e-5, rtol=1e-5)
    unmasked_left = model(input_ids=left, position_ids=make_position_ids(left_mask)).logits
    assert not torch.allclose(unmasked_left[0, 5:], masked[0, 5:], atol=1e-3)


def test_make_position_ids_counts_real_tokens() -> None:
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    assert make_position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


# ----------------------------------------------------------------------------- loss and gradients


def test_loss_is_shifted_cross_entropy_with_ignore_index() -> None:
    m = build(CONFIGS["rope-RMSNorm-swiglu"])
    ids = random_ids(2, 8)
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX  # a prompt whose tokens are not scored
    labels[1, 6:] = IGNORE_INDEX
    out = m(input_ids=ids, labels=labels)
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, 384), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    torch.testing.assert_close(out.loss, expected)
    # the shift matters: unshifted scoring gives another number
    unshifted = F.cross_entropy(out.logits.reshape(-1, 384), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert not torch.allclose(out.loss, unshifted)
    # a custom ignore_index
    other = m(input_ids=ids, labels=labels.masked_fill(labels == IGNORE_INDEX, -1), ignore_index=-1).loss
    torch.testing.assert_close(other, expected)


def test_gradients_reach_every_parameter() -> None:
    m = build(CONFIGS["learned-LayerNorm-gelu"]).train()
    ids = random_ids(2, 8)
    m(input_ids=ids, labels=ids).loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name != "embedding.word_embeddings.weight":  # only the rows of the ids used get a gradient
            assert p.grad.abs().sum() > 0, name


def test_loss_with_no_scored_label_is_zero_not_nan() -> None:
    m = build(SMALL)
    ids = random_ids(1, 5)
    loss = m(input_ids=ids, labels=torch.full_like(ids, IGNORE_INDEX)).loss
    assert loss.item() == 0.0
    loss.backward()


# ----------------------------------------------------------------------------- KV cache and generation


def test_kv_cache_logits_match_full_forward(model: GPTLanguageModel) -> None:
    ids = random_ids(2, 8)
    full = model(input_ids=ids).logits
    out = model(input_ids=ids[:, :5], use_cache=True)
    steps = [out.logits]
    for t in range(5, 8):
        out = model(input_ids=ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert out.past_key_values[0][0].shape[2] == 8


def left_padded_prompts(model: GPTLanguageModel, lengths: list[int]):
    """Prompts of the given lengths, left-padded into one batch: (prompts, decoder_input, mask, positions)."""
    prompts = [random_ids(1, n, seed=20 + i) for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - p.shape[1] :] = p[0]
        mask[i, width - p.shape[1] :] = True
    return prompts, model.embed_tokens(ids), mask, make_position_ids(mask)


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_generate_with_cache_equals_without(model: GPTLanguageModel, do_sample: bool) -> None:
    _, embeds, mask, positions = left_padded_prompts(model, [3, 6, 5])
    kwargs = dict(max_new_tokens=8, eos_token_id=EOS, do_sample=do_sample, temperature=0.8, top_k=50)
    cached = generate(model, embeds, mask, positions, generator=torch.Generator().manual_seed(0), **kwargs)
    full = generate(
        model, embeds, mask, positions, generator=torch.Generator().manual_seed(0), use_cache=False, **kwargs
    )
    assert cached.shape == (3, 8) and cached.dtype == torch.long
    assert torch.equal(cached, full)
    if do_sample:  # the seed is used: another seed gives other tokens
        other = generate(model, embeds, mask, positions, generator=torch.Generator().manual_seed(1), **kwargs)
        assert not torch.equal(other, cached)


def test_greedy_generation_is_a_plain_argmax_loop(model: GPTLanguageModel) -> None:
    """Each new token sits at the next position: generate equals re-running the growing sequence."""
    ids = random_ids(1, 5)
    tokens = generate(
        model,
        model.embed_tokens(ids),
        torch.ones(1, 5, dtype=torch.bool),
        torch.arange(5)[None],
        max_new_tokens=5,
        eos_token_id=0,
    )
    sequence = ids
    for _ in range(5):
        logits = model(input_ids=sequence).logits[:, -1, : model.config.vocab_size]  # default positions 0..S-1
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, sequence[:, 5:])


class NoRepeat(DecodingConstraint):
    """A test rule: a row may never produce a token it produced before (and it is told every choice)."""

    def __init__(self, batch: int, vocab: int) -> None:
        self.used = torch.zeros(batch, vocab, dtype=torch.bool)
        self.updates = 0

    def allowed(self, vocab: int) -> torch.Tensor:
        return ~self.used[:, :vocab]

    def update(self, token: torch.Tensor) -> None:
        self.used[torch.arange(len(token)), token] = True
        self.updates += 1


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_a_constraint_forbids_what_plain_generation_would_choose(model: GPTLanguageModel, use_cache: bool) -> None:
    _, embeds, mask, positions = left_padded_prompts(model, [3, 6, 5])
    kwargs = dict(max_new_tokens=12, eos_token_id=0, use_cache=use_cache)  # id 0 never appears: no row stops
    plain = generate(model, embeds, mask, positions, **kwargs)
    assert any(len(set(row)) < len(row) for row in plain.tolist())  # unconstrained, some row repeats a token
    rule = NoRepeat(3, model.config.padded_vocab_size)
    constrained = generate(model, embeds, mask, positions, constraint=rule, **kwargs)
    assert rule.updates == 12
    for row in constrained.tolist():
        assert len(set(row)) == len(row), row
    # the first token is chosen before any rule applies: the same as without it
    assert torch.equal(constrained[:, 0], plain[:, 0])


def test_left_padded_generation_equals_each_prompt_alone(model: GPTLanguageModel) -> None:
    prompts, embeds, mask, positions = left_padded_prompts(model, [3, 6, 5])
    batched = generate(model, embeds, mask, positions, max_new_tokens=6, eos_token_id=EOS)
    for i, p in enumerate(prompts):
        alone = generate(
            model,
            model.embed_tokens(p),
            torch.ones_like(p, dtype=torch.bool),
            torch.arange(p.shape[1])[None],
            max_new_tokens=6,
            eos_token_id=EOS,
        )
        assert torch.equal(batched[i], alone[0]), i


def test_generate_rejects_right_padding_and_bad_arguments() -> None:
    m = build(SMALL)
    embeds = m.embed_tokens(random_ids(1, 4))
    right = torch.tensor([[True, True, True, False]])
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(m, embeds, right, make_position_ids(right), max_new_tokens=2, eos_token_id=EOS)
    ones = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="eos_token_id"):
        generate(m, embeds, ones, make_position_ids(ones), max_new_tokens=2, eos_token_id=343)
    with pytest.raises(ValueError, match="temperature"):
        generate(m, embeds, ones, make_position_ids(ones), 2, EOS, do_sample=True, temperature=0.0)


def test_padded_vocab_ids_are_never_generated() -> None:
    m = build(SMALL)
    c = m.config
    with torch.no_grad():  # make the padding ids (343..383) the most likely tokens by far
        direction = torch.randn(c.hidden_size)
        m.decoder.final_layernorm.bias.copy_(5 * direction)
        m.output_layer.weight[c.vocab_size :] = direction
    prompts, embeds, mask, positions = left_padded_prompts(m, [4, 2])
    raw = m(decoder_input=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
    assert (raw.argmax(-1) >= c.vocab_size).all()  # unmasked, the model would pick a padding id
    for do_sample in (False, True):
        tokens = generate(
            m, embeds, mask, positions, 10, EOS, do_sample=do_sample, generator=torch.Generator().manual_seed(0)
        )
        assert tokens.max() < c.vocab_size


def test_eos_ends_a_row_and_generation_stops_when_all_rows_are_done() -> None:
    m = build(replace(SMALL, init_method_std=0.1))
    _, embeds, mask, positions = left_padded_prompts(m, [4, 2, 3])
    # with an eos that never comes, we see the free-running continuation
    free = generate(m, embeds, mask, positions, max_new_tokens=10, eos_token_id=0)
    assert (free != 0).all()
    eos = free[0, 3].item()  # pick a token row 0 emits at step 3 as the eos
    got = generate(m, embeds, mask, positions, max_new_tokens=10, eos_token_id=eos)
    for row in range(3):
        hits = (free[row] == eos).nonzero()
        end = hits[0].item() + 1 if len(hits) else 10
        assert torch.equal(got[row, :end], free[row, :end])  # same tokens up to and including eos
        assert (got[row, end:] == eos).all()  # then eos only

    # once every row is done, the model is not run again; the result is padded with eos
    first = free[:, 0]
    calls = []
    m.register_forward_hook(lambda *args: calls.append(1))
    one_row = generate(m, embeds[:1], mask[:1], positions[:1], max_new_tokens=10, eos_token_id=first[0].item())
    assert len(calls) == 1  # the prefill only
    assert one_row.tolist() == [[first[0].item()] * 10]


# ----------------------------------------------------------------------------- parameter count


COUNT_CONFIGS = {
    **CONFIGS,
    "tied": replace(SMALL, share_embeddings_and_output_weights=True),
    "swiglu-no-bias-tied-learned": replace(
        SMALL,
        activation="swiglu",
        add_bias_linear=False,
        share_embeddings_and_output_weights=True,
        position_embedding_type="learned_absolute",
    ),
    "odd-vocab-divisor": replace(SMALL, vocab_size=1000, make_vocab_size_divisible_by=7, num_layers=3),
}


@pytest.mark.parametrize("name", sorted(COUNT_CONFIGS))
def test_closed_form_parameter_count(name: str) -> None:
    config = COUNT_CONFIGS[name]
    m = GPTLanguageModel(config)
    assert language_model_num_parameters(config) == m.num_parameters() == sum(p.numel() for p in m.parameters())


LLAVA_7B_PARAMETERS = 6_738_415_616  # Vicuna/Llama-2-7B: 32 layers x 4096, swiglu 11008, RMSNorm, untied 32000


@pytest.mark.parametrize("preset", ["llava-avlm-7b"], ids=[f"llava-avlm-7b={LLAVA_7B_PARAMETERS:_}"])
def test_closed_form_parameter_count_for_the_7b_preset_on_meta(preset: str) -> None:
    config = get_preset(preset).language_model
    with torch.device("meta"):
        m = GPTLanguageModel(config)
    assert m.output_layer.weight.is_meta
    actual = m.num_parameters()
    assert language_model_num_parameters(config) == actual == LLAVA_7B_PARAMETERS, (
        f"{preset} language model: closed form {language_model_num_parameters(config):_}, built {actual:_}"
    )


def test_generation_continues_after_the_largest_position_not_the_last() -> None:
    """Time-aware ids (mimo_lib.combine) need not grow along the row: the next token takes max + 1."""
    model = build(LanguageModelConfig(num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64))
    x = model.embed_tokens(random_ids(1, 5))  # (1, 5, D)
    mask = torch.ones(1, 5, dtype=torch.bool)
    positions = torch.tensor([[0, 1, 9, 4, 5]])  # largest 9, last 5
    cached = generate(model, x, mask, positions, max_new_tokens=3, eos_token_id=1)
    recomputed = generate(model, x, mask, positions, max_new_tokens=3, eos_token_id=1, use_cache=False)
    assert torch.equal(cached, recomputed)
    step = torch.cat([x, model.embed_tokens(cached[:, :1])], dim=1)
    logits = model(decoder_input=step, position_ids=torch.tensor([[0, 1, 9, 4, 5, 10]])).logits[0, -1]
    logits[model.config.vocab_size:] = float("-inf")
    assert int(logits.argmax()) == int(cached[0, 1])
