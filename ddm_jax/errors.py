"""The errors ddm-jax raises. Each is a `DDMError` (the CLI prints its message on one line) and also
the built-in exception it means, so a library user catches what they would anyway:

    try:
        decomposer(spectra, mass)
    except ValueError as err:        # InputError: a wrong shape, NaN, a non-positive mass, ...
        ...

- `InputError` (a `ValueError`): bad input: arrays, options, or a file whose content is not what it
  should be (a truncated or foreign weight file, a damaged FITS file);
- `MissingFileError` (a `FileNotFoundError`): a file or folder that is not there;
- `OutputExistsError` (a `FileExistsError`): an output that is already there and would be replaced
  (pass the overwrite option);
- `WriteFailed` (an `OSError`): an output that could not be written (a full disk, an unwritable folder).
"""


class DDMError(Exception):
    """The base of every error ddm-jax raises on purpose: the message says what and where."""


class InputError(DDMError, ValueError):
    """Bad input: arrays, options, or the content of a file (a spectrum, weight file, checkpoint or output)."""


class MissingFileError(DDMError, FileNotFoundError):
    """A file or folder that was named but is not there."""


class OutputExistsError(DDMError, FileExistsError):
    """An output that is already there and would be replaced without the overwrite option."""


class WriteFailed(DDMError, OSError):
    """An output that could not be written (a full disk, an unwritable folder, a file in the way): a
    one-line DDMError for the CLI, and still an OSError for callers that handle those."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first non-empty line, or its type's name if it has none:
    what a one-line error quotes of a library's exception."""
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
