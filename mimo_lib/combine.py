"""The zipper: one decoder input from text with placeholders and the tokens of each modality.

After the tokenizer, a prompt is a row of ids in which each clip is a single
placeholder::

    input_ids   <bos> User :  <video> \\n <audio> \\n What ... Assistant : That is a flute . <eos>
    labels       -100 -100 -100  -100  ... -100 ...                      That is a flute . <eos>

and after the encoders and projectors each clip is a block of vectors of the
language model's width ``D``: ``(tokens_per_item, D)``, say 128 for a video and
25 for an audio clip. :func:`combine_multimodal_inputs` zips the two together:
every placeholder row is replaced by its clip's block, the text around it keeps
its order, and the batch is padded again, now to the longest *combined* length::

    embeddings   e(<bos>) e(User) e(:) v0 v1 ... v127 e(\\n) a0 ... a24 e(\\n) e(What) ...
    modality_map   TEXT    TEXT  TEXT  VIDEO  x128    TEXT  AUDIO x25  TEXT   TEXT   ...
    labels         -100    -100  -100  -100   x128    -100  -100  x25  -100   -100   ... That is ...

**How, without a loop over tokens.** Give every input token a *length*: 1 for
a text token, ``tokens_per_item`` for a placeholder, 0 for padding. The running
sum of the lengths along the row (``cumsum``) is where each token's block
*ends* in the combined row; minus its own length, where it *starts*. With these
destination indices the text rows and the modality rows are each copied into
place with one indexing assignment (a scatter); nothing is moved token by token.

**Which clip goes where.** Each modality's items come as one tensor
``(num_items, tokens_per_item, D)`` holding one item per placeholder
*occurrence* in the batch, in batch-then-sequence order: all placeholders of
sample 0 from left to right, then those of sample 1, and so on. That is the
row-major order of ``torch.nonzero`` and the order in which megatron-core's
``MimoModel.align_embeddings_by_token_positions`` fills its ``masked_scatter``,
so a batch built here lines up with Megatron's. (Megatron expects the ids
already expanded, one placeholder id per modality token;
:attr:`CombinedInputs.input_ids` is exactly that expanded row.)

**Loss only on answers.** The labels keep the text labels (the answer tokens
and ``<eos>``; the prompt already holds ``ignore_index``) and put
``ignore_index`` on every modality position and on padding. They are aligned
with the positions, not shifted: the loss shifts them by one as usual.

**Padding.** Input padding (``attention_mask`` False) may be on either side:
padding positions are dropped and added back on ``padding_side`` of the
combined batch, ``"right"`` for training and ``"left"`` for batched
generation, where every prompt must end at the last column.

**Position ids** count 0, 1, ..., n-1 over the n real positions of a row
(after left padding too); padding positions get 0. They are only used by
learned absolute position embeddings or RoPE, and are never read on padding,
which the attention mask hides.

**Too long.** A combined row longer than ``max_length`` is an error that names
the sample and breaks its length down, unless ``truncate=True``: then it is cut
on the right, with a warning, and whatever stood at the end is lost, the
answer tokens included (and a video cut in the middle keeps only its first
tokens).

**Time (chapter 8).** The zipper above is the *block* layout: the whole video,
then the whole audio, and position ids that count positions. Two options give
the sequence a clock; both read a :class:`TokenTiming`, the time (seconds into
the clip) at which each modality token's span begins:

* ``layout="interleaved"``: a sample's video and audio are cut into chunks of
  ``chunk_seconds`` and laid out chunk by chunk, each chunk's video tokens,
  then the audio tokens of the same span (Qwen2.5-Omni's "audio inside
  video"). The span stands where the sample's *first* placeholder stood; the
  second placeholder becomes nothing, and the text between them (``"\n"``)
  follows the span. A sample with only one of the two keeps it as a block.
* ``positions="time"``: a media token's position id is ``s + tick``, where
  ``tick = floor(time * ticks_per_second)`` (25: one id per 40 ms, as TMRoPE)
  and ``s`` = one past the ids before the sample's first media token, so
  video and audio of the same instant share their id. Every text token gets
  ``max(ids before it) + 1``, so text after the clip continues after its end,
  and generation continues at ``max + 1``. One temporal channel: Qwen's
  ``h``/``w`` channels would let RoPE see a video token's place in the frame;
  here the vision tower's own position embeddings already carry it, and the
  decoder's RoPE stays one-dimensional (any backend that applies RoPE at the
  given ids can read them)::

    0.25-s chunks of a 1-s clip, 2 frames (1 merged token per cell, 4 cells) and 25 audio tokens per clip:

    layout        <bos> User :  v v v v  a a a a a a a  v v v v  a a a a a a  ...  \n \n What ...
    chunk                        0 0 0 0  0 0 0 0 0 0 0  1 1 1 1  1 1 1 1 1 1
    time ids        0    1   2  3 3 3 3  3 4 5 6 7 8 9  9 9 9 9 10 ...        ...  28 29 30

Without a ``positions="time"`` the interleaved layout keeps the counting ids
(0, 1, 2, ...), and ``positions="time"`` also works on the block layout (the
audio block starts again at the video's ``s``): the two choices are separate,
so a benchmark can measure each (``benchmarks/time_layouts.py``). Both need at
most one video and one audio placeholder per sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from mimo_lib.constants import AUDIO_TOKEN_ID, IGNORE_INDEX, PAD_TOKEN_ID, VIDEO_TOKEN_ID
from mimo_lib.errors import CombineError

LAYOUTS = ("block", "interleaved")
"""Values of ``layout``: the whole video, then the whole audio; or chunk by chunk in time."""

POSITIONS = ("sequence", "time")
"""Values of ``positions``: ids that count positions, or ids that count ticks of media time."""

TEXT, VIDEO, AUDIO, PADDING = 0, 1, 2, -1
"""Values of :attr:`CombinedInputs.modality_map`, one per position."""

MODALITY_NAMES: dict[int, str] = {TEXT: "text", VIDEO: "video", AUDIO: "audio", PADDING: "padding"}
"""Name of each modality-map value."""

DEFAULT_MODALITY_NAMES: dict[int, str] = {VIDEO_TOKEN_ID: "video", AUDIO_TOKEN_ID: "audio"}
"""Placeholder id -> modality: the tokenizer's ``<video>`` and ``<audio>`` ids (as ``MIMOConfig``'s)."""

_CODE_OF_NAME = {name: code for code, name in MODALITY_NAMES.items() if code not in (TEXT, PADDING)}
_MAX_LISTED_SAMPLES = 8  # error messages list at most this many samples


@dataclass
class CombinedInputs:
    """What the decoder reads, one row per sample, ``S`` = longest combined row of the batch."""

    embeddings: torch.Tensor  # (B, S, D) decoder input: text embeddings and modality tokens, zeros on padding
    attention_mask: torch.Tensor  # (B, S) bool, True on real positions
    position_ids: torch.Tensor  # (B, S) long: 0..n-1 over the n real positions, 0 on padding
    labels: torch.Tensor | None  # (B, S) long: text labels; ignore_index on modality and padding positions
    modality_map: torch.Tensor  # (B, S) long: TEXT / VIDEO / AUDIO / PADDING per position
    input_ids: torch.Tensor  # (B, S) long: the expanded ids, each placeholder repeated once per modality token
    ticks: torch.Tensor | None = None  # (B, S) long: each media token's time in ticks, -1 on text and padding; None without a timing

    @property
    def lengths(self) -> torch.Tensor:
        """``(B,)`` real positions per row."""
        return self.attention_mask.sum(dim=1)


@dataclass(frozen=True)
class TokenTiming:
    """When each modality token happens: what ``layout="interleaved"`` and ``positions="time"`` read.

    ``times`` maps a placeholder id to ``(tokens_per_item,)`` seconds from the start of the clip window at
    which each token's span begins, the same for every item (every clip has the same frames and duration);
    :meth:`mimo_lib.model.MIMOModel.token_timing` makes it from the config.
    """

    times: Mapping[int, torch.Tensor]  # placeholder id -> (tokens_per_item,) float seconds, nondecreasing
    chunk_seconds: float = 2.0  # one chunk of the interleaved layout (Qwen2.5-Omni: 2 s)
    ticks_per_second: float = 25.0  # position ids per second of media (25: one per 40 ms, as TMRoPE)

    def ticks(self, token_id: int) -> torch.Tensor:
        """``(tokens_per_item,)`` long: ``floor(time * ticks_per_second)``, the token's temporal id from ``s``."""
        return torch.floor(self.times[token_id].double() * self.ticks_per_second + 1e-6).long()

    def chunks(self, token_id: int) -> torch.Tensor:
        """``(tokens_per_item,)`` long: ``floor(time / chunk_seconds)``, the chunk the token belongs to."""
        return torch.floor(self.times[token_id].double() / self.chunk_seconds + 1e-6).long()


def interleave_offsets(video_chunks: torch.Tensor, audio_chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each token goes inside one interleaved span: chunk by chunk, each chunk's video before its audio.

    Args:
        video_chunks: ``(Nv,)`` chunk index of each video token; audio_chunks: ``(Na,)`` of each audio token.
    Returns:
        ``(Nv,)`` and ``(Na,)`` long offsets from the span's start, together a permutation of ``0 .. Nv+Na-1``;
        tokens of one modality and chunk keep their order.
    """
    keys = torch.cat([video_chunks * 2, audio_chunks * 2 + 1])  # (Nv + Na,): chunk k's video 2k, its audio 2k + 1
    order = torch.argsort(keys, stable=True)  # (Nv + Na,) token at each offset
    offset = torch.empty_like(order)
    offset[order] = torch.arange(len(order), device=order.device)  # (Nv + Na,) offset of each token
    return offset[: len(video_chunks)], offset[len(video_chunks):]


def time_position_ids(modality_map: torch.Tensor, ticks: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Time-aware position ids (see the module doc): media ``s + tick``, text ``max(ids before) + 1``.

    Without a loop: with ``c`` the text tokens up to and including a position, the largest id so far is
    ``c + cummax(w)`` where ``w`` is ``id - c`` at media positions and ``-1`` elsewhere (each text token adds one
    to the running maximum; a media token may raise it), and a text token's id *is* the largest id so far.

    Args:
        modality_map: ``(B, S)`` TEXT / VIDEO / AUDIO / PADDING; ticks: ``(B, S)`` long, read at media positions;
        attention_mask: ``(B, S)`` bool.
    Returns:
        ``(B, S)`` long, 0 on padding; equal to ``0 .. n-1`` on a row without media.
    """
    batch, seq_len = modality_map.shape
    if seq_len == 0:
        return torch.zeros_like(modality_map)
    media = (modality_map == VIDEO) | (modality_map == AUDIO)  # (B, S)
    text_so_far = (modality_map == TEXT).long().cumsum(dim=1)  # (B, S) c: text tokens up to here
    start = torch.where(media, text_so_far, seq_len + 1).min(dim=1).values  # (B,) s: text tokens before the first media
    media_ids = start[:, None] + ticks  # (B, S)
    minus_one = torch.full_like(media_ids, -1)
    running = torch.where(media, media_ids - text_so_far, minus_one).cummax(dim=1).values  # (B, S)
    ids = torch.where(media, media_ids, text_so_far + running)  # (B, S)
    return ids.masked_fill(~attention_mask, 0)


def sample_name(sample_ids: Sequence[str] | None, b: int) -> str:
    """How error messages name row ``b`` of a batch: by its id if known."""
    return f"sample {sample_ids[b]!r}" if sample_ids is not None else f"sample {b} of the batch"


def _list_samples(sample_ids: Sequence[str] | None, entries: Sequence[tuple[int, str]]) -> str:
    """``"sample 'a': ..., sample 'b': ..."`` from ``(row, text)`` pairs, at most a few of them."""
    parts = [f"{sample_name(sample_ids, b)}: {text}" for b, text in entries[:_MAX_LISTED_SAMPLES]]
    if len(entries) > _MAX_LISTED_SAMPLES:
        parts.append(f"... and {len(entries) - _MAX_LISTED_SAMPLES} more")
    return ", ".join(parts)


def _describe(token_id: int, names: Mapping[int, str]) -> str:
    """``"<video> (id 3)"`` for a named placeholder id, ``"placeholder id 7"`` otherwise."""
    return f"<{names[token_id]}> (id {token_id})" if token_id in names else f"placeholder id {token_id}"


# ----------------------------------------------------------------------------- checks, before the algorithm


def check_tensors(
    input_ids: torch.Tensor,
    text_embeddings: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
) -> None:
    """``input_ids`` ``(B, L)`` integer ids; ``text_embeddings`` ``(B, L, D)``; mask and labels ``(B, L)``."""
    if input_ids.dim() != 2:
        raise CombineError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    if input_ids.is_floating_point() or input_ids.is_complex():
        raise CombineError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    batch, length = input_ids.shape
    if text_embeddings.dim() != 3 or text_embeddings.shape[:2] != (batch, length):
        raise CombineError(
            f"text_embeddings must be (B, L, D) = ({batch}, {length}, D) like input_ids, "
            f"got shape {tuple(text_embeddings.shape)}"
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise CombineError(
            f"attention_mask must be (B, L) = {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    if labels is not None and labels.shape != input_ids.shape:
        raise CombineError(f"labels must be (B, L) = {tuple(input_ids.shape)}, got {tuple(labels.shape)}")


def check_options(
    batch: int, max_length: int | None, truncate: bool, padding_side: str, sample_ids: Sequence[str] | None
) -> None:
    """The caller's settings (programming errors, hence plain ``ValueError``)."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1 (got {max_length})")
    if truncate and max_length is None:
        raise ValueError("truncate=True needs a max_length to truncate to")
    if sample_ids is not None and len(sample_ids) != batch:
        raise ValueError(f"{len(sample_ids)} sample_ids given for a batch of {batch}")


def check_time_options(
    layout: str, positions: str, timing: TokenTiming | None, names: Mapping[int, str], token_ids: Sequence[int]
) -> None:
    """``layout`` and ``positions`` known; a ``timing`` with times for every modality when either needs one."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if layout == "block" and positions == "sequence":
        return
    if timing is None:
        raise ValueError(f"layout={layout!r} with positions={positions!r} needs a timing=TokenTiming(...)")
    if not timing.chunk_seconds > 0 or not timing.ticks_per_second > 0:
        raise ValueError(f"chunk_seconds and ticks_per_second must be positive, got {timing.chunk_seconds}, "
                         f"{timing.ticks_per_second}")
    missing = [token_id for token_id in token_ids if token_id not in timing.times]
    if missing:
        raise ValueError(f"timing.times has no times for placeholder id(s) {missing}")
    if layout == "interleaved":
        for name in ("video", "audio"):
            ids = [token_id for token_id in token_ids if names[token_id] == name]
            if len(ids) > 1:
                raise ValueError(f"the interleaved layout pairs one video with one audio id; ids {ids} are all {name}")


def check_token_times(items: Mapping[int, torch.Tensor], timing: TokenTiming, names: Mapping[int, str]) -> None:
    """Each modality's items have one time per token, starting at 0 or later and never going back."""
    for token_id, item in items.items():
        times = timing.times[token_id]
        if item.shape[0] == 0:
            continue
        if times.dim() != 1 or times.shape[0] != item.shape[1]:
            raise CombineError(
                f"{names[token_id]} items have {item.shape[1]} tokens but the timing gives {tuple(times.shape)} "
                "token times; give every clip the frames and duration the model's config says"
            )
        if times.numel() and (times.min() < 0 or (times[1:] < times[:-1]).any()):
            raise ValueError(f"timing.times[{token_id}] must start at 0 s or later and never decrease")


def check_one_clip_per_sample(
    counts: Mapping[int, torch.Tensor], names: Mapping[int, str], sample_ids: Sequence[str] | None, why: str
) -> None:
    """At most one placeholder of each modality per sample: a clock (or a pairing) is one clip's."""
    for token_id, per_sample in counts.items():
        found = [(b, str(n)) for b, n in enumerate(per_sample.tolist()) if n > 1]
        if found:
            raise CombineError(
                f"{_list_samples(sample_ids, found)} <{names[token_id]}> placeholders: {why} reads at most one "
                f"{names[token_id]} per sample"
            )


def check_modality_names(
    names: Mapping[int, str], modality_embeddings: Mapping[int, object], pad_token_id: int
) -> None:
    """Each placeholder id is named ``"video"`` or ``"audio"``; each id given embeddings is named and not ``<pad>``."""
    for token_id, name in names.items():
        if name not in _CODE_OF_NAME:
            raise ValueError(f"modality_names[{token_id}] = {name!r}: must be one of {sorted(_CODE_OF_NAME)}")
    for token_id in modality_embeddings:
        if token_id not in names:
            raise ValueError(
                f"placeholder id {token_id} has no modality name: pass modality_names={{{token_id}: 'video'}} "
                "(or 'audio')"
            )
        if token_id == pad_token_id:
            raise ValueError(f"placeholder id {token_id} is the pad_token_id; a placeholder must be its own token")


def check_every_placeholder_has_embeddings(
    input_ids: torch.Tensor,
    real: torch.Tensor,
    modality_embeddings: Mapping[int, object],
    names: Mapping[int, str],
    sample_ids: Sequence[str] | None,
) -> None:
    """A placeholder in the text with nothing to fill it would silently be read as a word: refuse."""
    for token_id in names:
        if token_id in modality_embeddings:
            continue
        present = ((input_ids == token_id) & real).sum(dim=1)  # (B,)
        found = [(b, str(n)) for b, n in enumerate(present.tolist()) if n > 0]
        if found:
            raise CombineError(
                f"the text holds {_describe(token_id, names)} placeholders ({_list_samples(sample_ids, found)}) "
                f"but no {names[token_id]} embeddings were given; "
                f"pass modality_embeddings={{{token_id}: ...}} or remove the placeholder from the prompt"
            )


def _check_items(items: torch.Tensor | Sequence[torch.Tensor], label: str, text: torch.Tensor) -> torch.Tensor:
    """Return ``(num_items, tokens_per_item, D)`` in the text's dtype, or raise a :class:`CombineError`."""
    width = text.shape[-1]
    if not isinstance(items, torch.Tensor):
        items = list(items)
        if not items:
            return text.new_zeros(0, 1, width)
        shapes = [tuple(item.shape) for item in items]
        if any(len(shape) != 2 for shape in shapes):
            raise CombineError(f"{label}: each item must be (tokens_per_item, D); got shapes {shapes}")
        if len({shape[0] for shape in shapes}) > 1:
            counts = ", ".join(f"item {i}: {shape[0]}" for i, shape in enumerate(shapes[:_MAX_LISTED_SAMPLES]))
            raise CombineError(
                f"{label}: items have different numbers of tokens ({counts}); every item of one modality must "
                "have the same tokens_per_item: give every clip the same frames / duration (the dataset's "
                "num_frames and audio_duration_s do this)"
            )
        items = torch.stack(items)
    if items.dim() != 3:
        raise CombineError(
            f"{label}: expected (num_items, tokens_per_item, D), got shape {tuple(items.shape)}"
            + ("; for a single item add a leading axis with .unsqueeze(0)" if items.dim() == 2 else "")
        )
    if items.shape[-1] != width:
        raise CombineError(
            f"{label}: tokens have width D={items.shape[-1]} but the text embeddings have D={width}; "
            f"project them to the language model's hidden size (ModalityProjector(..., output_size={width}))"
        )
    if items.shape[0] > 0 and items.shape[1] < 1:
        raise CombineError(f"{label}: tokens_per_item is 0; each item must have at least one token")
    return items.to(dtype=text.dtype)


def check_one_item_per_placeholder(
    input_ids: torch.Tensor,
    real: torch.Tensor,
    items: Mapping[int, torch.Tensor],
    names: Mapping[int, str],
    sample_ids: Sequence[str] | None,
) -> None:
    """Each modality brings exactly as many items as the batch has (real) placeholders of it."""
    for token_id, item in items.items():
        num_items = item.shape[0]
        per_sample = ((input_ids == token_id) & real).sum(dim=1)  # (B,)
        total = int(per_sample.sum())
        if total == 0 and num_items > 0:
            raise CombineError(
                f"{num_items} {names[token_id]} item(s) given but no sample in the batch has a "
                f"{_describe(token_id, names)} placeholder; add the placeholder to the prompts or drop the embeddings"
            )
        if total != num_items:
            raise CombineError(
                f"the batch has {total} {_describe(token_id, names)} placeholder(s) "
                f"({_list_samples(sample_ids, list(enumerate(map(str, per_sample.tolist()))))}) "
                f"but {num_items} {names[token_id]} item(s) were given; give exactly one item per placeholder, "
                "in batch-then-sequence order (encode only the clips whose prompt has the placeholder), "
                "or fix the prompts"
            )


def _too_long_error(
    full_length: torch.Tensor,
    token_modality: torch.Tensor,
    counts: Mapping[int, torch.Tensor],
    items: Mapping[int, torch.Tensor],
    names: Mapping[int, str],
    max_length: int,
    sample_ids: Sequence[str] | None,
) -> CombineError:
    """The error for rows longer than ``max_length``: each too-long sample with its length broken down."""
    num_text = (token_modality == TEXT).sum(dim=1)  # (B,)

    def breakdown(b: int) -> str:
        parts = [f"{int(num_text[b])} text"]
        parts += [f"{int(counts[t][b])} <{names[t]}> x {items[t].shape[1]}" for t in items if int(counts[t][b]) > 0]
        return f"{int(full_length[b])} positions ({' + '.join(parts)})"

    too_long = (full_length > max_length).nonzero().flatten().tolist()
    listed = _list_samples(sample_ids, [(b, breakdown(b)) for b in too_long])
    return CombineError(
        f"{listed}: longer than max_length={max_length} after expanding the placeholders. Shorten the "
        "conversation, use fewer modality tokens (token compression, fewer frames, a shorter "
        "audio_seq_len), raise max_length, or pass truncate=True to cut on the right (answer tokens "
        "at the end are lost)"
    )


# ----------------------------------------------------------------------------- the zipper


def combine_multimodal_inputs(
    input_ids: torch.Tensor,
    text_embeddings: torch.Tensor,
    modality_embeddings: Mapping[int, torch.Tensor | Sequence[torch.Tensor]],
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    pad_token_id: int = PAD_TOKEN_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    truncate: bool = False,
    padding_side: str = "right",
    sample_ids: Sequence[str] | None = None,
    modality_names: Mapping[int, str] | None = None,
    layout: str = "block",
    positions: str = "sequence",
    timing: TokenTiming | None = None,
) -> CombinedInputs:
    """Expand every placeholder into its modality's tokens and build the decoder's input (see the module doc).

    After checking the arguments, five steps: (1) a length per input token (interleaved: a sample's first
    placeholder takes both clips' tokens, the second none), (2) where each token's block starts in the
    combined row (a cumsum), (3) refuse or truncate rows longer than ``max_length``, (4) scatter the text rows,
    then each modality's rows, into place (interleaved: at their offsets in the span), (5) the mask and the
    position ids.

    Args:
        input_ids: ``(B, L)`` token ids with one placeholder id per clip, padded (as ``collate_av_batch`` gives).
        text_embeddings: ``(B, L, D)`` the language model's word embeddings of ``input_ids``; the rows at
            placeholders and padding are not used.
        modality_embeddings: placeholder id -> ``(num_items, tokens_per_item, D)`` (or a list of
            ``(tokens_per_item, D)``): one item per placeholder occurrence in the batch, in
            batch-then-sequence order. Cast to the text embeddings' dtype.
        attention_mask: ``(B, L)`` True on real tokens. Default: ``input_ids != pad_token_id``, which is
            wrong only if ``<pad>`` appears inside a sample (a conversation that literally holds the text
            ``"<pad>"``); pass the collate's mask to be safe.
        labels: ``(B, L)`` with ``ignore_index`` on the prompt; optional.
        pad_token_id: id written on padding positions of :attr:`CombinedInputs.input_ids`.
        ignore_index: label value the loss skips.
        max_length: longest combined row allowed (the decoder's ``max_sequence_length``); ``None``: no limit.
        truncate: cut longer rows to ``max_length`` on the right (with a warning) instead of raising.
        padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
        sample_ids: names of the samples for error messages (the batch's ``id`` list).
        modality_names: placeholder id -> ``"video"`` / ``"audio"``; default :data:`DEFAULT_MODALITY_NAMES`.
            An id named here that appears in ``input_ids`` but has no embeddings is an error.
        layout: ``"block"`` or ``"interleaved"`` (chunk by chunk in time; needs ``timing``).
        positions: ``"sequence"`` (0 .. n-1) or ``"time"`` (media ``s + tick``, text ``max + 1``; needs ``timing``).
        timing: :class:`TokenTiming`, the time of every modality token.

    Returns:
        :class:`CombinedInputs` with rows of ``S`` = the longest combined length in the batch.

    Raises:
        CombineError: (a :class:`~mimo_lib.errors.MimoInputError`) with the sample's name, when placeholders
            and items do not match, a row is longer than ``max_length``, or the shapes do not fit.
        ValueError: for settings no data can cause (``padding_side``, ``modality_names``, ...).
    """
    # ------------------------------------------------------------------ check the arguments
    sample_ids = None if sample_ids is None else list(sample_ids)
    names = dict(DEFAULT_MODALITY_NAMES if modality_names is None else modality_names)
    check_tensors(input_ids, text_embeddings, attention_mask, labels)
    check_options(input_ids.shape[0], max_length, truncate, padding_side, sample_ids)
    check_modality_names(names, modality_embeddings, pad_token_id)
    if attention_mask is None:
        attention_mask = input_ids != pad_token_id  # (B, L)
    real = attention_mask.to(torch.bool)  # (B, L)
    check_every_placeholder_has_embeddings(input_ids, real, modality_embeddings, names, sample_ids)
    items = {  # token id -> (num_items, tokens_per_item, D)
        token_id: _check_items(given, f"{names[token_id]} embeddings for {_describe(token_id, names)}", text_embeddings)
        for token_id, given in modality_embeddings.items()
    }
    check_one_item_per_placeholder(input_ids, real, items, names, sample_ids)
    check_time_options(layout, positions, timing, names, list(items))
    if timing is not None:
        check_token_times(items, timing, names)
    batch, _, width = text_embeddings.shape

    # ------------------------------------------------------------------ step 1: a length per input token
    token_length = real.long()  # (B, L): 1 for a real token, 0 for padding
    token_modality = torch.where(real, TEXT, PADDING)  # (B, L)
    placeholders: dict[int, torch.Tensor] = {}  # token id -> (B, L) bool
    counts: dict[int, torch.Tensor] = {}  # token id -> (B,) placeholders per sample
    for token_id, item in items.items():
        is_placeholder = (input_ids == token_id) & real  # (B, L)
        placeholders[token_id] = is_placeholder
        counts[token_id] = is_placeholder.sum(dim=1)  # (B,)
        token_length = token_length.masked_fill(is_placeholder, item.shape[1])  # tokens_per_item
        token_modality = token_modality.masked_fill(is_placeholder, _CODE_OF_NAME[names[token_id]])
    if (layout, positions) != ("block", "sequence"):
        check_one_clip_per_sample(counts, names, sample_ids, f"layout={layout!r}, positions={positions!r}")
    # interleaved: in samples with both a video and an audio, the first placeholder (its column: anchor) takes
    # both clips' tokens, the second none; `offsets` is each token's place inside that span
    offsets = {token_id: torch.arange(item.shape[1], device=input_ids.device) for token_id, item in items.items()}
    paired = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)  # (B,)
    anchor = torch.zeros(batch, dtype=torch.long, device=input_ids.device)  # (B,)
    by_name = {names[token_id]: token_id for token_id in items}
    if layout == "interleaved" and "video" in by_name and "audio" in by_name:
        vid, aud = by_name["video"], by_name["audio"]
        paired = (counts[vid] > 0) & (counts[aud] > 0)  # (B,)
    if bool(paired.any()):
        video_col = placeholders[vid].long().argmax(dim=1)  # (B,) the placeholder's column (where paired)
        audio_col = placeholders[aud].long().argmax(dim=1)  # (B,)
        anchor = torch.minimum(video_col, audio_col)  # (B,)
        rows = paired.nonzero().flatten()  # (P,)
        token_length[rows, anchor[rows]] = items[vid].shape[1] + items[aud].shape[1]
        token_length[rows, torch.maximum(video_col, audio_col)[rows]] = 0
        offsets[vid], offsets[aud] = (
            o.to(input_ids.device) for o in interleave_offsets(timing.chunks(vid), timing.chunks(aud))
        )

    # ------------------------------------------------------------------ step 2: where each block starts
    block_end = token_length.cumsum(dim=1)  # (B, L): one past the last combined position of each token
    block_start = block_end - token_length  # (B, L): its first combined position
    full_length = token_length.sum(dim=1)  # (B,) combined length of each row

    # ------------------------------------------------------------------ step 3: too long?
    longest = int(full_length.max()) if batch > 0 else 0
    seq_len = longest
    if max_length is not None and longest > max_length:
        if not truncate:
            raise _too_long_error(full_length, token_modality, counts, items, names, max_length, sample_ids)
        seq_len = max_length
    kept_length = full_length.clamp(max=seq_len)  # (B,)
    if padding_side == "left":
        block_start = block_start + (seq_len - kept_length)[:, None]  # shift each row to end at the last column

    # ------------------------------------------------------------------ step 4: scatter text, then modalities
    embeddings = text_embeddings.new_zeros(batch, seq_len, width)  # (B, S, D)
    out_ids = input_ids.new_full((batch, seq_len), pad_token_id)  # (B, S)
    modality_map = torch.full((batch, seq_len), PADDING, dtype=torch.long, device=input_ids.device)  # (B, S)
    out_labels = None
    if labels is not None:
        out_labels = labels.new_full((batch, seq_len), ignore_index)  # (B, S)
    out_ticks = None if timing is None else torch.full((batch, seq_len), -1, dtype=torch.long, device=input_ids.device)

    rows, cols = (token_modality == TEXT).nonzero(as_tuple=True)  # (N_text,), (N_text,): every text token
    dest = block_start[rows, cols]  # (N_text,) its combined position
    keep = dest < seq_len  # False only for tokens truncated away
    if longest > seq_len:  # only with truncate=True
        supervised = None if labels is None else labels[rows, cols] != ignore_index  # (N_text,)
        _warn_truncation(rows, supervised, keep, full_length, seq_len, sample_ids)
    rows, cols, dest = rows[keep], cols[keep], dest[keep]
    embeddings[rows, dest] = text_embeddings[rows, cols]
    out_ids[rows, dest] = input_ids[rows, cols]
    modality_map[rows, dest] = TEXT
    if out_labels is not None:
        out_labels[rows, dest] = labels[rows, cols]

    for token_id, item in items.items():
        num_items, tokens_per_item, _ = item.shape
        # nonzero lists positions row-major: batch then sequence, the order the items come in.
        rows, cols = placeholders[token_id].nonzero(as_tuple=True)  # (num_items,), (num_items,)
        in_span = paired[rows]  # (num_items,) interleaved: the span starts at the sample's first placeholder
        cols = torch.where(in_span, anchor[rows], cols)
        plain = torch.arange(tokens_per_item, device=input_ids.device)  # (tokens_per_item,) a block, in order
        offset = torch.where(in_span[:, None], offsets[token_id][None, :], plain[None, :])  # (num_items, tokens_per_item)
        dest = block_start[rows, cols][:, None] + offset  # (num_items, tokens_per_item)
        rows = rows[:, None].expand_as(dest)  # (num_items, tokens_per_item)
        keep = dest < seq_len
        embeddings[rows[keep], dest[keep]] = item[keep]  # item[keep]: (kept tokens, D)
        out_ids[rows[keep], dest[keep]] = token_id
        modality_map[rows[keep], dest[keep]] = _CODE_OF_NAME[names[token_id]]
        if out_ticks is not None:
            ticks = timing.ticks(token_id).to(input_ids.device)[None, :].expand_as(dest)  # (num_items, tokens_per_item)
            out_ticks[rows[keep], dest[keep]] = ticks[keep]

    # ------------------------------------------------------------------ step 5: mask and positions
    columns = torch.arange(seq_len, device=input_ids.device)[None, :]  # (1, S)
    if padding_side == "right":
        out_mask = columns < kept_length[:, None]  # (B, S)
    else:
        out_mask = columns >= (seq_len - kept_length)[:, None]  # (B, S)
    if positions == "time":
        position_ids = time_position_ids(modality_map, out_ticks, out_mask)  # (B, S)
    else:
        position_ids = (out_mask.long().cumsum(dim=1) - 1).masked_fill(~out_mask, 0)  # (B, S)

    return CombinedInputs(
        embeddings=embeddings,
        attention_mask=out_mask,
        position_ids=position_ids,
        labels=out_labels,
        modality_map=modality_map,
        input_ids=out_ids,
        ticks=out_ticks,
    )


def _warn_truncation(
    rows: torch.Tensor,
    supervised: torch.Tensor | None,
    keep: torch.Tensor,
    full_length: torch.Tensor,
    seq_len: int,
    sample_ids: Sequence[str] | None,
) -> None:
    """One warning naming every truncated sample and the answer tokens it lost."""
    truncated = (full_length > seq_len).nonzero().flatten().tolist()
    lost = None
    if supervised is not None:
        lost = torch.bincount(rows[supervised & ~keep], minlength=full_length.shape[0])  # (B,)

    entries = []
    for b in truncated:
        text = f"{int(full_length[b])} -> {seq_len} positions"
        if lost is not None:
            text += f", {int(lost[b])} answer token(s) lost"
        entries.append((b, text))
    warnings.warn(
        f"combine_multimodal_inputs truncated {len(truncated)} sample(s) to max_length={seq_len} "
        f"({_list_samples(sample_ids, entries)}); raise max_length or use fewer modality tokens "
        "to keep whole answers",
        stacklevel=3,
    )
