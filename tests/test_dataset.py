"""Datasets, the annotation format, conversations to labels, collate, and data_samples/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mimo_lib.data.conversation import IGNORE_INDEX, build_prompt, encode_conversation
from mimo_lib.data.dataset import (
    AVFolderDataset,
    SyntheticAVDataset,
    collate_av_batch,
    load_annotations,
    split_dataset,
)
from mimo_lib.data.make_samples import make_samples
from mimo_lib.data.media import read_audio, read_video_frames, write_audio, write_video
from mimo_lib.data.synthetic import PITCHES, QUESTION_TYPES, dominant_frequency
from mimo_lib.errors import DatasetFormatError, MediaError
from mimo_lib.tokenizer import Tokenizer

DATA_SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


def qa(question: str, answer: str = "That is a flute.") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def tiny_mp4(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    frames = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    frames[:, 0] = 200
    audio = 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(8000) / 16_000)
    return write_video(folder / "clip.mp4", frames, fps=16, audio=audio, sample_rate=16_000)


def write_folder(folder: Path, records: list, media: Path | None = None, as_json_array: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if media is not None:
        shutil.copy(media, folder / "clip.mp4")
    if as_json_array:
        (folder / "conversations.json").write_text(json.dumps(records))
    else:
        (folder / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


# --------------------------------------------------------------------------- conversations


def test_labels_cover_only_the_answers(tokenizer):
    turns = qa("<video>\n<audio>\nWhat instrument is playing?") + qa("Is the note high or low?", "The note is low.")
    input_ids, labels = encode_conversation(tokenizer, turns)
    assert len(input_ids) == len(labels)
    assert input_ids[0] == tokenizer.bos_id and labels[0] == IGNORE_INDEX
    supervised = [i for i, label in zip(input_ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(supervised) == " That is a flute.<eos> The note is low.<eos>"
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(input_ids, labels))
    assert input_ids.count(tokenizer.video_token_id) == 1 and input_ids.count(tokenizer.audio_token_id) == 1


def test_prompt_ends_where_the_answer_starts(tokenizer):
    prompt = build_prompt(tokenizer, "What instrument is playing?")
    full, _ = encode_conversation(tokenizer, qa("<video>\n<audio>\nWhat instrument is playing?"))
    assert full[: len(prompt)] == prompt
    assert tokenizer.decode(prompt).endswith("Assistant:")


def test_bad_turns_are_rejected(tokenizer):
    with pytest.raises(ValueError, match="turn 1 is from 'human'"):
        encode_conversation(tokenizer, [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}])
    with pytest.raises(ValueError, match="ends on a human turn"):
        encode_conversation(tokenizer, [{"from": "human", "value": "a"}])


# --------------------------------------------------------------------------- synthetic dataset


def test_synthetic_dataset_balances_types_and_is_deterministic(tokenizer):
    dataset = SyntheticAVDataset(20, seed=3, tokenizer=tokenizer)
    types = [dataset[i]["question_type"] for i in range(len(dataset))]
    assert all(types.count(t) == 4 for t in QUESTION_TYPES)
    a, b = dataset[7], SyntheticAVDataset(20, seed=3, tokenizer=tokenizer)[7]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["video"], SyntheticAVDataset(20, seed=4)[7]["video"])
    with pytest.raises(IndexError):
        dataset[20]


def test_collate_pads_and_masks(tokenizer):
    samples = [SyntheticAVDataset(5, seed=0, tokenizer=tokenizer)[i] for i in range(5)]
    batch = collate_av_batch(samples, pad_id=tokenizer.pad_id)
    lengths = [s["input_ids"].shape[0] for s in samples]
    assert batch.video.shape == (5, 8, 3, 64, 64) and batch.video.dtype == torch.uint8
    assert batch.audio.shape == (5, 16_000)
    assert batch.input_ids.shape == (5, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths
    short = lengths.index(min(lengths))
    assert (batch.input_ids[short, min(lengths) :] == tokenizer.pad_id).all()
    assert (batch.labels[short, min(lengths) :] == IGNORE_INDEX).all()
    assert batch.has_video.all() and batch.has_audio.all()


def test_collate_fills_missing_modalities_and_rejects_mismatched_frames():
    with_video = {"id": "a", "video": torch.ones(4, 3, 8, 8, dtype=torch.uint8), "audio": None, "conversations": []}
    audio_only = {"id": "b", "video": None, "audio": torch.ones(100), "conversations": []}
    batch = collate_av_batch([with_video, audio_only])
    assert batch.has_video.tolist() == [True, False] and batch.has_audio.tolist() == [False, True]
    assert batch.video[1].sum() == 0 and batch.audio[0].abs().sum() == 0 and batch.audio[1].sum() == 100
    other = dict(with_video, id="c", video=torch.ones(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(DatasetFormatError, match="differ in shape.*a: .*c: "):
        collate_av_batch([with_video, other])


# --------------------------------------------------------------------------- the folder format


def test_data_samples_load_as_documented(tokenizer):
    dataset = AVFolderDataset(DATA_SAMPLES, num_frames=8, image_size=64, tokenizer=tokenizer)
    dataset.check_media()
    assert 8 <= sum(1 for a in dataset.annotations if a.video_path) <= 12
    assert {a.question_type for a in dataset.annotations} == set(QUESTION_TYPES)
    batch = collate_av_batch([dataset[i] for i in range(len(dataset))], tokenizer.pad_id)
    assert batch.video.shape[1:] == (8, 3, 64, 64)
    # every clip brings its own audio track; the stand-alone sounds have no video
    assert batch.has_audio.all()
    assert batch.has_video.tolist() == [a.video_path is not None for a in dataset.annotations]
    total = sum(f.stat().st_size for f in DATA_SAMPLES.iterdir())
    assert total < 5_000_000


def test_data_samples_answers_match_their_audio():
    for record in load_annotations(DATA_SAMPLES):
        answer = record.conversations[1]["value"]
        if record.question_type == "audio" and answer.startswith("The note is"):
            source = record.audio_path or record.video_path
            frequency = dominant_frequency(read_audio(source), 16_000)
            pitch = answer.removeprefix("The note is ").rstrip(".")
            assert frequency == pytest.approx(PITCHES[pitch], rel=0.06), record.where


def test_make_samples_regenerates_data_samples(tmp_path):
    records = make_samples(tmp_path)
    committed = (DATA_SAMPLES / "conversations.jsonl").read_text()
    assert (tmp_path / "conversations.jsonl").read_text() == committed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in DATA_SAMPLES.iterdir() if p.name != "README.md"
    )
    for record in records[:2]:
        fresh = read_video_frames(tmp_path / record["video"], 8).float()
        stored = read_video_frames(DATA_SAMPLES / record["video"], 8).float()
        assert (fresh - stored).abs().mean() < 2.0


def test_json_array_is_accepted(tmp_path, tiny_mp4):
    folder = write_folder(
        tmp_path / "d",
        [{"id": 1, "video": "clip.mp4", "conversations": qa("<video>\nWhat?")}],
        tiny_mp4,
        as_json_array=True,
    )
    dataset = AVFolderDataset(folder, num_frames=4, image_size=32)
    sample = dataset[0]
    assert sample["id"] == "1" and sample["video"].shape == (4, 3, 32, 32) and sample["audio"] is None


def test_audio_placeholder_takes_the_video_track(tmp_path, tiny_mp4):
    folder = write_folder(
        tmp_path / "d", [{"id": "x", "video": "clip.mp4", "conversations": qa("<video>\n<audio>\nWhat?")}], tiny_mp4
    )
    sample = AVFolderDataset(folder, image_size=32, clip_duration_s=1.0)[0]
    assert sample["audio"].shape == (16_000,)  # 0.5 s of sound, zero-padded to 1 s
    assert sample["audio"][9000:].abs().max() == 0
    assert dominant_frequency(sample["audio"][:8000], 16_000) == pytest.approx(440, rel=0.03)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "conversations": []}', "{not json"], r"conversations.jsonl:2: line is not valid JSON"),
        (['{"conversations": []}'], r"conversations.jsonl:1: sample is missing the required field 'id'"),
        (['{"id": "a"}'], r"conversations.jsonl:1: sample is missing the required field 'conversations'"),
        (
            ["", '{"id": "a", "conversations": "hi"}'],
            r"conversations.jsonl:2 \(id 'a'\): 'conversations' must be a non-empty list",
        ),
        (
            ['{"id": "a", "conversations": [{"from": "gpt", "value": "x"}]}'],
            r"turn 0 is from 'gpt' but 'human' was expected",
        ),
        (["[1, 2]"], r"each sample must be a JSON object"),
    ],
)
def test_annotation_errors_name_the_line(tmp_path, lines, message):
    (tmp_path / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        load_annotations(tmp_path)


def test_more_placeholders_than_media_names_the_sample(tmp_path, tiny_mp4):
    records = [
        {"id": "ok", "video": "clip.mp4", "conversations": qa("<video>\nWhat?")},
        {"id": "greedy", "video": "clip.mp4", "conversations": qa("<video>\n<video>\nWhat?")},
    ]
    write_folder(tmp_path, records, tiny_mp4)
    with pytest.raises(DatasetFormatError, match=r":2 \(id 'greedy'\): more placeholders than media: 2 <video>"):
        load_annotations(tmp_path)
    write_folder(tmp_path, [{"id": "deaf", "conversations": qa("<audio>\nWhat?")}])
    with pytest.raises(DatasetFormatError, match=r"id 'deaf'.*1 <audio> for 0 audio"):
        load_annotations(tmp_path)


def test_media_without_placeholder_and_duplicates_are_rejected(tmp_path, tiny_mp4):
    write_folder(tmp_path, [{"id": "a", "video": "clip.mp4", "conversations": qa("What?")}], tiny_mp4)
    with pytest.raises(DatasetFormatError, match="no turn has a <video> placeholder"):
        load_annotations(tmp_path)
    record = {"id": "a", "video": "clip.mp4", "conversations": qa("<video>\nWhat?")}
    write_folder(tmp_path, [record, record], tiny_mp4)
    with pytest.raises(DatasetFormatError, match=r":2 \(id 'a'\): duplicate id, first used at conversations.jsonl:1"):
        load_annotations(tmp_path)


def test_missing_media_file_is_named(tmp_path):
    write_folder(tmp_path, [{"id": "a", "video": "nowhere.mp4", "conversations": qa("<video>\nWhat?")}])
    with pytest.raises(MediaError, match=r"conversations.jsonl:1 \(id 'a'\): video file .*nowhere.mp4 not found"):
        load_annotations(tmp_path)


def test_missing_folder_or_annotation_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_annotations(tmp_path / "nope")
    with pytest.raises(DatasetFormatError, match="no annotation file"):
        load_annotations(tmp_path)


def test_video_without_audio_track(tmp_path):
    silent = write_video(tmp_path / "clip.mp4", torch.zeros(8, 3, 32, 32, dtype=torch.uint8), fps=8)
    write_folder(tmp_path, [{"id": "mute", "video": "clip.mp4", "conversations": qa("<video>\n<audio>\nWhat?")}])
    assert silent.exists()
    with pytest.raises(MediaError, match=r"id 'mute'.*no audio track"):
        AVFolderDataset(tmp_path, image_size=32)[0]
    with pytest.warns(UserWarning, match="no audio track"):
        sample = AVFolderDataset(tmp_path, image_size=32, allow_missing_audio=True)[0]
    assert sample["audio"].abs().max() == 0 and sample["audio"].shape[0] == pytest.approx(16_000, abs=200)


def test_corrupt_media_is_reported_with_the_sample(tmp_path, tiny_mp4):
    data = tiny_mp4.read_bytes()
    (tmp_path / "clip.mp4").write_bytes(data[: len(data) // 3])
    write_folder(tmp_path, [{"id": "broken", "video": "clip.mp4", "conversations": qa("<video>\nWhat?")}])
    dataset = AVFolderDataset(tmp_path, image_size=32)
    with pytest.raises(MediaError, match=r"id 'broken'.*clip.mp4"):
        dataset[0]


def test_every_synthetic_conversation_tokenizes_without_byte_fallback(tokenizer):
    """The default vocabulary covers the chat template and every sentence: no word is spelled in bytes."""
    byte_ids = {tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256)}
    for question_type in QUESTION_TYPES + ("caption",):
        for index in range(30):
            sample = SyntheticAVDataset(30, seed=5, question_types=[question_type], num_turns=2, tokenizer=tokenizer)[index]
            used = set(sample["input_ids"].tolist())
            assert not used & byte_ids, tokenizer.tokenize(tokenizer.decode(sample["input_ids"]))


# --------------------------------------------------------------------------- hostile annotation files


def one_record(video: str = "clip.mp4", **extra) -> dict:
    return {"id": "a", "video": video, "conversations": qa("<video>\nWhat?"), **extra}


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, tiny_mp4):
    write_folder(tmp_path, [one_record()], tiny_mp4)
    annotation = tmp_path / "conversations.jsonl"
    annotation.write_bytes(b"\xef\xbb\xbf" + annotation.read_bytes())  # what Notepad writes
    assert [a.sample_id for a in load_annotations(tmp_path)] == ["a"]


def test_other_encodings_are_named(tmp_path, tiny_mp4):
    write_folder(tmp_path, [one_record()], tiny_mp4)
    annotation = tmp_path / "conversations.jsonl"
    text = annotation.read_text().replace("What?", "Qu'est-ce que c'est, café?")
    annotation.write_bytes(text.encode("latin-1"))
    with pytest.raises(DatasetFormatError, match=r"conversations.jsonl:1: is not UTF-8 .*Latin-1.*save it as UTF-8"):
        load_annotations(tmp_path)
    annotation.write_bytes(text.encode("utf-16"))
    with pytest.raises(DatasetFormatError, match=r"conversations.jsonl: is UTF-16 encoded; save it as UTF-8"):
        load_annotations(tmp_path)


@pytest.mark.parametrize("name", ["conversations.jsonl", "conversations.json"])
def test_deeply_nested_json_is_a_clear_error(tmp_path, name):
    (tmp_path / name).write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetFormatError, match="nested too deeply"):
        load_annotations(tmp_path)


def test_a_conversation_ending_on_a_question_names_the_sample(tmp_path, tiny_mp4):
    record = one_record()
    record["conversations"] = record["conversations"] + [{"from": "human", "value": "And then?"}]
    write_folder(tmp_path, [one_record() | {"id": "fine"}, record], tiny_mp4)
    with pytest.raises(DatasetFormatError, match=r"conversations.jsonl:2 \(id 'a'\): the conversation ends on a human"):
        load_annotations(tmp_path)


@pytest.mark.parametrize("bad_id", [None, True, "", ["a"], {"x": 1}, 1.5])
def test_ids_must_be_strings_or_integers(tmp_path, tiny_mp4, bad_id):
    write_folder(tmp_path, [one_record(id=bad_id)], tiny_mp4)
    with pytest.raises(DatasetFormatError, match=r"conversations.jsonl:1: 'id' must be a non-empty string or an integer"):
        load_annotations(tmp_path)
    write_folder(tmp_path, [one_record(id=7)], tiny_mp4)
    assert load_annotations(tmp_path)[0].sample_id == "7"


def test_unknown_keys_are_warned_about(tmp_path, tiny_mp4):
    write_folder(tmp_path, [one_record(audios="sound.wav"), one_record(id="b", audios="x.wav")], tiny_mp4)
    with pytest.warns(UserWarning, match=r"unknown key 'audios' in 2 sample\(s\) \(first at conversations.jsonl:1"):
        load_annotations(tmp_path)


def test_media_paths_may_leave_the_dataset_folder(tmp_path, tiny_mp4):
    """Documented choice: relative paths start at the annotation file's folder and may use ../, as absolute
    paths may name any file: the annotation file is trusted to say which files to read."""
    shutil.copy(tiny_mp4, tmp_path / "shared.mp4")
    write_folder(tmp_path / "dataset", [one_record(video="../shared.mp4")])
    (sample,) = load_annotations(tmp_path / "dataset")
    assert sample.video_path.resolve() == (tmp_path / "shared.mp4").resolve()
    write_folder(tmp_path / "dataset", [one_record(video="../../missing.mp4")])
    with pytest.raises(MediaError, match=r"video file .*missing.mp4 not found"):
        load_annotations(tmp_path / "dataset")


def test_data_path_pointing_at_a_media_file(tmp_path, tiny_mp4):
    with pytest.raises(DatasetFormatError, match=r"clip.mp4 is a .mp4 file, not an annotation file: pass the folder"):
        load_annotations(tiny_mp4)


def test_check_media_decodes_every_clip_and_lists_every_bad_sample(tmp_path, tiny_mp4):
    shutil.copy(tiny_mp4, tmp_path / "good.mp4")
    write_video(tmp_path / "mute.mp4", torch.zeros(8, 3, 32, 32, dtype=torch.uint8), fps=8)  # no audio track
    write_audio(tmp_path / "sound.wav", 0.1 * torch.ones(1600), 16_000)
    data = tiny_mp4.read_bytes()
    middle = len(data) // 2
    (tmp_path / "garbled.mp4").write_bytes(data[:middle] + bytes(range(256)) * 2 + data[middle + 512 :])
    records = [
        {"id": "good", "video": "good.mp4", "conversations": qa("<video>\n<audio>\nWhat?")},
        {"id": "mute", "video": "mute.mp4", "conversations": qa("<video>\n<audio>\nWhat?")},
        {"id": "sound-as-video", "video": "sound.wav", "conversations": qa("<video>\nWhat?")},
        {"id": "garbled", "video": "garbled.mp4", "conversations": qa("<video>\nWhat?")},
    ]
    write_folder(tmp_path, records)
    dataset = AVFolderDataset(tmp_path, num_frames=4, image_size=32, clip_duration_s=1.0)
    with pytest.raises(MediaError) as error:
        dataset.check_media(progress=False)
    message = str(error.value)
    assert message.startswith("3 of 4 samples have media that cannot be read")
    assert "id 'mute'" in message and "no audio track" in message
    assert "id 'sound-as-video'" in message and "no video stream" in message
    assert "id 'garbled'" in message and "id 'good'" not in message
    silent = AVFolderDataset(tmp_path, num_frames=4, image_size=32, allow_missing_audio=True)
    with pytest.warns(UserWarning, match="no audio track"), pytest.raises(MediaError, match="^2 of 4 samples"):
        silent.check_media(progress=False)


def test_split_dataset_is_deterministic_and_disjoint():
    data = list(range(20))
    train, valid = split_dataset(data, 0.2, seed=3)
    assert len(valid) == 4 and len(train) == 16
    assert sorted(list(train) + list(valid)) == data
    again_train, again_valid = split_dataset(data, 0.2, seed=3)
    assert list(again_valid) == list(valid) and list(again_train) == list(train)
    assert list(split_dataset(data, 0.2, seed=4)[1]) != list(valid)
    assert split_dataset(data, 0.0, seed=3) == (data, None)
    assert len(split_dataset(data[:3], 0.01, seed=0)[1]) == 1  # at least one held out
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(DatasetFormatError, match="validation fraction"):
            split_dataset(data, bad, seed=0)
    with pytest.raises(DatasetFormatError, match="keep one to train on"):
        split_dataset(data[:1], 0.5, seed=0)
