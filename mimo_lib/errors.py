"""Errors that ``mimo_lib`` raises for bad input.

Every message names the file (or the sample, or the line) and says what to do,
so a user pointing the library at their own folder of clips can fix the data
instead of debugging tensors.

The rule: a condition the *user* can cause with their data, their prompts,
their files or their flags raises a :class:`MimoInputError` subclass, which the
command lines print as one line before exiting non-zero. A call that breaks a
function's contract (a tensor of the wrong rank from code, ``padding_side="up"``)
is a programming error and raises a plain ``ValueError`` / ``TypeError``, with a
traceback. Every class here is a ``ValueError``, so ``except ValueError`` still
catches both.

The family (``CheckpointError`` lives in :mod:`mimo_lib.checkpoint`)::

    MimoInputError
    ├── MediaError          a media file is missing, unreadable or lacks a stream
    ├── DatasetFormatError  a dataset folder or annotation file breaks the format
    ├── CombineError        placeholders in the text and the media given do not fit
    └── CheckpointError     a checkpoint folder is missing, partial or of another model
"""


class MimoInputError(ValueError):
    """Base class for every bad-input error in ``mimo_lib``."""


class MediaError(MimoInputError):
    """A media file is missing, unreadable, truncated, or lacks a needed stream."""


class DatasetFormatError(MimoInputError):
    """A dataset folder or annotation file does not follow the documented format."""


class CombineError(MimoInputError):
    """The placeholders in the token ids and the media (or modality embeddings) given do not fit together."""
