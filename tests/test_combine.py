"""Tests for mimo_lib.combine: placeholders expanded into modality tokens, the "zipper"."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimo_lib.combine import (
    AUDIO,
    MODALITY_NAMES,
    PADDING,
    TEXT,
    VIDEO,
    CombineError,
    combine_multimodal_inputs,
)
from mimo_lib.config import MIMOConfig
from mimo_lib.constants import AUDIO_TOKEN_ID, PAD_TOKEN_ID, VIDEO_TOKEN_ID
from mimo_lib.data.conversation import IGNORE_INDEX, encode_conversation
from mimo_lib.data.dataset import SyntheticAVDataset, collate_av_batch
from mimo_lib.errors import MimoInputError
from mimo_lib.tokenizer import Tokenizer

VID, AUD, PAD = VIDEO_TOKEN_ID, AUDIO_TOKEN_ID, PAD_TOKEN_ID  # MIMOConfig's ids, from the tokenizer's table
CODE = {VID: VIDEO, AUD: AUDIO}
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# --------------------------------------------------------------------------- a random batch


@dataclass
class Batch:
    """A padded batch of random sequences and what it was made from."""

    rows: list[list[int]]  # the real token ids of each sample
    row_labels: list[list[int]]
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L)
    text: torch.Tensor  # (B, L, D)
    items: dict[int, torch.Tensor]  # id -> (num_items, tokens_per_item, D)
    left_padded_input: bool


@st.composite
def batches(draw) -> Batch:
    """1-4 samples of 0-10 tokens, with <video>/<audio> placeholders anywhere, padded left or right."""
    batch = draw(st.integers(1, 4))
    token = st.one_of(st.integers(5, 30), st.sampled_from([VID, AUD]))
    rows = [draw(st.lists(token, max_size=10)) for _ in range(batch)]
    row_labels = [[IGNORE_INDEX if t in (VID, AUD) or draw(st.booleans()) else t + 100 for t in row] for row in rows]
    tokens_per_item = {VID: draw(st.integers(1, 5)), AUD: draw(st.integers(1, 5))}
    width = draw(st.integers(1, 4))
    extra = draw(st.integers(0, 3))  # padding columns beyond the longest sample
    left = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))

    length = max(len(r) for r in rows) + extra
    input_ids = torch.full((batch, length), PAD, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, (row, lab) in enumerate(zip(rows, row_labels)):
        cols = slice(length - len(row), length) if left else slice(0, len(row))
        input_ids[b, cols] = torch.tensor(row, dtype=torch.long)
        labels[b, cols] = torch.tensor(lab, dtype=torch.long)
        mask[b, cols] = True
    generator = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, width, generator=generator)
    items = {}
    for token_id in (VID, AUD):
        count = sum(row.count(token_id) for row in rows)
        if count or draw(st.booleans()):  # an empty (0, T, D) tensor is fine when nothing asks for it
            items[token_id] = torch.randn(count, tokens_per_item[token_id], width, generator=generator)
    return Batch(rows, row_labels, input_ids, mask, labels, text, items, left)


def real_positions(batch: Batch, b: int) -> list[int]:
    return batch.attention_mask[b].nonzero().flatten().tolist()


def reference_combine(batch: Batch, padding_side: str) -> dict[str, torch.Tensor]:
    """The zipper written the slow, obvious way: one sample at a time, one token at a time."""
    next_item = {token_id: 0 for token_id in batch.items}
    width = batch.text.shape[-1]
    per_sample = []
    for b in range(len(batch.rows)):
        emb, ids, labels, modality = [], [], [], []
        for col in real_positions(batch, b):
            token_id = int(batch.input_ids[b, col])
            if token_id in batch.items:
                item = batch.items[token_id][next_item[token_id]]
                next_item[token_id] += 1
                for row in item:
                    emb.append(row)
                    ids.append(token_id)
                    labels.append(IGNORE_INDEX)
                    modality.append(CODE[token_id])
            else:
                emb.append(batch.text[b, col])
                ids.append(token_id)
                labels.append(int(batch.labels[b, col]))
                modality.append(TEXT)
        per_sample.append((emb, ids, labels, modality))

    seq_len = max(len(s[0]) for s in per_sample)
    out = {
        "embeddings": torch.zeros(len(per_sample), seq_len, width),
        "input_ids": torch.full((len(per_sample), seq_len), PAD, dtype=torch.long),
        "labels": torch.full((len(per_sample), seq_len), IGNORE_INDEX, dtype=torch.long),
        "modality_map": torch.full((len(per_sample), seq_len), PADDING, dtype=torch.long),
        "attention_mask": torch.zeros(len(per_sample), seq_len, dtype=torch.bool),
        "position_ids": torch.zeros(len(per_sample), seq_len, dtype=torch.long),
    }
    for b, (emb, ids, labels, modality) in enumerate(per_sample):
        n = len(ids)
        start = seq_len - n if padding_side == "left" else 0
        for i in range(n):
            out["embeddings"][b, start + i] = emb[i]
            out["input_ids"][b, start + i] = ids[i]
            out["labels"][b, start + i] = labels[i]
            out["modality_map"][b, start + i] = modality[i]
            out["attention_mask"][b, start + i] = True
            out["position_ids"][b, start + i] = i
    return out


def combine(batch: Batch, **kwargs):
    return combine_multimodal_inputs(
        batch.input_ids, batch.text, batch.items, attention_mask=batch.attention_mask, labels=batch.labels, **kwargs
    )


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(batch=batches(), padding_side=st.sampled_from(["right", "left"]))
def test_invariants(batch: Batch, padding_side: str):
    out = combine(batch, padding_side=padding_side)
    tokens_per_item = {t: items.shape[1] for t, items in batch.items.items()}
    next_item = {t: 0 for t in batch.items}
    seq_len = out.embeddings.shape[1]
    assert out.embeddings.shape == (len(batch.rows), seq_len, batch.text.shape[-1])

    for b, row in enumerate(batch.rows):
        num_text = sum(t not in (VID, AUD) for t in row)
        expected_length = num_text + sum(row.count(t) * tokens_per_item.get(t, 0) for t in (VID, AUD))
        # length: text tokens + items x tokens per item; the mask covers exactly that many positions
        assert int(out.attention_mask[b].sum()) == expected_length
        real = out.attention_mask[b].nonzero().flatten()
        if expected_length:
            first = seq_len - expected_length if padding_side == "left" else 0
            assert real.tolist() == list(range(first, first + expected_length))  # padding on one side only
        # position ids 0..n-1 on real positions, 0 on padding
        assert out.position_ids[b, real].tolist() == list(range(expected_length))
        assert not out.position_ids[b, ~out.attention_mask[b]].any()
        # modality map counts
        modality = out.modality_map[b]
        assert int((modality == TEXT).sum()) == num_text
        for t in (VID, AUD):
            assert int((modality == CODE[t]).sum()) == row.count(t) * tokens_per_item.get(t, 0)
        assert torch.equal(modality == PADDING, ~out.attention_mask[b])
        # text embeddings and text labels appear in order
        cols = real_positions(batch, b)
        text_cols = [c for c in cols if int(batch.input_ids[b, c]) not in (VID, AUD)]
        assert torch.equal(out.embeddings[b, modality == TEXT], batch.text[b, text_cols])
        assert torch.equal(out.labels[b, modality == TEXT], batch.labels[b, text_cols])
        # loss only on text: modality and padding positions carry ignore_index
        assert (out.labels[b, modality != TEXT] == IGNORE_INDEX).all()
        assert not out.embeddings[b, modality == PADDING].any()
        # each item sits contiguously where its placeholder was
        position = seq_len - expected_length if padding_side == "left" else 0
        for col in cols:
            t = int(batch.input_ids[b, col])
            if t in (VID, AUD):
                n = tokens_per_item[t]
                assert torch.equal(out.embeddings[b, position : position + n], batch.items[t][next_item[t]])
                assert (out.input_ids[b, position : position + n] == t).all()
                next_item[t] += 1
                position += n
            else:
                assert int(out.input_ids[b, position]) == t
                position += 1
    assert next_item == {t: items.shape[0] for t, items in batch.items.items()}  # every item used once


@PROPERTY_SETTINGS
@given(batch=batches(), padding_side=st.sampled_from(["right", "left"]))
def test_matches_the_per_sample_reference(batch: Batch, padding_side: str):
    out = combine(batch, padding_side=padding_side)
    expected = reference_combine(batch, padding_side)
    for name, value in expected.items():
        assert torch.equal(getattr(out, name), value), name


def test_matches_megatron_masked_scatter():
    """Our rows equal megatron-core MIMO's masked_scatter over the expanded ids (batch-then-sequence order)."""
    pytest.importorskip("megatron.core")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.models.mimo.model.base import MimoModel

    torch.manual_seed(0)
    input_ids = torch.tensor([[1, VID, 7, AUD, 8, 2], [1, AUD, 9, VID, 2, PAD], [1, 7, AUD, 2, PAD, PAD]])
    text = torch.randn(3, 6, 5)
    items = {VID: torch.randn(2, 4, 5), AUD: torch.randn(3, 2, 5)}
    out = combine_multimodal_inputs(input_ids, text, items, attention_mask=input_ids != PAD)

    is_text = (out.input_ids != VID) & (out.input_ids != AUD)  # Megatron: text is every other position
    megatron = MimoModel.align_embeddings_by_token_positions(
        None,  # the method does not use self
        modality_embeddings={
            "text": out.embeddings[is_text],
            "video": items[VID].flatten(0, 1),
            "audio": items[AUD].flatten(0, 1),
        },
        input_ids=out.input_ids,
        special_token_ids={"video": VID, "audio": AUD},
    )  # (S, B, D)
    assert torch.equal(megatron.transpose(0, 1), out.embeddings)


# --------------------------------------------------------------------------- small worked examples


def small_batch():
    """Two samples: 'a' with <video> and <audio>, 'b' with <video> only and two pads."""
    input_ids = torch.tensor([[1, VID, 7, AUD, 8, 2], [1, 7, VID, 2, PAD, PAD]])
    labels = torch.tensor([[-100, -100, -100, -100, 8, 2], [-100, -100, -100, 2, -100, -100]])
    mask = input_ids != PAD
    text = torch.randn(2, 6, 4)
    items = {VID: torch.randn(2, 3, 4), AUD: torch.randn(1, 2, 4)}
    return input_ids, text, items, mask, labels


def test_worked_example():
    input_ids, text, items, mask, labels = small_batch()
    out = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, labels=labels)
    assert out.input_ids.tolist() == [[1, 3, 3, 3, 7, 4, 4, 8, 2], [1, 7, 3, 3, 3, 2, 0, 0, 0]]
    assert out.modality_map.tolist() == [[0, 1, 1, 1, 0, 2, 2, 0, 0], [0, 0, 1, 1, 1, 0, -1, -1, -1]]
    assert out.labels.tolist() == [[-100] * 7 + [8, 2], [-100] * 5 + [2, -100, -100, -100]]
    assert out.position_ids.tolist() == [list(range(9)), [0, 1, 2, 3, 4, 5, 0, 0, 0]]
    assert out.lengths.tolist() == [9, 6]
    assert torch.equal(out.embeddings[1, 2:5], items[VID][1])  # the second video item belongs to sample 'b'
    assert MODALITY_NAMES[int(out.modality_map[0, 5])] == "audio"


def test_left_padding_for_generation():
    input_ids, text, items, mask, labels = small_batch()
    out = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, labels=labels, padding_side="left")
    assert out.input_ids.tolist()[1] == [0, 0, 0, 1, 7, 3, 3, 3, 2]
    assert out.attention_mask.tolist()[1] == [False] * 3 + [True] * 6
    assert out.position_ids.tolist()[1] == [0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert out.attention_mask[:, -1].all()  # every prompt ends at the last column


def test_default_attention_mask_and_no_labels():
    input_ids, text, items, mask, _ = small_batch()
    out = combine_multimodal_inputs(input_ids, text, items)
    explicit = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask)
    assert out.labels is None
    assert torch.equal(out.embeddings, explicit.embeddings) and torch.equal(out.attention_mask, explicit.attention_mask)


def test_text_only_batch():
    input_ids = torch.tensor([[1, 7, 8, 2]])
    out = combine_multimodal_inputs(input_ids, torch.randn(1, 4, 3), {})
    assert out.input_ids.tolist() == [[1, 7, 8, 2]] and (out.modality_map == TEXT).all()


def test_list_of_items_and_dtype_cast():
    input_ids, text, items, mask, labels = small_batch()
    as_lists = {VID: list(items[VID]), AUD: [items[AUD][0].double()]}
    out = combine_multimodal_inputs(input_ids, text, as_lists, attention_mask=mask)
    assert out.embeddings.dtype == text.dtype
    assert torch.equal(
        out.embeddings, combine_multimodal_inputs(input_ids, text, items, attention_mask=mask).embeddings
    )


def test_gradient_reaches_text_and_modality_embeddings():
    input_ids, text, items, mask, labels = small_batch()
    text.requires_grad_(True)
    for value in items.values():
        value.requires_grad_(True)
    out = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, labels=labels)
    weights = torch.randn_like(out.embeddings)
    (out.embeddings * weights).sum().backward()
    # each input row receives exactly the weights of the output row it was copied to
    assert torch.equal(text.grad[0, 2], weights[0, 4])  # token 7 of sample 'a' moved to position 4
    assert torch.equal(items[VID].grad[1], weights[1, 2:5])
    assert torch.equal(items[AUD].grad[0], weights[0, 5:7])
    # placeholder and padding rows of the text embeddings are not used
    assert not text.grad[0, 1].any() and not text.grad[1, 4:].any()


# --------------------------------------------------------------------------- errors


def test_fewer_items_than_placeholders_names_the_samples():
    input_ids, text, items, mask, _ = small_batch()
    items[VID] = items[VID][:1]
    with pytest.raises(
        CombineError, match=r"2 <video> \(id 3\) placeholder.*sample 'a': 1, sample 'b': 1.*but 1 video"
    ):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, sample_ids=["a", "b"])


def test_more_items_than_placeholders():
    input_ids, text, items, mask, _ = small_batch()
    items[AUD] = torch.randn(2, 2, 4)
    with pytest.raises(CombineError, match=r"1 <audio> .*sample 'a': 1, sample 'b': 0\).*but 2 audio"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, sample_ids=["a", "b"])


def test_samples_without_ids_are_named_by_index():
    input_ids, text, items, mask, _ = small_batch()
    items[VID] = items[VID][:1]
    with pytest.raises(CombineError, match=r"sample 0 of the batch: 1, sample 1 of the batch: 1"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask)


def test_items_without_any_placeholder():
    input_ids = torch.tensor([[1, 7, 2], [1, 8, 2]])
    with pytest.raises(CombineError, match=r"2 audio item\(s\) given but no sample .*<audio> \(id 4\)"):
        combine_multimodal_inputs(input_ids, torch.randn(2, 3, 4), {AUD: torch.randn(2, 5, 4)})


def test_placeholder_without_embeddings_names_the_sample():
    input_ids, text, items, mask, _ = small_batch()
    del items[AUD]
    with pytest.raises(CombineError, match=r"<audio> \(id 4\) placeholders \(sample 'a': 1\) but no audio embeddings"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, sample_ids=["a", "b"])


def test_too_long_is_an_error_naming_the_sample_and_its_length():
    input_ids, text, items, mask, _ = small_batch()
    with pytest.raises(
        CombineError, match=r"sample 'a': 9 positions \(4 text \+ 1 <video> x 3 \+ 1 <audio> x 2\).*max_length=8"
    ) as error:
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, max_length=8, sample_ids=["a", "b"])
    assert "sample 'b'" not in str(error.value)  # 'b' (6 positions) fits
    assert combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, max_length=9).embeddings.shape[1] == 9


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_truncation_on_request_cuts_on_the_right_and_warns(padding_side):
    input_ids, text, items, mask, labels = small_batch()
    full = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, labels=labels)
    with pytest.warns(UserWarning, match=r"sample 'a': 9 -> 7 positions, 2 answer token\(s\) lost"):
        out = combine_multimodal_inputs(
            input_ids,
            text,
            items,
            attention_mask=mask,
            labels=labels,
            max_length=7,
            truncate=True,
            sample_ids=["a", "b"],
            padding_side=padding_side,
        )
    assert out.embeddings.shape == (2, 7, 4)
    assert torch.equal(out.embeddings[0], full.embeddings[0, :7])  # 'a' keeps its first 7 positions
    assert (out.labels[0] == IGNORE_INDEX).all()  # ... and loses its answer
    assert out.lengths.tolist() == [7, 6]
    b_cols = slice(1, 7) if padding_side == "left" else slice(0, 6)
    assert torch.equal(out.embeddings[1, b_cols], full.embeddings[1, :6])  # 'b' is untouched


def test_truncation_through_a_video_keeps_its_first_tokens():
    input_ids, text, items, mask, labels = small_batch()
    with pytest.warns(UserWarning, match="sample 1 of the batch"):
        out = combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, max_length=3, truncate=True)
    assert out.input_ids.tolist() == [[1, 3, 3], [1, 7, 3]]
    assert torch.equal(out.embeddings[1, 2], items[VID][1, 0])


def test_width_mismatch():
    input_ids, text, items, mask, _ = small_batch()
    items[VID] = torch.randn(2, 3, 6)
    with pytest.raises(CombineError, match=r"width D=6 but the text embeddings have D=4.*output_size=4"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask)


def test_inconsistent_tokens_per_item():
    input_ids, text, items, mask, _ = small_batch()
    items[VID] = [torch.randn(3, 4), torch.randn(2, 4)]
    with pytest.raises(CombineError, match=r"different numbers of tokens \(item 0: 3, item 1: 2\)"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask)


def test_single_item_without_leading_axis():
    input_ids, text, items, mask, _ = small_batch()
    items[AUD] = items[AUD][0]
    with pytest.raises(CombineError, match=r"unsqueeze\(0\)"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask)


def test_bad_arguments():
    input_ids, text, items, mask, labels = small_batch()
    with pytest.raises(CombineError, match="text_embeddings must be"):
        combine_multimodal_inputs(input_ids, text[:, :5], items)
    with pytest.raises(CombineError, match="labels must be"):
        combine_multimodal_inputs(input_ids, text, items, labels=labels[:, :5])
    with pytest.raises(CombineError, match="input_ids must be"):
        combine_multimodal_inputs(input_ids[0], text, items)
    with pytest.raises(ValueError, match="padding_side"):
        combine_multimodal_inputs(input_ids, text, items, padding_side="middle")
    with pytest.raises(ValueError, match="truncate=True needs a max_length"):
        combine_multimodal_inputs(input_ids, text, items, truncate=True)
    with pytest.raises(ValueError, match="3 sample_ids given for a batch of 2"):
        combine_multimodal_inputs(input_ids, text, items, sample_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="no modality name"):
        combine_multimodal_inputs(input_ids, text, {**items, 9: torch.randn(0, 1, 4)})
    with pytest.raises(ValueError, match="is the pad_token_id"):
        combine_multimodal_inputs(
            input_ids,
            text,
            {**items, PAD: torch.randn(0, 1, 4)},
            attention_mask=mask,
            modality_names={PAD: "audio", VID: "video", AUD: "audio"},
        )
    with pytest.raises(ValueError, match="must be one of"):
        combine_multimodal_inputs(input_ids, text, items, modality_names={VID: "smell"})


def test_data_errors_are_input_errors_and_wrong_settings_are_bugs():
    """What the user's data can cause is a MimoInputError (one line from the CLIs); a wrong call is a plain bug."""
    input_ids, text, items, mask, labels = small_batch()
    with pytest.raises(MimoInputError, match="no audio embeddings"):  # a prompt with <audio> but no sound
        combine_multimodal_inputs(input_ids, text, {VID: items[VID]}, attention_mask=mask)
    with pytest.raises(MimoInputError, match="longer than max_length"):
        combine_multimodal_inputs(input_ids, text, items, attention_mask=mask, max_length=2)
    with pytest.raises(ValueError, match="padding_side") as caught:
        combine_multimodal_inputs(input_ids, text, items, padding_side="middle")
    assert not isinstance(caught.value, MimoInputError)


def test_custom_placeholder_ids():
    """Any id can be a placeholder, e.g. <image> (5) as a one-frame video."""
    input_ids = torch.tensor([[1, 5, 7, 2]])
    out = combine_multimodal_inputs(
        input_ids, torch.randn(1, 4, 3), {5: torch.randn(1, 2, 3)}, modality_names={5: "video"}
    )
    assert out.modality_map.tolist() == [[TEXT, VIDEO, VIDEO, TEXT, TEXT]]


# --------------------------------------------------------------------------- end to end


def test_end_to_end_with_the_real_tokenizer_and_dataset():
    """Tokenizer.default + encode_conversation + collate_av_batch, with the default model's tokens per clip."""
    config = MIMOConfig()
    num_video, num_audio = config.num_video_tokens, config.num_audio_tokens  # 16 and 25
    tokenizer = Tokenizer.default()
    dataset = SyntheticAVDataset(3, tokenizer=tokenizer, num_turns=2)
    samples = [dataset[i] for i in range(3)]
    # a fourth sample that only asks about the sound: <audio> but no <video>
    audio_only = dict(samples[2], id="audio-only", video=None)
    audio_only["conversations"] = [
        {"from": "human", "value": "<audio>\nWhich instrument do you hear?"},
        {"from": "gpt", "value": "That is a flute."},
    ]
    ids, labels = encode_conversation(tokenizer, audio_only["conversations"])
    audio_only.update(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
    samples.append(audio_only)
    batch = collate_av_batch(samples, pad_id=tokenizer.pad_id)

    width = 32
    torch.manual_seed(0)
    word_embeddings = torch.nn.Embedding(tokenizer.vocab_size, width)
    video = torch.randn(int(batch.has_video.sum()), config.num_video_tokens, width)  # one item per <video>
    audio = torch.randn(int(batch.has_audio.sum()), config.num_audio_tokens, width)
    out = combine_multimodal_inputs(
        batch.input_ids,
        word_embeddings(batch.input_ids),
        {tokenizer.video_token_id: video, tokenizer.audio_token_id: audio},
        attention_mask=batch.attention_mask,
        labels=batch.labels,
        pad_token_id=tokenizer.pad_id,
        max_length=config.language_model.max_sequence_length,
        sample_ids=batch.id,
    )

    text_lengths = batch.attention_mask.sum(1)
    expected = text_lengths - 2 + num_video + num_audio
    expected[3] = text_lengths[3] - 1 + num_audio
    assert out.lengths.tolist() == expected.tolist()
    for b in range(4):
        real = out.attention_mask[b]
        text_ids = out.input_ids[b, real & (out.modality_map[b] == TEXT)]
        original = batch.input_ids[b, batch.attention_mask[b]]
        # the text reads the same once the placeholders are dropped ...
        assert tokenizer.decode(text_ids) == tokenizer.decode(original[(original != VID) & (original != AUD)])
        # ... and the loss sees exactly the answers of the conversation
        supervised = out.labels[b][out.labels[b] != IGNORE_INDEX]
        assert torch.equal(supervised, batch.labels[b][batch.labels[b] != IGNORE_INDEX])
        assert "<eos>" in tokenizer.decode(supervised)
    assert torch.equal(out.embeddings[3, real_start(out, 3, AUDIO) : real_start(out, 3, AUDIO) + num_audio], audio[3])
    assert torch.equal(out.embeddings[0][out.modality_map[0] == VIDEO], video[0])
    # the batch is still too long for a tight limit, and the error says which sample
    with pytest.raises(CombineError, match=rf"sample 'synthetic-0-\d'.*{num_video} \+ 1 <audio> x {num_audio}"):
        combine_multimodal_inputs(
            batch.input_ids,
            word_embeddings(batch.input_ids),
            {tokenizer.video_token_id: video, tokenizer.audio_token_id: audio},
            attention_mask=batch.attention_mask,
            max_length=int(expected[:3].min()) - 1,  # every clip with a video is too long
            sample_ids=batch.id,
        )


def real_start(out, b: int, modality: int) -> int:
    return int((out.modality_map[b] == modality).nonzero()[0])
