"""The model answers with a sound (chapter 10): audio-out tokens, constrained decoding, the tasks and the judge.

Tiny configs, seconds each; the last tests re-check the committed ``mimo_toy_speaks`` on a few held-out
requests per task (skipped if it is not committed).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mimo_lib.audio_codec import AudioCodeError
from mimo_lib.audio_output import (
    AudioJudge,
    TextOnlyModelError,
    UnclosedAudioSpanError,
    audio_answer,
    audio_spans,
    evaluate_audio_output,
    extend_config,
    extend_model,
    fit_length,
    generate_with_audio,
    require_audio_output,
    shipped_codec,
    target_codes,
    target_of_answer,
    tokenizer_for,
)
from mimo_lib.checkpoint import load_model, load_tokenizer, save_model_only
from mimo_lib.config import MIMOConfig, get_preset
from mimo_lib.constants import HELD_OUT_SEED_OFFSET
from mimo_lib.data.synthetic import (
    AUDIO_OUT_TYPES,
    COLOUR_PITCHES,
    INSTRUMENTS,
    PITCHES,
    SHAPE_INSTRUMENTS,
    make_sample,
)
from mimo_lib.errors import MimoInputError
from mimo_lib.language_model import make_position_ids
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer
from mimo_lib.towers import PRETRAINED_DIR

SPEAKS = PRETRAINED_DIR / "mimo_toy_speaks"
TOY = PRETRAINED_DIR / "mimo_toy"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_model(seed: int = 0) -> MIMOModel:
    torch.manual_seed(seed)
    return MIMOModel(get_preset("tiny")).eval()


# --------------------------------------------------------------------------- vocabulary


def test_the_extended_tokenizer_keeps_every_old_id_and_adds_the_audio_tokens_after_them(tmp_path):
    text, speaks = Tokenizer.default(), Tokenizer.with_audio_codes(256)
    assert text.vocab_size == 359 and speaks.vocab_size == 359 + 2 + 256
    assert all(text.id_to_token(i) == speaks.id_to_token(i) for i in range(text.vocab_size))
    assert (speaks.audio_out_id, speaks.audio_out_end_id, speaks.first_audio_code_id) == (359, 360, 361)
    sentence = "What instrument is playing?"
    assert speaks.encode(sentence) == text.encode(sentence)
    answer = " <audio_out><audio_code_0><audio_code_255></audio_out>"
    ids = speaks.encode(answer)
    assert ids[1:] == [359, 361, 616, 360] and speaks.decode(ids) == answer
    speaks.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(tmp_path / "tokenizer.json").vocab_size == speaks.vocab_size
    with pytest.raises(MimoInputError, match="unknown audio code <audio_code_256>"):
        speaks.encode("<audio_code_256>")
    with pytest.raises(ValueError, match="no audio-out tokens"):
        _ = text.audio_out_id
    assert text.decode(text.encode("<audio_out>")) == "<audio_out>"  # the text tokenizer spells it in bytes


def test_extending_a_model_keeps_its_text_logits_and_greedy_answers():
    model = tiny_model()
    prompt = torch.randint(6, 359, (2, 9), generator=torch.Generator().manual_seed(1))  # (B, L) text ids
    before = model.language_model(input_ids=prompt).logits  # (B, L, 384)
    answers_before = model.generate(prompt, max_new_tokens=6)
    extended = extend_model(model)
    config = extended.config
    assert config.language_model.vocab_size == 617 and config.language_model.padded_vocab_size == 640
    assert config.audio_output.start_id == 359 and config.audio_output.first_code_id == 361
    after = extended.language_model(input_ids=prompt).logits  # (B, L, 640)
    assert torch.equal(after[..., :359], before[..., :359])
    assert torch.equal(extended.generate(prompt, max_new_tokens=6), answers_before)
    assert extend_model(extended) is extended  # already extended: unchanged
    # the config round-trips, and a text-only config reads exactly as before chapter 10
    assert MIMOConfig.from_dict(config.to_dict()) == config
    assert "audio_output" not in get_preset("toy").to_dict()
    assert tokenizer_for(config).vocab_size == 617 and tokenizer_for(get_preset("tiny")).vocab_size == 359


def test_a_saved_speaking_model_loads_with_its_tokenizer(tmp_path):
    model = extend_model(tiny_model())
    folder = save_model_only(model, tmp_path / "speaks", tokenizer_for(model.config))
    loaded = load_model(folder)
    assert loaded.config == model.config
    assert load_tokenizer(folder).vocab_size == 617
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


# --------------------------------------------------------------------------- constrained decoding


class Boosted(nn.Module):
    """A language model whose logits get ``bias`` added: makes a random model open spans often."""

    def __init__(self, inner: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.bias, self.config = inner, bias, inner.config

    def embed_tokens(self, ids):
        return self.inner.embed_tokens(ids)

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        return dataclasses.replace(out, logits=out.logits + self.bias)


def constrained_samples(codes_per_span: int, do_sample: bool, max_new_tokens: int = 60, seed: int = 0, boost=8.0):
    model = extend_model(tiny_model(), codes_per_span=codes_per_span)
    out = model.config.audio_output
    bias = torch.zeros(model.config.language_model.padded_vocab_size)
    bias[out.start_id] = boost  # open a span often
    bias[model.config.eos_token_id] = -20.0  # and rarely stop
    lm = Boosted(model.language_model, bias)
    ids = torch.randint(6, 359, (8, 5), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids, dtype=torch.bool)
    tokens = generate_with_audio(
        lm, model.language_model.embed_tokens(ids), mask, make_position_ids(mask), out, max_new_tokens,
        model.config.eos_token_id, do_sample=do_sample, temperature=3.0,
        generator=torch.Generator().manual_seed(seed),
    )
    return tokens, out


@pytest.mark.parametrize("do_sample", [False, True])
def test_constrained_decoding_never_writes_a_code_outside_a_span_nor_text_inside(do_sample):
    tokens, out = constrained_samples(codes_per_span=4, do_sample=do_sample)
    spans_seen = 0
    for row in tokens.tolist():
        inside, count = False, 0
        for token in row:
            is_code = out.first_code_id <= token < out.stop_id
            if inside:
                if count < out.codes_per_span:
                    assert is_code, row
                    count += 1
                else:
                    assert token == out.end_id, row  # closed after exactly codes_per_span codes
                    inside, spans_seen = False, spans_seen + 1
            else:
                assert not is_code and token != out.end_id, row
                assert token < out.start_id or token == out.start_id
                if token == out.start_id:
                    inside, count = True, 0
    assert spans_seen >= 8  # the check above was exercised


def test_a_span_holds_exactly_codes_per_span_codes():
    tokens, out = constrained_samples(codes_per_span=25, do_sample=False, max_new_tokens=27, boost=100.0)
    for row in tokens.tolist():  # the boost opens a span at once; then nothing can outbid the constraint
        assert row[0] == out.start_id
        assert all(out.first_code_id <= t < out.stop_id for t in row[1:26]) and row[26] == out.end_id
        assert len(audio_spans(row, out, eos_token_id=2)[0]) == 25


def test_bad_spans_are_clear_errors():
    out = extend_config(get_preset("tiny")).audio_output
    code = out.first_code_id
    with pytest.raises(UnclosedAudioSpanError, match="did not close .* raise --max-new-tokens"):
        audio_spans([out.start_id, code, code], out, eos_token_id=2)
    with pytest.raises(AudioCodeError, match="unknown audio code id 100"):
        audio_spans([out.start_id, code, 100, out.end_id], out, eos_token_id=2)
    with pytest.raises(AudioCodeError, match="closes no open span"):
        audio_spans([out.end_id], out, eos_token_id=2)
    assert audio_spans([out.start_id, code, out.end_id, 2, out.start_id], out, eos_token_id=2) == [[0]]
    with pytest.raises(TextOnlyModelError, match="text-only model .* --stage speak"):
        require_audio_output(get_preset("tiny"))
    assert issubclass(UnclosedAudioSpanError, MimoInputError) and issubclass(AudioCodeError, MimoInputError)


# --------------------------------------------------------------------------- the CLI


def test_the_cli_refuses_audio_output_from_a_text_only_model(tmp_path, capsys):
    from mimo_lib.generate import main

    wav = tmp_path / "answer.wav"
    code = main(["--load", str(TOY), "--video", "data_samples/clip-00.mp4", "--prompt", "Play a low piano note.",
                 "--output-audio", str(wav)])
    err = capsys.readouterr().err
    assert code == 2 and "text-only model" in err and len(err.strip().splitlines()) == 1
    assert not wav.exists()
    with pytest.raises(SystemExit):
        main(["--load", str(TOY), "--video", "x.mp4", "--prompt", "a", "--output-audio", str(tmp_path / "a.mp3")])


def test_an_answer_becomes_a_wav_of_the_right_length(tmp_path):
    from mimo_lib.audio_codec import SHIPPED_CODEC
    from mimo_lib.data.media import read_audio
    from mimo_lib.generate import shown_answer, write_answer_audio

    model = extend_model(tiny_model())
    tokenizer = tokenizer_for(model.config)
    ids = tokenizer.encode(" Here:" + audio_answer("flute", "high")) + [tokenizer.eos_id] * 3
    seconds = write_answer_audio(model, tokenizer, ids, tmp_path / "answer.wav", SHIPPED_CODEC)
    assert seconds == pytest.approx(1.0)
    assert read_audio(tmp_path / "answer.wav").shape == (16_000,)
    assert shown_answer(tokenizer, ids) == "Here:<audio_out>(25 codes)</audio_out>"
    with pytest.raises(MimoInputError, match="without a sound"):
        write_answer_audio(model, tokenizer, tokenizer.encode(" No.") + [2], tmp_path / "none.wav", SHIPPED_CODEC)
    assert not (tmp_path / "none.wav").exists()


# --------------------------------------------------------------------------- the tasks


def test_each_task_asks_for_the_right_note_and_its_answer_sounds_like_it():
    judge, codec = AudioJudge(), shipped_codec()
    codes, wants = [], []
    for qt in AUDIO_OUT_TYPES:
        for seed in range(3):
            sample = make_sample([5, seed], qt)
            event, (request, answer) = sample.clip.events[0], (t["value"] for t in sample.conversations)
            target = target_of_answer(answer)
            assert request.split("\n")[-1].startswith("Play")
            if qt == "play_heard":
                assert target == {"instrument": event.instrument, "pitch": event.pitch}
            elif qt == "play_shifted":
                assert target["instrument"] == event.instrument and target["pitch"] != event.pitch
                assert ("higher" in request) == (event.pitch == "low")
            elif qt == "play_shape":
                assert target == {"instrument": SHAPE_INSTRUMENTS[event.shape], "pitch": COLOUR_PITCHES[event.colour]}
            else:
                assert target["instrument"] in request and target["pitch"] in request
            codes.append(target_codes(**target))
            wants.append(target)
    waves = codec.codes_to_waveform(torch.tensor(codes))  # (N, 16000)
    assert judge(fit_length(waves, 16_000)) == wants
    assert len({target_codes(i, p) for i in INSTRUMENTS for p in PITCHES}) == 8  # every note its own answer


def test_a_tiny_speak_stage_extends_a_text_model_and_trains(tmp_path):
    from mimo_lib import train

    text_model = tiny_model()
    save_model_only(text_model, tmp_path / "text", Tokenizer.default())
    result = train.train(train.TrainConfig(
        preset="tiny", stage="speak", load=str(tmp_path / "text"), save=str(tmp_path / "run"), train_iters=3,
        num_samples=16, micro_batch_size=4, eval_samples=0, save_interval=0,
    ))
    assert result.model.config.audio_output is not None
    assert load_tokenizer(result.final).audio_codebook_size == 256
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.metrics)
    with pytest.raises(MimoInputError, match="play_text"):
        train.prepare_run(train.TrainConfig(preset="tiny", stage="instruct", question_types=("play_text",)))


# --------------------------------------------------------------------------- the committed model


@pytest.fixture(scope="module")
def speaks():
    if not SPEAKS.is_dir():
        pytest.skip("mimo_toy_speaks is not committed (python benchmarks/audio_output.py --publish)")
    model = load_model(SPEAKS)
    return model, load_tokenizer(SPEAKS)


def test_the_committed_speaking_model_plays_the_right_notes(speaks):
    from mimo_lib.evaluate import build_dataset

    model, tokenizer = speaks
    per_task = 12
    held_out = build_dataset("synthetic", model.config, tokenizer, per_task * len(AUDIO_OUT_TYPES),
                             HELD_OUT_SEED_OFFSET + 29, AUDIO_OUT_TYPES)
    table = evaluate_audio_output(model, held_out, tokenizer)
    floors = {"play_text": 0.9, "play_heard": 0.8, "play_shifted": 0.8, "play_shape": 0.8}  # the goals
    for task, floor in floors.items():
        assert table[task]["both"] >= floor, table


def test_the_committed_speaking_model_writes_a_wav_from_the_command_line(speaks, tmp_path, capsys):
    from mimo_lib.data.media import read_audio
    from mimo_lib.generate import main

    wav = tmp_path / "piano.wav"
    code = main(["--load", str(SPEAKS), "--video", "data_samples/clip-00.mp4", "--prompt", "Play a low piano note.",
                 "--output-audio", str(wav)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "<audio_out>(25 codes)</audio_out>" in captured.out
    waveform = read_audio(wav)
    assert waveform.shape == (16_000,)
    assert AudioJudge()(waveform[None]) == [{"instrument": "piano", "pitch": "low"}]
    code = main(["--load", str(SPEAKS), "--video", "data_samples/clip-00.mp4", "--prompt", "Play a low piano note.",
                 "--output-audio", str(tmp_path / "cut.wav"), "--max-new-tokens", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "did not close" in err and not (tmp_path / "cut.wav").exists()
