"""From a LLaVA-style conversation to token ids and training labels.

A conversation is a list of turns in the LLaVA schema::

    [{"from": "human", "value": "<video>\\n<audio>\\nWhat instrument is playing?"},
     {"from": "gpt",   "value": "That is an acoustic guitar."}]

The chat template turns it into one string, one line per speaker::

    <bos>User: <video>
    <audio>
    What instrument is playing?
    Assistant: That is an acoustic guitar.<eos>

Labels copy the ids of what the assistant says (its answer and the ``<eos>``
that ends it) and hold ``IGNORE_INDEX`` everywhere else, so the loss only
rewards answering, never predicting the user's question. The placeholders
``<video>`` and ``<audio>`` stay single tokens here; chapter 5's
``combine_multimodal_inputs`` expands each into its modality's embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

from mimo_lib.tokenizer import Tokenizer

#: Label value that ``torch.nn.functional.cross_entropy`` ignores.
IGNORE_INDEX = -100

USER_PREFIX = "User: "
ASSISTANT_PREFIX = "\nAssistant:"
TURN_SEPARATOR = "\n"
ROLES = ("human", "gpt")


def validate_turns(conversations: Sequence[dict], where: str = "conversation") -> None:
    """Check the turns alternate human, gpt, human, gpt ... and hold strings.

    ``where`` names the sample in the error message (e.g. ``"line 4 (id clip-07)"``).
    """
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise ValueError(f"{where}: 'conversations' must be a non-empty list of turns")
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"{where}: turn {i} must be an object with 'from' and 'value' fields, got {turn!r}")
        expected = ROLES[i % 2]
        if turn["from"] != expected:
            raise ValueError(
                f"{where}: turn {i} is from {turn['from']!r} but {expected!r} was expected "
                "(turns alternate human, gpt, human, gpt ...)"
            )
        if not isinstance(turn["value"], str):
            raise ValueError(f"{where}: turn {i} 'value' must be a string, got {type(turn['value']).__name__}")


def encode_conversation(
    tokenizer: Tokenizer, conversations: Sequence[dict], add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and labels for a whole conversation.

    Returns ``(input_ids, labels)``, two lists of the same length. With
    ``add_generation_prompt=True`` the conversation may end on a human turn and
    ``"\\nAssistant:"`` is appended, ready for ``generate``.
    """
    if add_generation_prompt and len(conversations) % 2 == 1:
        validate_turns(list(conversations) + [{"from": "gpt", "value": ""}])
    else:
        validate_turns(conversations)
        if len(conversations) % 2 == 1:
            raise ValueError(
                "the conversation ends on a human turn, but a training conversation must end on an answer; "
                "(code that prompts a model for the answer passes add_generation_prompt=True)"
            )

    input_ids = [tokenizer.bos_id]
    labels = [IGNORE_INDEX]

    def add(text: str, is_target: bool) -> None:
        ids = tokenizer.encode(text)
        input_ids.extend(ids)
        labels.extend(ids if is_target else [IGNORE_INDEX] * len(ids))

    for i in range(0, len(conversations), 2):
        if i > 0:
            add(TURN_SEPARATOR, is_target=False)
        add(USER_PREFIX + conversations[i]["value"] + ASSISTANT_PREFIX, is_target=False)
        if i + 1 < len(conversations):
            add(" " + conversations[i + 1]["value"], is_target=True)
            input_ids.append(tokenizer.eos_id)
            labels.append(tokenizer.eos_id)
    return input_ids, labels


def build_prompt(tokenizer: Tokenizer, question: str, with_video: bool = True, with_audio: bool = True) -> list[int]:
    """Token ids asking one question about a clip, ending in ``"Assistant:"``."""
    placeholders = ("<video>\n" if with_video else "") + ("<audio>\n" if with_audio else "")
    input_ids, _ = encode_conversation(
        tokenizer, [{"from": "human", "value": placeholders + question}], add_generation_prompt=True
    )
    return input_ids
