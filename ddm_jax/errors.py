"""One exception type for every user-facing failure: the CLI prints its message on one line."""


class DDMError(Exception):
    """Bad input, a bad weight file or checkpoint: the message says what and where."""


class WriteFailed(DDMError, OSError):
    """An output that could not be written (a full disk, an unwritable folder, a file in the way): a
    one-line DDMError for the CLI, and still an OSError for callers that handle those."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first non-empty line, or its type's name if it has none:
    what a one-line error quotes of a library's exception."""
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
