"""A small text tokenizer: whole words where it knows them, raw bytes where it does not.

A language model reads integers, not characters, so text must be cut into
*tokens* and each token given an id. Large models learn tens of thousands of
sub-word tokens with byte-pair encoding. Our toy model trains for minutes on a
synthetic corpus with a few hundred distinct words, so we use a simpler design
that is just as robust:

1. **Special tokens.** Six fixed tokens come first, with ids 0 to 5:
   ``<pad>`` (padding), ``<bos>`` / ``<eos>`` (begin / end of sequence), the
   placeholders ``<video>`` and ``<audio>``, and ``<image>``, reserved for a
   future image placeholder (no dataset accepts images yet: store an image as a
   one-frame video; the id stays so that the committed models' ids stay valid).
   A placeholder is written straight into the text ("<video> What is playing?");
   later, the model swaps each placeholder for the embeddings of the real clip.
   A special token is never split, wherever it appears.

2. **Byte tokens.** The next 256 ids (6 to 261) are the bytes ``<0x00>`` to
   ``<0xFF>``. Any text can be written as the bytes of its UTF-8 encoding, so
   there is no "unknown" token: a word the tokenizer has never seen (or an emoji,
   or Chinese) is spelled out byte by byte and still comes back exactly.

3. **Learned pieces.** After the bytes come whole *pieces* learned from a
   corpus: words with their leading space (``" guitar"``), single digits,
   punctuation runs and whitespace runs. A sentence of known words costs one
   token per word, which keeps sequences short and easy to learn.

Cutting text into pieces ("pre-tokenisation") follows GPT-2: a space belongs to
the word after it, so ``"a red guitar"`` becomes ``["a", " red", " guitar"]``.
Joining the pieces always gives back the text, character for character.

Encoding looks each piece up; a piece that is not in the vocabulary becomes its
byte tokens. Decoding joins the pieces again, turning each run of byte tokens
back into text with UTF-8. So ``decode(encode(text)) == text`` for every string
that UTF-8 can encode (every ``str`` except those holding lone surrogates).

Example::

    >>> tok = Tokenizer.from_corpus(["a red guitar", "a blue drum"])
    >>> tok.tokenize("<video>a red piano")
    ['<video>', 'a', ' red', '<0x20>', '<0x70>', '<0x69>', '<0x61>', '<0x6E>', '<0x6F>']
    >>> tok.decode(tok.encode("<video>a red piano"))
    '<video>a red piano'

Ids are deterministic: the same corpus always gives the same vocabulary, in
every run and every process, because the learned pieces are sorted by count
and then alphabetically (never by the order of a set or a hash).
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from mimo_lib.atomic import atomic_write_text
from mimo_lib.constants import SPECIAL_TOKENS  # in id order: ``<pad>`` is 0, ..., ``<image>`` is 5
from mimo_lib.errors import MimoInputError
from mimo_lib.vocabulary import DEFAULT_PIECES

NUM_BYTE_TOKENS = 256
"""One token for every possible byte value."""

FILE_FORMAT = "mimo-word-bytes-v1"
"""The ``"format"`` field of a saved tokenizer file."""

AUDIO_OUT_TOKEN = "<audio_out>"
"""Opens a span of audio codes in an answer (a model that answers with sound; chapter 10)."""
AUDIO_OUT_END_TOKEN = "</audio_out>"
"""Closes it."""
_AUDIO_TOKEN_PATTERN = re.compile(r"(<audio_out>|</audio_out>|<audio_code_\d+>)")


def audio_code_token(code: int) -> str:
    """The token of audio code ``code`` (an index into the codec's codebook), e.g. ``"<audio_code_17>"``."""
    return f"<audio_code_{code}>"

# Step 1 of pre-tokenisation: split out the special tokens, so nothing else can
# swallow their "<" or ">". The parentheses make re.split keep them.
_SPECIAL_TOKEN_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")

# Step 2: cut the text between special tokens into pieces. At each position the
# alternatives are tried in order and the first that matches wins. In VERBOSE
# mode spaces in the pattern are ignored, so a literal space is written "[ ]".
# In Python, \w is a letter, a digit or "_"; so [^\W\d_] is "a letter".
_PIECE_PATTERN = re.compile(
    r"""
      [ ]?[^\W\d_]+         # a word, maybe with one leading space: " guitar"
    | [ ]?\d                # a single digit, maybe with a leading space: " 7"
    | [ ]?(?:[^\w\s]|_)+    # a run of punctuation or symbols, maybe spaced: " (!"
    | \s+(?=[ ]\S)          # whitespace, leaving its last space to the next piece
    | \s+                   # any other whitespace run
    | .                     # catch-all, so that every character is covered
    """,
    re.VERBOSE | re.DOTALL,
)


def byte_token(value: int) -> str:
    """Return the name of the byte token for ``value`` (0-255), e.g. ``"<0xE2>"``."""
    return f"<0x{value:02X}>"


def pre_tokenize(text: str) -> list[str]:
    """Cut ``text`` into pieces: special tokens, words, digits, punctuation, whitespace.

    Joining the pieces gives back ``text`` exactly:

    >>> pre_tokenize("<video> What is  it?")
    ['<video>', ' What', ' is', ' ', ' it', '?']
    """
    pieces: list[str] = []
    for part in _SPECIAL_TOKEN_PATTERN.split(text):
        if part in SPECIAL_TOKENS:
            pieces.append(part)
        else:
            pieces.extend(_PIECE_PATTERN.findall(part))
    assert "".join(pieces) == text, "pre-tokenisation must cover every character"
    return pieces


def _check_piece(piece: object) -> str:
    """Return ``piece`` if it can be a learned piece; raise ``ValueError`` if not."""
    if not isinstance(piece, str):
        raise ValueError(f"a tokenizer piece must be a str, got {type(piece).__name__}: {piece!r}")
    if piece == "":
        raise ValueError("a tokenizer piece must not be the empty string")
    if piece in SPECIAL_TOKENS:
        raise ValueError(f"{piece!r} is a special token; it is always in the vocabulary")
    if re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
        raise ValueError(f"{piece!r} is the name of a byte token; it cannot be a piece")
    try:
        piece.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"piece {piece!r} cannot be encoded as UTF-8") from None
    return piece


class Tokenizer:
    """Word-level tokenizer with byte fallback (see the module docstring).

    Ids: the special tokens (0-5), then the 256 byte tokens (6-261), then the
    learned ``pieces`` in the order given. Usually built with :meth:`from_corpus`,
    :meth:`default` or :meth:`from_file` rather than called directly.

    Args:
        pieces: learned pieces such as ``" guitar"``. Duplicates are dropped
            (the first one keeps its place).
    """

    def __init__(self, pieces: Sequence[str] = (), audio_codebook_size: int = 0) -> None:
        if isinstance(pieces, str):
            raise TypeError("pieces must be a sequence of strings, not a single str")
        learned: list[str] = []
        seen: set[str] = set()  # only to skip duplicates fast; the list keeps the order
        for piece in pieces:
            checked = _check_piece(piece)
            if checked not in seen:
                learned.append(checked)
                seen.add(checked)
        self._pieces: tuple[str, ...] = tuple(learned)

        byte_tokens = [byte_token(value) for value in range(NUM_BYTE_TOKENS)]
        if isinstance(audio_codebook_size, bool) or not isinstance(audio_codebook_size, int) or audio_codebook_size < 0:
            raise ValueError(f"audio_codebook_size must be a whole number >= 0, got {audio_codebook_size!r}")
        self._audio_codebook_size = audio_codebook_size
        audio_tokens = (
            [AUDIO_OUT_TOKEN, AUDIO_OUT_END_TOKEN, *(audio_code_token(k) for k in range(audio_codebook_size))]
            if audio_codebook_size else []
        )
        self._id_to_token: list[str] = [*SPECIAL_TOKENS, *byte_tokens, *learned, *audio_tokens]
        self._token_to_id: dict[str, int] = {token: i for i, token in enumerate(self._id_to_token)}
        self._first_byte_id = len(SPECIAL_TOKENS)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_corpus(cls, texts: Iterable[str], min_count: int = 1, max_pieces: int | None = None) -> Tokenizer:
        """Learn the pieces of ``texts``, most frequent first.

        Args:
            texts: the training sentences.
            min_count: keep only pieces seen at least this many times.
            max_pieces: keep at most this many pieces (``None``: no limit).

        Pieces are ordered by count (highest first), ties alphabetically, so the
        same corpus always gives the same ids. Special tokens are not counted.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not a single str")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_pieces is not None and max_pieces < 0:
            raise ValueError(f"max_pieces must be None or at least 0, got {max_pieces}")

        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(p for p in pre_tokenize(text) if p not in SPECIAL_TOKENS)

        frequent = [piece for piece, count in counts.items() if count >= min_count]
        frequent.sort(key=lambda piece: (-counts[piece], piece))
        if max_pieces is not None:
            frequent = frequent[:max_pieces]
        return cls(frequent)

    @classmethod
    def default(cls) -> Tokenizer:
        """The tokenizer of the book: the pieces learned from every sentence of the synthetic data.

        They are committed in :data:`mimo_lib.vocabulary.DEFAULT_PIECES` (what
        ``from_corpus(mimo_lib.data.synthetic.vocabulary_corpus())`` learns), so building
        the tokenizer needs no data generator and its ids never move.
        """
        return cls(DEFAULT_PIECES)

    @classmethod
    def with_audio_codes(cls, codebook_size: int = 256, pieces: Sequence[str] = DEFAULT_PIECES) -> Tokenizer:
        """The book's tokenizer plus the tokens of a model that answers with sound (chapter 10).

        After every id of ``Tokenizer(pieces)`` (for the default pieces: after the 359 ids of
        :meth:`default`, which keep their ids) come ``<audio_out>``, ``</audio_out>`` and one token per
        entry of the audio codec's codebook, ``<audio_code_0>`` .. ``<audio_code_{codebook_size - 1}>``.
        Written into text ("<audio_out><audio_code_17>...</audio_out>") they are single tokens, never split.
        """
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive whole number, got {codebook_size!r}")
        return cls(pieces, audio_codebook_size=codebook_size)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the pieces to a JSON file at ``path``, atomically (:mod:`mimo_lib.atomic`).

        A crash never leaves a half-written tokenizer behind: ``path`` holds the
        old file or the new one.
        """
        data: dict = {"format": FILE_FORMAT, "pieces": list(self._pieces)}
        if self._audio_codebook_size:
            data["audio_codebook_size"] = self._audio_codebook_size  # only written when there are audio tokens
        atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a tokenizer written by :meth:`save`.

        Raises:
            FileNotFoundError: there is no file at ``path``.
            MimoInputError: (a ``ValueError``) the file is not a tokenizer file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MimoInputError(f"{path}: not a tokenizer file (not valid JSON: {error})") from None

        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise MimoInputError(
                f'{path}: not a tokenizer file (expected "format": "{FILE_FORMAT}"); write one with Tokenizer.save'
            )
        pieces = data.get("pieces")
        if not isinstance(pieces, list):
            raise MimoInputError(f'{path}: "pieces" must be a list of strings')
        codebook_size = data.get("audio_codebook_size", 0)
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 0:
            raise MimoInputError(f'{path}: "audio_codebook_size" must be a whole number >= 0, got {codebook_size!r}')
        try:
            return cls(pieces, audio_codebook_size=codebook_size)
        except ValueError as error:
            raise MimoInputError(f"{path}: bad piece: {error}") from None

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of ids: 6 special + 256 byte tokens + the learned pieces."""
        return len(self._id_to_token)

    @property
    def pieces(self) -> tuple[str, ...]:
        """The learned pieces, in id order (the special and byte tokens excluded)."""
        return self._pieces

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return self._token_to_id["<pad>"]

    @property
    def bos_id(self) -> int:
        """Id of ``<bos>`` (begin of sequence)."""
        return self._token_to_id["<bos>"]

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>`` (end of sequence)."""
        return self._token_to_id["<eos>"]

    @property
    def video_token_id(self) -> int:
        """Id of the ``<video>`` placeholder."""
        return self._token_to_id["<video>"]

    @property
    def audio_token_id(self) -> int:
        """Id of the ``<audio>`` placeholder."""
        return self._token_to_id["<audio>"]

    @property
    def image_token_id(self) -> int:
        """Id of ``<image>``: reserved (no dataset accepts images yet), kept so that every later id stays put."""
        return self._token_to_id["<image>"]

    @property
    def special_token_ids(self) -> dict[str, int]:
        """Every special token and its id, e.g. ``{"<pad>": 0, ...}`` (a fresh dict)."""
        return {token: self._token_to_id[token] for token in SPECIAL_TOKENS}

    @property
    def audio_codebook_size(self) -> int:
        """Audio-code tokens in the vocabulary: 0 for a text-only tokenizer (see :meth:`with_audio_codes`)."""
        return self._audio_codebook_size

    @property
    def audio_out_id(self) -> int:
        """Id of ``<audio_out>``; ``ValueError`` for a text-only tokenizer."""
        self._require_audio_tokens()
        return self._token_to_id[AUDIO_OUT_TOKEN]

    @property
    def audio_out_end_id(self) -> int:
        """Id of ``</audio_out>``; ``ValueError`` for a text-only tokenizer."""
        self._require_audio_tokens()
        return self._token_to_id[AUDIO_OUT_END_TOKEN]

    @property
    def first_audio_code_id(self) -> int:
        """Id of ``<audio_code_0>``; code ``k`` is this plus ``k``. ``ValueError`` for a text-only tokenizer."""
        self._require_audio_tokens()
        return self._token_to_id[audio_code_token(0)]

    def _require_audio_tokens(self) -> None:
        if not self._audio_codebook_size:
            raise ValueError("this tokenizer has no audio-out tokens (build it with Tokenizer.with_audio_codes)")

    def id_to_token(self, i: int) -> str:
        """The token string of id ``i``; ``ValueError`` if there is no such id."""
        self._check_id(i)
        return self._id_to_token[i]

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; ``ValueError`` if it is not in the vocabulary."""
        if token not in self._token_to_id:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return self._token_to_id[token]

    def _check_id(self, i: int) -> None:
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is out of range [0, {self.vocab_size})")

    def _is_byte_id(self, i: int) -> bool:
        return self._first_byte_id <= i < self._first_byte_id + NUM_BYTE_TOKENS

    # ------------------------------------------------------------------ encoding

    def tokenize(self, text: str) -> list[str]:
        """Cut ``text`` into tokens: known pieces, or byte tokens for unknown ones."""
        tokens: list[str] = []
        for piece in self._pre_tokenize(text):
            if piece in self._token_to_id:
                tokens.append(piece)
            else:
                tokens.extend(self._byte_tokens_of(piece))
        return tokens

    def _pre_tokenize(self, text: str) -> list[str]:
        """:func:`pre_tokenize`, with the audio-out tokens split out first when this tokenizer has them."""
        if not self._audio_codebook_size:
            return pre_tokenize(text)
        pieces: list[str] = []
        for part in _AUDIO_TOKEN_PATTERN.split(text):
            if _AUDIO_TOKEN_PATTERN.fullmatch(part):
                if part not in self._token_to_id:
                    raise MimoInputError(
                        f"unknown audio code {part}: this tokenizer's codes are <audio_code_0> to "
                        f"<audio_code_{self._audio_codebook_size - 1}>"
                    )
                pieces.append(part)
            elif part:
                pieces.extend(pre_tokenize(part))
        return pieces

    def _byte_tokens_of(self, piece: str) -> list[str]:
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"cannot tokenize {piece!r}: it holds a lone surrogate, which UTF-8 cannot encode"
            ) from None
        return [byte_token(value) for value in data]

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Turn ``text`` into ids, optionally framed by ``<bos>`` and ``<eos>``."""
        ids = [self._token_to_id[token] for token in self.tokenize(text)]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Turn ids back into text.

        Runs of byte tokens are decoded together with UTF-8. Bytes that are not
        valid UTF-8 (say, a generation cut off mid-character) become U+FFFD,
        the replacement character, instead of raising an error.

        Args:
            ids: a list of ids, or a 1-D integer tensor.
            skip_special_tokens: drop ``<pad>``, ``<bos>``, ``<eos>`` and the
                placeholders instead of writing them out.
        """
        parts: list[str] = []
        pending_bytes = bytearray()
        for i in _to_id_list(ids):
            self._check_id(i)
            if skip_special_tokens and i < len(SPECIAL_TOKENS):
                continue
            if self._is_byte_id(i):
                pending_bytes.append(i - self._first_byte_id)
                continue
            parts.append(pending_bytes.decode("utf-8", errors="replace"))
            pending_bytes.clear()
            parts.append(self._id_to_token[i])
        parts.append(pending_bytes.decode("utf-8", errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ Python

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        audio = f", audio_codebook_size={self._audio_codebook_size}" if self._audio_codebook_size else ""
        return f"Tokenizer(vocab_size={self.vocab_size}, pieces={len(self._pieces)}{audio})"


def _to_id_list(ids: Iterable[int] | torch.Tensor) -> list[int]:
    """Turn a list or a 1-D tensor of ids into a list of Python ints."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D tensor of ids, got shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex:
            raise ValueError(f"expected an integer tensor of ids, got dtype {ids.dtype}")
        return ids.tolist()
    result: list[int] = []
    for i in ids:
        try:
            result.append(operator.index(i))  # accepts int, numpy ints; refuses 2.0
        except TypeError:
            raise ValueError(f"token ids must be integers, got {i!r}") from None
    return result
