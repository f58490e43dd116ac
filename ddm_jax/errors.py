"""One exception type for every user-facing failure: the CLI prints its message on one line."""


class DDMError(Exception):
    """Bad input, a bad weight file or checkpoint: the message says what and where."""
