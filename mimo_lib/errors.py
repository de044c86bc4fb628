"""Errors that ``mimo_lib`` raises for bad input.

Every message names the file (or the sample, or the line) and says what to do,
so a user pointing the library at their own folder of clips can fix the data
instead of debugging tensors.
"""


class MimoInputError(ValueError):
    """Base class for every bad-input error in ``mimo_lib``."""


class MediaError(MimoInputError):
    """A media file is missing, unreadable, truncated, or lacks a needed stream."""


class DatasetFormatError(MimoInputError):
    """A dataset folder or annotation file does not follow the documented format."""
