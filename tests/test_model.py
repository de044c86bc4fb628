"""The whole MIMO model: forward, loss on answers only, freezing, generation, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimo_lib.audio_tower import audio_tower_num_parameters
from mimo_lib.config import PRESETS, get_preset
from mimo_lib.constants import IGNORE_INDEX
from mimo_lib.data.conversation import build_prompt
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch
from mimo_lib.errors import CombineError, MimoInputError
from mimo_lib.language_model import language_model_num_parameters
from mimo_lib.model import COMPONENTS, MIMOModel
from mimo_lib.projector import projector_num_parameters
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.vision_tower import vision_tower_num_parameters


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def model() -> MIMOModel:
    torch.manual_seed(0)
    return MIMOModel(get_preset("toy")).eval()


@pytest.fixture(scope="module")
def batch(tokenizer):
    dataset = SyntheticAVDataset(4, seed=1, tokenizer=tokenizer)
    return collate_av_batch([dataset[i] for i in range(4)], tokenizer.pad_id)


def model_inputs(batch) -> dict:
    keys = ("input_ids", "video", "audio", "labels", "attention_mask")
    return {k: getattr(batch, k) for k in keys}


def test_config_vocabulary_matches_the_tokenizer(tokenizer):
    assert get_preset("toy").language_model.vocab_size == tokenizer.vocab_size
    assert get_preset("toy").video_token_id == tokenizer.video_token_id
    assert get_preset("toy").audio_token_id == tokenizer.audio_token_id
    assert get_preset("toy").pad_token_id == tokenizer.pad_id


def test_forward_shapes_and_loss_on_answers_only(model, batch):
    config = model.config
    out = model(**model_inputs(batch))
    lengths = batch.attention_mask.sum(1)
    expected = lengths - 2 + config.num_video_tokens + config.num_audio_tokens  # each placeholder becomes its tokens
    assert out.combined.attention_mask.sum(1).tolist() == expected.tolist()
    assert out.logits.shape == (4, int(expected.max()), config.language_model.padded_vocab_size)
    # the loss is next-token cross-entropy over the answer positions, and nothing else
    labels = out.combined.labels
    manual = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    torch.testing.assert_close(out.loss, manual)
    answer_tokens = (batch.labels != IGNORE_INDEX).sum()
    assert (labels != IGNORE_INDEX).sum() == answer_tokens


def test_gradients_reach_every_component(batch):
    torch.manual_seed(0)
    model = MIMOModel(get_preset("toy"))
    model(**model_inputs(batch)).loss.backward()
    for name in COMPONENTS:
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reached {name}"


def test_set_trainable_freezes_for_the_align_stage(batch):
    torch.manual_seed(0)
    model = MIMOModel(get_preset("toy"))
    model.set_trainable(towers=False, language_model=False, projectors=True)
    summary = model.trainable_summary()
    assert summary["vision_tower"][0] == 0 and summary["language_model"][0] == 0
    assert summary["vision_projector"][0] == summary["vision_projector"][1] > 0
    model(**model_inputs(batch)).loss.backward()
    assert all(p.grad is None for p in model.language_model.parameters())
    assert all(p.grad is not None for p in model.audio_projector.parameters())
    with pytest.raises(ValueError, match="unknown component"):
        model.set_trainable(decoder=True)


def test_the_model_looks_at_the_video_and_the_audio(model, batch):
    inputs = model_inputs(batch)
    base = model(**inputs).logits
    no_video = model(**{**inputs, "video": torch.zeros_like(inputs["video"])}).logits
    no_audio = model(**{**inputs, "audio": torch.zeros_like(inputs["audio"])}).logits
    assert not torch.allclose(base, no_video) and not torch.allclose(base, no_audio)


def test_missing_media_for_a_placeholder_is_an_input_error_naming_the_sample(model, batch):
    inputs = model_inputs(batch)
    with pytest.raises(CombineError, match="sample 0 of the batch: has a <video> placeholder but no video was given"):
        model(**{**inputs, "video": None})
    with pytest.raises(MimoInputError, match=rf"sample {batch.id[0]!r}: has a <audio> placeholder but no audio"):
        model(**{**inputs, "audio": None}, sample_ids=batch.id)


def test_two_placeholders_of_one_modality_in_a_sample_are_refused(model, batch, tokenizer):
    inputs = model_inputs(batch)
    input_ids = inputs["input_ids"].clone()
    first_text = int((input_ids[1] == model.config.audio_token_id).nonzero()[0]) + 1  # a text token after <audio>
    input_ids[1, first_text] = model.config.video_token_id
    with pytest.raises(CombineError, match="sample 1 of the batch: 2 <video> placeholders, but one video per sample"):
        model(**{**inputs, "input_ids": input_ids})


def test_modalities_are_keyed_by_name_and_keep_the_state_dict_names(model):
    modalities = model.modalities
    assert list(modalities) == ["video", "audio"]
    assert modalities["video"].token_id == model.config.video_token_id
    assert modalities["video"].encoder is model.vision_tower and modalities["video"].projector is model.vision_projector
    assert modalities["audio"].token_id == model.config.audio_token_id
    assert modalities["audio"].encoder is model.audio_tower and modalities["audio"].projector is model.audio_projector
    # the shipped checkpoint's keys: every parameter lives under one of the five component names, plus the
    # time embedding where the config has one (the toy preset does)
    assert model.config.av_time_embedding
    assert {key.split(".")[0] for key in model.state_dict()} == set(COMPONENTS) | {"time_embedding"}


def test_forward_leaves_a_non_finite_loss_to_the_training_loop(batch):
    """No host sync in forward: a NaN loss comes back as a number, and the training loop decides."""
    torch.manual_seed(0)
    model = MIMOModel(get_preset("toy")).eval()
    with torch.no_grad():
        model.audio_projector.linear_fc1.weight.fill_(float("nan"))
    out = model(**model_inputs(batch))
    assert out.loss is not None and torch.isnan(out.loss)


def test_generate_with_and_without_cache_and_in_a_batch(model, tokenizer, batch):
    prompts = [build_prompt(tokenizer, q) for q in ("What instrument is playing?", "Which way is the square moving?")]
    width = max(map(len, prompts))
    input_ids = torch.full((2, width), tokenizer.pad_id)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for row, p in enumerate(prompts):
        input_ids[row, : len(p)] = torch.tensor(p)
        mask[row, : len(p)] = True
    video, audio = batch.video[:2], batch.audio[:2]
    cached = model.generate(input_ids, video, audio, mask, max_new_tokens=6, eos_token_id=tokenizer.eos_id)
    fresh = model.generate(input_ids, video, audio, mask, max_new_tokens=6, eos_token_id=tokenizer.eos_id, use_cache=False)
    assert torch.equal(cached, fresh)
    assert model.config.eos_token_id == tokenizer.eos_id  # the default eos is the config's, from the tokenizer
    assert torch.equal(model.generate(input_ids, video, audio, mask, max_new_tokens=6), cached)
    for row, p in enumerate(prompts):
        alone = model.generate(torch.tensor([p]), video[row : row + 1], audio[row : row + 1], max_new_tokens=6,
                               eos_token_id=tokenizer.eos_id)
        n = alone.shape[1]
        assert torch.equal(alone[0], cached[row, :n])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_count_matches_the_closed_form(preset):
    config = get_preset(preset)
    width = config.language_model.hidden_size
    expected = (
        vision_tower_num_parameters(config.vision)
        + audio_tower_num_parameters(config.audio)
        + projector_num_parameters(
            config.vision.hidden_size, width, config.projector.vision_token_compression,
            config.projector.vision_temporal_compression,
        )
        + projector_num_parameters(config.audio.hidden_size, width, config.projector.audio_token_compression)
        + language_model_num_parameters(config.language_model)
        + (config.num_time_chunks * width if config.av_time_embedding else 0)  # one vector per time chunk
    )
    with torch.device("meta"):
        model = MIMOModel(config)
    assert model.num_parameters() == expected
    if preset == "llava-avlm-7b":
        assert 6.5e9 < expected < 7.5e9, f"{expected / 1e9:.2f} B parameters"


def test_padding_is_not_text_when_no_mask_is_given(model, batch):
    inputs = model_inputs(batch)
    with_mask = model.combine(inputs["input_ids"], inputs["video"], inputs["audio"], inputs["attention_mask"])
    without = model.combine(inputs["input_ids"], inputs["video"], inputs["audio"])
    assert torch.equal(with_mask.attention_mask, without.attention_mask)
    torch.testing.assert_close(with_mask.embeddings, without.embeddings)
