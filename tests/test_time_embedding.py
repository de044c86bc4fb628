"""The time embedding (mimo_lib/time_embedding.py, chapter 8): a learned vector per time chunk, added to the
video and audio tokens of that chunk, zero at the start, trained with the language model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mimo_lib.config import ConfigError, get_preset
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch
from mimo_lib.model import MIMOModel
from mimo_lib.time_embedding import TimeEmbedding
from mimo_lib.tokenizer import Tokenizer


def _batch(config, seed: int = 0):
    """Two two-event clips with a `time` question each (the synthetic clips fit the toy preset)."""
    tokenizer = Tokenizer.default()
    dataset = SyntheticAVDataset(2, seed=seed, question_types=("time",), tokenizer=tokenizer)
    return collate_av_batch([dataset[i] for i in range(2)], config.pad_token_id)


def _inputs(batch) -> dict:
    return {k: getattr(batch, k) for k in ("input_ids", "video", "audio", "labels", "attention_mask")}


@pytest.mark.parametrize("layout", ["interleaved", "block"])
def test_it_starts_at_zero_and_changes_nothing_until_trained(layout):
    config = replace(get_preset("toy"), av_layout=layout)
    assert config.av_time_embedding and config.num_time_chunks == 2  # 1-s clip, 0.5-s chunks
    torch.manual_seed(0)
    with_it = MIMOModel(config).eval()
    torch.manual_seed(0)
    without = MIMOModel(replace(config, av_time_embedding=False)).eval()
    # no random number drawn for it: every other weight is the same as without it
    assert set(with_it.state_dict()) - set(without.state_dict()) == {"time_embedding.weight"}
    for key, value in without.state_dict().items():
        assert torch.equal(with_it.state_dict()[key], value), key
    assert torch.count_nonzero(with_it.time_embedding.weight) == 0
    batch = _inputs(_batch(config))
    with torch.no_grad():
        assert torch.equal(with_it(**batch).logits, without(**batch).logits)
        with_it.time_embedding.weight.normal_()
        assert not torch.allclose(with_it(**batch).logits, without(**batch).logits)


def test_each_token_gets_the_vector_of_its_own_chunk():
    config = get_preset("toy")
    model = MIMOModel(config).eval()
    with torch.no_grad():
        model.time_embedding.weight.copy_(torch.stack([torch.full((128,), 1.0), torch.full((128,), 10.0)]))
    timing = model.token_timing()
    for token_id, count in ((config.video_token_id, config.num_video_tokens), (config.audio_token_id, config.num_audio_tokens)):
        tokens = torch.zeros(3, count, 128)  # (items, N, D)
        out = model.add_time_embedding(token_id, tokens)
        seconds = timing.times[token_id]  # (N,) when each token begins
        expected = torch.where(seconds < 0.5, 1.0, 10.0)  # first half-second: chunk 0
        assert torch.equal(out[:, :, 0], expected.float().expand(3, count))
        assert set(out[:, :, 0].unique().tolist()) == {1.0, 10.0}  # both chunks are present in a 1-s clip


def test_a_video_and_an_audio_token_of_the_same_instant_carry_the_same_vector():
    config = get_preset("toy")
    model = MIMOModel(config).eval()
    with torch.no_grad():
        model.time_embedding.weight.normal_()
    combined = model.combine(**{k: v for k, v in _inputs(_batch(config)).items() if k != "labels"})
    video_at = (combined.input_ids[0] == config.video_token_id).nonzero().flatten()
    audio_at = (combined.input_ids[0] == config.audio_token_id).nonzero().flatten()
    with torch.no_grad():
        plain = MIMOModel(replace(config, av_time_embedding=False)).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "time_embedding.weight"})
        base = plain.combine(**{k: v for k, v in _inputs(_batch(config)).items() if k != "labels"})
    added = combined.embeddings[0] - base.embeddings[0]  # (S, D): what the time embedding added
    first_video, last_audio = added[video_at[0]], added[audio_at[-1]]
    assert torch.allclose(added[audio_at[0]], first_video, atol=1e-6)  # both at 0 s: chunk 0
    assert torch.allclose(added[video_at[-1]], last_audio, atol=1e-6)  # both in the last half-second: chunk 1
    assert not torch.allclose(first_video, last_audio)
    text = combined.input_ids[0] > config.audio_token_id
    assert torch.count_nonzero(added[text]) == 0  # text positions get nothing


def test_it_learns_with_the_language_model_and_is_frozen_with_it():
    model = MIMOModel(get_preset("toy"))
    model.set_trainable(towers=False, projectors=True, language_model=False)  # the align stage
    assert not model.time_embedding.weight.requires_grad
    assert "time_embedding" not in [name for name, (t, _) in model.trainable_summary().items() if t]
    model.set_trainable(language_model=True)  # instruct and speak
    assert model.time_embedding.weight.requires_grad
    assert model.trainable_summary()["time_embedding"] == (256, 256)
    loss = model(**_inputs(_batch(model.config))).loss
    loss.backward()
    grad = model.time_embedding.weight.grad
    assert grad is not None and bool((grad.abs().sum(dim=1) > 0).all())  # both chunks' vectors learn


def test_bad_chunk_indices_are_refused():
    embedding = TimeEmbedding(2, 4)
    with pytest.raises(ValueError, match="outside 0..1"):
        embedding(torch.zeros(1, 3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="3 tokens per item but"):
        embedding(torch.zeros(1, 3, 4), torch.tensor([0, 1]))


def test_the_config_records_it_and_refuses_a_non_boolean():
    config = get_preset("toy")
    assert type(config).from_dict(config.to_dict()).av_time_embedding is True
    assert get_preset("tiny").av_time_embedding is False  # MIMOConfig()'s default: chapters 4-7 build without it
    with pytest.raises(ConfigError, match="av_time_embedding must be true or false"):
        replace(config, av_time_embedding="yes")


def test_the_command_line_turns_it_on_and_off():
    from mimo_lib import train

    def model_config(*argv):
        return train.resolve(train.parse_args(list(argv))).model_config

    assert model_config("--preset", "toy").av_time_embedding is True
    assert model_config("--preset", "toy", "--no-av-time-embedding").av_time_embedding is False
    tiny = model_config("--preset", "tiny", "--av-time-embedding", "--chunk-seconds", "0.3")
    assert tiny.av_time_embedding and tiny.av_layout == "block" and tiny.num_time_chunks == 4  # 1 s in 0.3-s chunks
    model = MIMOModel(tiny)
    assert model.time_embedding.weight.shape == (4, tiny.language_model.hidden_size)
    assert "--av-time-embedding" in train.build_parser().format_help()
