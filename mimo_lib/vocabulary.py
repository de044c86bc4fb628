"""The learned pieces of :meth:`mimo_lib.tokenizer.Tokenizer.default`, committed: the book's vocabulary.

They are exactly what ``Tokenizer.from_corpus(mimo_lib.data.synthetic.vocabulary_corpus())`` learns from every
sentence the synthetic world can say (ids 262 onwards, after the 6 special and 256 byte tokens: 359 ids in all).
Writing them down here keeps the tokenizer free of the data generator, and makes the ids a fixed part of the
committed models: a new sentence in the generator can no longer shift them silently. ``tests/test_tokenizer.py``
checks that this list and the generator's corpus still agree; after changing the synthetic sentences on purpose,
rewrite it with ``python -m mimo_lib.vocabulary`` (and retrain: the ids change).
"""

from __future__ import annotations

#: In id order, most frequent first (ties alphabetically), as :meth:`Tokenizer.from_corpus` sorts them.
DEFAULT_PIECES: tuple[str, ...] = (
    ' the',
    ' a',
    ' while',
    ' moves',
    '?',
    '.',
    ' plays',
    ' note',
    ' to',
    ' circle',
    ' square',
    ' triangle',
    ' you',
    ' red',
    ' blue',
    ' green',
    ' hear',
    ' yellow',
    ' low',
    ' flute',
    ' playing',
    ' high',
    ' acoustic',
    ' drum',
    ' guitar',
    ' piano',
    ' A',
    'A',
    ' left',
    ' down',
    ' right',
    ' stays',
    ' still',
    ' up',
    ' an',
    ' Is',
    'Is',
    ' Do',
    'Do',
    ' is',
    ' colour',
    ' does',
    ' move',
    ' What',
    'What',
    ' Which',
    'Which',
    ' shape',
    ' do',
    ' on',
    ' screen',
    ' instrument',
    ' shown',
    ' direction',
    ' have',
    ' moving',
    ' way',
    ' which',
    ' It',
    'It',
    ' The',
    'The',
    ' How',
    ' In',
    ' see',
    'How',
    'In',
    ':',
    ' in',
    ' or',
    ' That',
    ' clip',
    ' sound',
    'That',
    ' Assistant',
    ' User',
    'User',
    '\n',
    ' ',
    ' Describe',
    ' Yes',
    ' and',
    ' happens',
    ' making',
    ' pitch',
    ' then',
    ' this',
    ' video',
    ' what',
    ',',
    'Assistant',
    'Describe',
    ' First',
    ' No',
    'First',
    'No',
    'Yes',
)


def _main() -> None:
    """Rewrite this file's list from the synthetic corpus (the only place that imports the generator)."""
    from pathlib import Path

    from mimo_lib.atomic import atomic_write_text
    from mimo_lib.data.synthetic import vocabulary_corpus
    from mimo_lib.tokenizer import Tokenizer

    path = Path(__file__)
    head, _, rest = path.read_text(encoding="utf-8").partition("DEFAULT_PIECES: tuple[str, ...] = (\n")
    _, _, tail = rest.partition("\n)\n")
    body = "\n".join(f"    {piece!r}," for piece in Tokenizer.from_corpus(vocabulary_corpus()).pieces)
    atomic_write_text(path, head + "DEFAULT_PIECES: tuple[str, ...] = (\n" + body + "\n)\n" + tail)
    print(f"wrote {path}")


if __name__ == "__main__":
    _main()
