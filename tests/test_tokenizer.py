"""Tests for mimo_lib.tokenizer: word pieces with byte fallback."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mimo_lib.tokenizer import SPECIAL_TOKENS, Tokenizer, byte_token, pre_tokenize

CORPUS = [
    "<video> What instrument is playing?",
    "A guitar is playing.",
    "A red guitar and a blue drum.",
    "<audio> The drum is loud!",
    "The guitar is quiet, the drum is loud.",
    "Count: 3 beats, then 12 more.",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_corpus(CORPUS)


def byte_tokens(text: str) -> list[str]:
    """The byte tokens that spell ``text`` in UTF-8."""
    return [byte_token(b) for b in text.encode("utf-8")]


# ---------------------------------------------------------------- vocabulary layout


def test_special_tokens_have_fixed_ids(tok: Tokenizer) -> None:
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<video>", "<audio>", "<image>")
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert (tok.video_token_id, tok.audio_token_id, tok.image_token_id) == (3, 4, 5)
    assert tok.special_token_ids == {t: i for i, t in enumerate(SPECIAL_TOKENS)}


def test_byte_tokens_follow_the_specials(tok: Tokenizer) -> None:
    assert tok.id_to_token(6) == "<0x00>"
    assert tok.id_to_token(6 + 0xE2) == "<0xE2>"
    assert tok.id_to_token(261) == "<0xFF>"
    assert tok.token_to_id("<0x41>") == 6 + 0x41


def test_learned_pieces_come_after_the_bytes() -> None:
    tok = Tokenizer([" guitar", "drum"])
    assert tok.vocab_size == len(tok) == 6 + 256 + 2
    assert tok.token_to_id(" guitar") == 262
    assert tok.token_to_id("drum") == 263
    assert tok.id_to_token(263) == "drum"
    assert tok.pieces == (" guitar", "drum")
    assert repr(tok) == "Tokenizer(vocab_size=264, pieces=2)"


def test_special_token_ids_is_a_copy(tok: Tokenizer) -> None:
    tok.special_token_ids["<pad>"] = 99
    assert tok.special_token_ids["<pad>"] == 0


def test_unknown_token_and_id_lookups_fail_clearly(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="piano"):
        tok.token_to_id(" piano")
    with pytest.raises(ValueError, match=str(tok.vocab_size)):
        tok.id_to_token(tok.vocab_size)
    with pytest.raises(ValueError, match="-1"):
        tok.id_to_token(-1)


def test_constructor_dedups_and_keeps_order() -> None:
    tok = Tokenizer(["b", " a", "b", "c", " a"])
    assert tok.pieces == ("b", " a", "c")


@pytest.mark.parametrize("bad", ["<video>", "<pad>", "<0x41>", ""])
def test_constructor_rejects_pieces_that_would_clash(bad: str) -> None:
    with pytest.raises(ValueError):
        Tokenizer(["ok", bad])


def test_constructor_rejects_a_single_string() -> None:
    with pytest.raises(TypeError):
        Tokenizer("guitar")


# ---------------------------------------------------------------- pre-tokenisation


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("a red guitar", ["a", " red", " guitar"]),
        ("What is it?", ["What", " is", " it", "?"]),
        ("Count: 12 beats", ["Count", ":", " 1", "2", " beats"]),
        ("wait...  ok!?", ["wait", "...", " ", " ok", "!?"]),
        ("line one\n\tline two\n", ["line", " one", "\n\t", "line", " two", "\n"]),
        ("x \n  y", ["x", " \n ", " y"]),
        ("x <video>y", ["x", " ", "<video>", "y"]),
        ("(<audio>)", ["(", "<audio>", ")"]),
        ("snake_case", ["snake", "_", "case"]),
        ("", []),
    ],
)
def test_pre_tokenize_examples(text: str, pieces: list[str]) -> None:
    assert pre_tokenize(text) == pieces


@given(st.text())
def test_pre_tokenize_covers_every_character(text: str) -> None:
    pieces = pre_tokenize(text)
    assert "".join(pieces) == text
    assert all(pieces), "no empty pieces"


# ---------------------------------------------------------------- round trip


@given(st.text())
def test_round_trip_is_exact_for_any_text(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@given(st.text())
def test_round_trip_with_no_learned_pieces(text: str) -> None:
    tok = Tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # Only special and byte tokens exist, so every id is below 262.
    assert all(0 <= i < 262 for i in ids)


# Text built from fragments that stress the special-token and byte paths.
FRAGMENTS = [
    *SPECIAL_TOKENS,
    "<",
    ">",
    "<vid",
    "eo>",
    " guitar",
    "drum",
    " ",
    "\n",
    "é",
    "😀",
    "吉他",
]


@given(st.lists(st.sampled_from(FRAGMENTS)).map("".join))
def test_round_trip_of_tricky_fragments(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@given(corpus=st.lists(st.text(), max_size=5), text=st.text())
def test_round_trip_with_any_learned_corpus(corpus: list[str], text: str) -> None:
    tok = Tokenizer.from_corpus(corpus)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "🎸🥁 rock!",
        "吉他和鼓",
        "naïve café",
        "tabs\tand\r\nnewlines\n",
        "<vid eo>",
        "<<video>>",
        "",
    ],
)
def test_round_trip_examples(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@given(st.lists(st.integers(min_value=0, max_value=6 + 256 + 40)))
def test_decode_never_fails_on_valid_ids(tok: Tokenizer, ids: list[int]) -> None:
    ids = [i for i in ids if i < tok.vocab_size]
    assert isinstance(tok.decode(ids), str)


# ---------------------------------------------------------------- special tokens


def test_placeholders_at_the_start(tok: Tokenizer) -> None:
    ids = tok.encode("<video><audio> What?")
    assert ids[:2] == [tok.video_token_id, tok.audio_token_id]
    assert tok.decode(ids) == "<video><audio> What?"


@pytest.mark.parametrize(
    ("text", "expected_count"),
    [
        ("guitar<video>drum", 1),
        ("<video><video><video>", 3),
        ("\n<video>\n<audio>\n", 2),
        (" <video> (<image>)", 2),
        ("<<video>>", 1),
    ],
)
def test_special_tokens_are_never_split(tok: Tokenizer, text: str, expected_count: int) -> None:
    ids = tok.encode(text)
    specials = [i for i in ids if i in (tok.video_token_id, tok.audio_token_id, tok.image_token_id)]
    assert len(specials) == expected_count
    for token in ("<video>", "<audio>", "<image>"):
        assert token in tok.tokenize(text) or token not in text


def test_broken_special_token_is_plain_text(tok: Tokenizer) -> None:
    ids = tok.encode("<vid eo>")
    assert tok.video_token_id not in ids
    assert tok.decode(ids) == "<vid eo>"


def test_bos_and_eos(tok: Tokenizer) -> None:
    ids = tok.encode("A guitar", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id
    assert ids[-1] == tok.eos_id
    assert ids[1:-1] == tok.encode("A guitar")
    assert tok.decode(ids) == "<bos>A guitar<eos>"
    assert tok.decode(ids, skip_special_tokens=True) == "A guitar"


# ---------------------------------------------------------------- known and unknown words


def test_known_words_are_single_tokens(tok: Tokenizer) -> None:
    assert tok.tokenize("A red guitar") == ["A", " red", " guitar"]
    assert len(tok.encode(" guitar")) == 1
    assert tok.encode(" guitar") == [tok.token_to_id(" guitar")]


def test_unknown_word_falls_back_to_bytes(tok: Tokenizer) -> None:
    assert tok.tokenize(" piano") == byte_tokens(" piano")
    assert tok.tokenize("A piano") == ["A", *byte_tokens(" piano")]
    assert tok.decode(tok.encode("A piano")) == "A piano"


def test_emoji_and_cjk_fall_back_to_utf8_bytes(tok: Tokenizer) -> None:
    assert tok.tokenize("😀") == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert tok.tokenize("吉") == ["<0xE5>", "<0x90>", "<0x89>"]
    assert tok.decode(tok.encode("guitar 吉他 😀")) == "guitar 吉他 😀"


def test_emoji_learned_from_the_corpus_is_one_token() -> None:
    tok = Tokenizer.from_corpus(["🎸 rocks", "🎸 rocks"])
    assert tok.tokenize("🎸 rocks") == ["🎸", " rocks"]


def test_lone_surrogate_is_a_clear_error(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        tok.encode("bad \udc80 text")


# ---------------------------------------------------------------- from_corpus


def test_from_corpus_orders_by_count_then_alphabetically() -> None:
    tok = Tokenizer.from_corpus(["b b b", "a a", "c"])
    # Pieces: "b" x1, " b" x2, "a" x1, " a" x1, "c" x1.
    assert tok.pieces == (" b", " a", "a", "b", "c")


def test_from_corpus_excludes_special_tokens() -> None:
    tok = Tokenizer.from_corpus(["<video> hi", "<video><audio><pad>"])
    assert tok.pieces == (" hi",)


def test_from_corpus_is_deterministic_whatever_the_text_order() -> None:
    a = Tokenizer.from_corpus(CORPUS)
    b = Tokenizer.from_corpus(list(reversed(CORPUS)))
    c = Tokenizer.from_corpus(iter(CORPUS))  # any iterable, even a one-shot iterator
    assert a.pieces == b.pieces == c.pieces
    assert a.encode(CORPUS[2]) == b.encode(CORPUS[2])


def test_from_corpus_is_deterministic_across_processes() -> None:
    # String hashes (and so set order) change with PYTHONHASHSEED; the ids must not.
    # One child process with a seed different from ours is compared with this process.
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    script = f"from mimo_lib.tokenizer import Tokenizer\nprint(Tokenizer.from_corpus({CORPUS!r}).pieces)\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == repr(Tokenizer.from_corpus(CORPUS).pieces)


def test_min_count_drops_rare_pieces() -> None:
    corpus = ["a guitar", "a guitar", "a drum"]
    tok = Tokenizer.from_corpus(corpus, min_count=2)
    assert tok.pieces == ("a", " guitar")
    assert tok.tokenize("a drum") == ["a", *byte_tokens(" drum")]


def test_max_pieces_keeps_the_most_frequent() -> None:
    corpus = ["a guitar", "a guitar", "a drum"]
    assert Tokenizer.from_corpus(corpus, max_pieces=1).pieces == ("a",)
    assert Tokenizer.from_corpus(corpus, max_pieces=0).pieces == ()
    assert Tokenizer.from_corpus(corpus, max_pieces=100).pieces == ("a", " guitar", " drum")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"min_count": 0}, ValueError), ({"max_pieces": -1}, ValueError)],
)
def test_from_corpus_rejects_bad_limits(kwargs: dict[str, int], error: type[Exception]) -> None:
    with pytest.raises(error):
        Tokenizer.from_corpus(CORPUS, **kwargs)


def test_from_corpus_rejects_a_single_string() -> None:
    # A str is an iterable of characters: almost certainly a mistake.
    with pytest.raises(TypeError):
        Tokenizer.from_corpus("a guitar")


# ---------------------------------------------------------------- save and load


def test_save_and_load_give_the_same_ids(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.pieces == tok.pieces
    assert loaded.vocab_size == tok.vocab_size
    for text in CORPUS + ["吉他 😀 piano"]:
        assert loaded.encode(text) == tok.encode(text)


def test_saved_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    Tokenizer([" guitar", "\n", "吉他"]).save(str(path))  # a str path works too
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {"format": "mimo-word-bytes-v1", "pieces": [" guitar", "\n", "吉他"]}
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"], "no temporary file left"


def test_save_overwrites_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    Tokenizer(["old"]).save(path)
    Tokenizer(["new"]).save(path)
    assert Tokenizer.from_file(path).pieces == ("new",)


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        "[1, 2, 3]",
        '{"pieces": ["a"]}',
        '{"format": "some-other-tokenizer", "pieces": ["a"]}',
        '{"format": "mimo-word-bytes-v1"}',
        '{"format": "mimo-word-bytes-v1", "pieces": "abc"}',
        '{"format": "mimo-word-bytes-v1", "pieces": ["a", 7]}',
        '{"format": "mimo-word-bytes-v1", "pieces": ["<video>"]}',
    ],
)
def test_bad_file_is_a_value_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken_tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="broken_tokenizer.json"):
        Tokenizer.from_file(path)


def test_non_utf8_file_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="binary.json"):
        Tokenizer.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_file(tmp_path / "nope.json")


# ---------------------------------------------------------------- decode


def test_decode_skip_special_tokens(tok: Tokenizer) -> None:
    ids = [tok.bos_id, tok.video_token_id, tok.audio_token_id, tok.image_token_id]
    ids += tok.encode(" What is playing?") + [tok.eos_id, tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "<bos><video><audio><image> What is playing?<eos><pad><pad>"
    assert tok.decode(ids, skip_special_tokens=True) == " What is playing?"


def test_decode_invalid_utf8_bytes_uses_the_replacement_character(tok: Tokenizer) -> None:
    truncated = tok.encode("😀")[:2]  # half an emoji, as a cut-off generation might leave
    assert tok.decode(truncated) == "\ufffd"
    lone = [tok.token_to_id("<0xFF>")] + tok.encode("A guitar")
    assert tok.decode(lone) == "\ufffdA guitar"


def test_decode_joins_bytes_across_known_pieces_correctly(tok: Tokenizer) -> None:
    ids = tok.encode("é guitar é")
    assert tok.decode(ids) == "é guitar é"


def test_decode_out_of_range_id_is_an_error_naming_it(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="99999"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="-3"):
        tok.decode([-3])


def test_decode_accepts_a_tensor(tok: Tokenizer) -> None:
    text = "<video> A red guitar 😀"
    ids = tok.encode(text)
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.decode(torch.tensor(ids, dtype=torch.int32)) == text
    assert tok.decode(torch.tensor([], dtype=torch.long)) == ""


def test_decode_rejects_bad_tensors_and_non_integers(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="integers"):
        tok.decode([1, 2.0])  # type: ignore[list-item]


# ---------------------------------------------------------------- default()


def _vocabulary_corpus():
    """Return ``mimo_lib.data.synthetic.vocabulary_corpus``; skip if it is not written yet."""
    if importlib.util.find_spec("mimo_lib.data.synthetic") is None:
        pytest.skip("mimo_lib.data.synthetic does not exist yet")
    synthetic = importlib.import_module("mimo_lib.data.synthetic")
    if not hasattr(synthetic, "vocabulary_corpus"):
        pytest.skip("mimo_lib.data.synthetic.vocabulary_corpus does not exist yet")
    return synthetic.vocabulary_corpus


def test_default_knows_every_word_of_the_synthetic_data() -> None:
    corpus = _vocabulary_corpus()()
    tok = Tokenizer.default()
    assert tok.pieces == Tokenizer.from_corpus(corpus).pieces
    first_byte, last_byte = tok.token_to_id("<0x00>"), tok.token_to_id("<0xFF>")
    for sentence in corpus:
        ids = tok.encode(sentence)
        assert not any(first_byte <= i <= last_byte for i in ids), sentence
        assert tok.decode(ids) == sentence


def test_default_is_deterministic() -> None:
    _vocabulary_corpus()
    assert Tokenizer.default().pieces == Tokenizer.default().pieces


def test_default_does_not_need_the_data_generator() -> None:
    # the tokenizer is a foundation: building the book's tokenizer must not import the synthetic world
    script = (
        "import sys\nfrom mimo_lib.tokenizer import Tokenizer\ntok = Tokenizer.default()\n"
        "print(tok.vocab_size, sorted(m for m in sys.modules if m.startswith('mimo_lib.data')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split(maxsplit=1) == ["359", "[]\n"]


def test_default_vocabulary_is_the_committed_models() -> None:
    # the ids of the shipped model (mimo_lib/pretrained/mimo_toy) are the default tokenizer's, bit for bit
    shipped = Path(__file__).resolve().parents[1] / "mimo_lib" / "pretrained" / "mimo_toy" / "tokenizer.json"
    tok = Tokenizer.default()
    assert tok.vocab_size == 359
    assert tok.pieces == Tokenizer.from_file(shipped).pieces
    assert tok.special_token_ids == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert tok.image_token_id == 5  # reserved: removing it would shift every later id of the trained model


def test_a_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mimo_lib.atomic

    path = tmp_path / "tok.json"
    Tokenizer(["old"]).save(path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mimo_lib.atomic.os, "replace", crash)  # dies after writing, before the rename
    with pytest.raises(OSError, match="disk full"):
        Tokenizer(["new"]).save(path)
    assert Tokenizer.from_file(path).pieces == ("old",)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"], "no temporary file left"
