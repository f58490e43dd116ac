"""Opening a FITS file safely (`read_fits_guarded`): every header and the size of the data it
declares checked against the file's length before astropy parses it, and every failure one
`InputError` line naming the file."""

from __future__ import annotations

import gzip
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

from ddm_jax.errors import DDMError, InputError, first_line
from ddm_jax.io.safe import refuse_beyond_memory

FITS_BLOCK = 2880  # bytes: FITS pads every header and data unit to a multiple of this
_COMPRESSED = {b"BZh": "bzip2", b"PK\x03\x04": "zip"}  # astropy would decompress these too


def read_fits_guarded(path: str | os.PathLike, parse: Callable):
    """`parse(hdul)` on the open FITS file, every failure a DDMError naming the file.

    What the file declares is checked before astropy parses it (`check_fits_structure`): every
    header, and where its data lie, against the file's length (the decompressed stream, for a
    gzipped file), and the file must fit in the memory available.
    astropy only warns that a file is short; the read may then fail obscurely or not at all:
    a truncation warning (or a compressed stream that ends early) wins over any other failure.
    `parse` must read all the data it needs before it returns (the file is closed after).
    """
    from astropy.io import fits  # heavy import: only FITS users pay for it

    path = Path(path)
    refuse_beyond_memory(path, check_fits_structure(path))
    result, failure = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                _check_hdu_kinds(path, hdul)
                result = parse(hdul)
        except DDMError as err:
            failure = err
        except EOFError as err:  # a .gz file cut short inside an HDU that was read
            raise InputError(f"{path}: truncated FITS file ({err})") from None
        except (OSError, ValueError, TypeError, IndexError, KeyError, zlib.error, fits.VerifyError) as err:
            failure = err
    truncated = next((w.message for w in caught if "truncated" in str(w.message)), None)
    if truncated is not None:
        raise InputError(f"{path}: truncated FITS file ({truncated})")
    if isinstance(failure, DDMError):
        raise failure
    if failure is not None:
        raise InputError(f"{path}: unreadable FITS file ({first_line(failure)})")
    return result


def _check_hdu_kinds(path: Path, hdul) -> None:
    """Every HDU one astropy understands: it reads a damaged header as a bare unit without data."""
    from astropy.io import fits

    kinds = (fits.PrimaryHDU, fits.ImageHDU, fits.BinTableHDU, fits.TableHDU, fits.CompImageHDU, fits.GroupsHDU)
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, kinds):
            raise InputError(f"{path}: HDU {index} ({hdu.name or 'unnamed'}) is not a standard FITS unit (a damaged "
                             "header)")


MAX_HEADER_BLOCKS = 1000  # 2.9 MB of header: survey files use a few dozen blocks
FITS_BITPIX = (8, 16, 32, 64, -32, -64)
STRUCTURAL_CARDS = r"BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|GROUPS"


def check_fits_structure(path: Path) -> int:
    """Walk the FITS file's headers, skipping their data unread (a gzipped stream is decompressed
    block by block, holding none of it), and refuse, before astropy parses anything, a header
    that never ends, structural cards out of the standard's range (NAXIS and TFIELDS at most 999,
    a known BITPIX, no negative size), data that would lie past the end of the file, and a
    compressed stream that ends early (astropy would take its end for the end of the file).
    Returns the file's (decompressed) length."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            raise InputError(f"{path}: a {name}-compressed file; FITS files are read plain or gzipped")
    zipped = head.startswith(b"\x1f\x8b")
    try:
        with gzip.open(path) if zipped else open(path, "rb") as stream:
            length = path.stat().st_size if not zipped else None
            index = 0
            while True:
                cards = _read_header(path, stream, index)
                if cards is None:
                    break
                size = _declared_data_size(path, cards, index)
                padded = -(-size // FITS_BLOCK) * FITS_BLOCK
                data_start = stream.tell()
                stream.seek(min(padded, 1 << 62), os.SEEK_CUR)  # past the end at most: seek offsets are 64-bit
                end = stream.tell() if zipped else min(data_start + padded, length)
                if data_start + padded - end >= FITS_BLOCK:  # the last block's padding may be missing
                    name = cards.get("EXTNAME", f"#{index}").strip("' ") or f"#{index}"
                    axes = " x ".join(cards.get(f"NAXIS{i}", "?") for i in range(1, int(cards.get("NAXIS", 0)) + 1))
                    raise InputError(f"{path}: truncated FITS file: HDU {name} declares {padded} bytes of data (NAXIS "
                                     f"{axes or 'none'}, BITPIX {cards.get('BITPIX')}) from byte {data_start}, but the "
                                     f"file holds {end if zipped else length} bytes")
                index += 1
            if zipped:
                while stream.read(1 << 22):  # to the end: a stream cut short raises EOFError
                    pass
                length = stream.tell()
    except EOFError as err:
        raise InputError(f"{path}: truncated FITS file ({err})") from None
    except (OSError, zlib.error) as err:
        raise InputError(f"{path}: {'corrupt gzip stream' if zipped else 'cannot read'} ({err})") from None
    return length


def _read_header(path: Path, stream, index: int) -> dict[str, str] | None:
    """The next header's cards (keyword: value text), or None at the end of the HDUs (the end of
    the file, or what follows the last HDU not being an extension header)."""
    cards: dict[str, str] = {}
    for block_number in range(MAX_HEADER_BLOCKS):
        block = stream.read(FITS_BLOCK)
        if block_number == 0 and (not block.strip(b"\0") or not block.startswith(b"SIMPLE" if index == 0
                                                                                 else b"XTENSION")):
            if index == 0:
                raise InputError(f"{path}: not a FITS file (it does not start with a SIMPLE card)")
            return None  # padding or other bytes after the last HDU: astropy ignores them too
        if len(block) < FITS_BLOCK:
            raise InputError(f"{path}: truncated FITS file: header {index} ends at byte {stream.tell()}")
        for at in range(0, FITS_BLOCK, 80):
            card = block[at:at + 80].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards
            if card[8:10] != "= ":
                continue
            if key in cards and re.fullmatch(STRUCTURAL_CARDS, key):  # which one would astropy believe?
                raise InputError(f"{path}: header {index} has two {key} cards")
            cards.setdefault(key, card[10:].split("/", 1)[0].strip())
    raise InputError(f"{path}: header {index} has no END card within {MAX_HEADER_BLOCKS} blocks")


def _declared_data_size(path: Path, cards: dict[str, str], index: int) -> int:
    """Bytes of data a header declares: |BITPIX| / 8 x GCOUNT x (PCOUNT + NAXIS1 x ... x NAXISn)."""

    def integer(key: str, default: int | None, low: int, high: int | None = None) -> int:
        text = cards.get(key)
        if text is None and default is not None:
            return default
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise InputError(f"{path}: header {index}: {key} is {'missing' if text is None else repr(text)}, "
                             "not an integer") from None
        if value < low or (high is not None and value > high):
            raise InputError(f"{path}: header {index}: {key} = {value} is outside the FITS standard's range")
        return value

    bitpix = integer("BITPIX", None, -64, 64)
    if bitpix not in FITS_BITPIX:
        raise InputError(f"{path}: header {index}: BITPIX = {bitpix} is not one of {FITS_BITPIX}")
    naxis = integer("NAXIS", None, 0, 999)
    integer("TFIELDS", 0, 0, 999)
    axes = [integer(f"NAXIS{i}", None, 0) for i in range(1, naxis + 1)]
    if index == 0 and cards.get("GROUPS") == "T" and axes and axes[0] == 0:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is not a dimension
    if not axes:
        return 0
    return abs(bitpix) // 8 * integer("GCOUNT", 1, 0) * (integer("PCOUNT", 0, 0) + math.prod(axes))


def hdu_names(hdul) -> list[str]:
    return [h.name.upper() or f"#{i} (unnamed)" for i, h in enumerate(hdul)]


def column_names(hdu) -> list[str]:
    """A table's column names, upper case; none for an image (where a damaged file has one), and
    none for a column whose TTYPE card is missing (astropy names it None)."""
    columns = getattr(hdu, "columns", None)
    return [name.upper() for name in columns.names if name] if columns is not None else []
