"""TowerFeatureCache: frozen-tower outputs computed once give the same training step as running the towers.

And the Batch both it and collate_av_batch return."""

from __future__ import annotations

import pytest
import torch

from mimo_lib.config import get_preset
from mimo_lib.data.dataset import Batch, SyntheticAVDataset, collate_av_batch
from mimo_lib.evaluate import synthetic_config_for
from mimo_lib.feature_cache import TowerFeatureCache
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = get_preset("tiny")
    tokenizer = Tokenizer.default()
    dataset = SyntheticAVDataset(10, seed=3, config=synthetic_config_for(config), tokenizer=tokenizer)
    return MIMOModel(config).eval(), dataset, tokenizer


def test_cached_features_equal_the_towers_outputs(setup):
    model, dataset, tokenizer = setup
    cache = TowerFeatureCache(model, dataset, tokenizer.pad_id, chunk_size=4)
    batch = cache.batch([7, 2, 9])
    media = collate_av_batch([dataset[i] for i in (7, 2, 9)], tokenizer.pad_id)
    assert isinstance(batch, Batch) and isinstance(media, Batch)
    with torch.no_grad():
        torch.testing.assert_close(batch.video_features, model.vision_tower(media.video))
        torch.testing.assert_close(batch.audio_features, model.audio_tower(media.audio))
    assert torch.equal(batch.input_ids, media.input_ids) and torch.equal(batch.labels, media.labels)
    assert torch.equal(batch.attention_mask, media.attention_mask)
    assert torch.equal(batch.has_video, media.has_video) and torch.equal(batch.has_audio, media.has_audio)
    assert batch.id == media.id and batch.question_type == media.question_type
    assert batch.video is None and batch.audio is None
    assert media.video_features is None and media.audio_features is None
    # chunks of 4: indices 7, 2, 9 touched chunks 1, 0 and 2; nothing else was rendered
    assert cache.done.tolist() == [True, True, True]


def test_chunks_are_encoded_lazily_and_only_once(setup):
    model, dataset, tokenizer = setup
    cache = TowerFeatureCache(model, dataset, tokenizer.pad_id, chunk_size=4)
    cache.batch([5])
    assert cache.done.tolist() == [False, True, False]
    first = cache.features["video"][5].clone()
    cache.fill(progress=False)
    assert cache.done.all() and all(t is not None for t in cache.text)
    assert torch.equal(cache.features["video"][5], first)


def test_rendering_in_worker_processes_gives_the_same_cache(setup):
    model, dataset, tokenizer = setup
    here = TowerFeatureCache(model, dataset, tokenizer.pad_id, chunk_size=3)
    here.fill(progress=False, processes=1)
    forked = TowerFeatureCache(model, dataset, tokenizer.pad_id, chunk_size=3)
    forked.batch([4])  # one chunk encoded lazily first: fill must render only the others, in their places
    forked.fill(progress=False, processes=2)
    assert forked.done.all()
    for modality in ("video", "audio"):
        assert torch.equal(forked.features[modality], here.features[modality])
        assert torch.equal(forked.has[modality], here.has[modality])
    for mine, theirs in zip(forked.text, here.text):
        assert mine["id"] == theirs["id"] and torch.equal(mine["input_ids"], theirs["input_ids"])


def test_training_loss_is_the_same_with_and_without_the_cache(setup):
    model, dataset, tokenizer = setup
    cache = TowerFeatureCache(model, dataset, tokenizer.pad_id)
    indices = [0, 4, 8, 1]
    cached = cache.batch(indices)
    media = collate_av_batch([dataset[i] for i in indices], tokenizer.pad_id)
    with torch.no_grad():
        from_media = model(media.input_ids, media.video, media.audio, media.labels, media.attention_mask)
        from_cache = model(
            cached.input_ids, labels=cached.labels, attention_mask=cached.attention_mask,
            video_features=cached.video_features, audio_features=cached.audio_features,
        )
    torch.testing.assert_close(from_cache.loss, from_media.loss)
    torch.testing.assert_close(from_cache.logits, from_media.logits)


def test_media_and_features_together_are_refused(setup):
    model, dataset, tokenizer = setup
    batch = collate_av_batch([dataset[0]], tokenizer.pad_id)
    features = torch.zeros(1, model.config.vision.num_tokens, model.vision_tower.output_size)
    with pytest.raises(ValueError, match="give video or video_features, not both"):
        model(batch.input_ids, batch.video, batch.audio, video_features=features)


def test_out_of_range_index_is_an_error(setup):
    model, dataset, tokenizer = setup
    with pytest.raises(IndexError, match="index 10 out of range for 10 samples"):
        TowerFeatureCache(model, dataset, tokenizer.pad_id).batch([10])


def test_collate_gives_a_typed_batch_that_moves_as_one(setup):
    _, dataset, tokenizer = setup
    audio_only = dict(dataset[1], id="audio-only", video=None)
    batch = collate_av_batch([dataset[0], audio_only], tokenizer.pad_id)
    assert batch.id == [dataset[0]["id"], "audio-only"]
    assert batch.has_video.tolist() == [True, False] and batch.has_audio.tolist() == [True, True]
    assert batch.video.dtype == torch.uint8 and batch.video[1].sum() == 0  # black frames where there is no video
    assert batch.audio.shape[0] == 2 and batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    assert batch.video_features is None and batch.audio_features is None
    assert not hasattr(batch, "audio_lengths")  # nothing read it
    moved = batch.to("meta")
    assert moved.video.device.type == "meta" and moved.attention_mask.device.type == "meta"
    assert moved.id == batch.id and batch.video.device.type == "cpu"  # a new batch; the old one stays
    with pytest.raises(TypeError):  # a typed batch: fields are attributes, not optional dict keys
        batch["input_ids"]
