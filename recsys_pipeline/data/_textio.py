"""Low-level text input for the MovieLens readers: files in a folder or a zip, and bad-line finding.

The fast path reads files with ``pyarrow.csv``, which reports a bad value but not its line. When it
fails, or when a later check finds a bad row, the functions here stream the file again as lines
(numpy newline search plus vectorised pyarrow string kernels, no per-row Python) to name the first
offending line, 1-based and counting the header and blank lines, as an editor would show it.
"""

from __future__ import annotations

import codecs
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK_BYTES = 1 << 24  # lines are checked 16 MiB at a time, so a bad 1 GB file needs little memory

# What a value of each column kind must look like for pyarrow to parse it (empty -> null is fine).
_INT = r"^\s*-?\d{1,18}\s*$|^$"
_PATTERNS = {
    "int8": _INT,
    "int16": _INT,
    "int32": _INT,
    "unix": _INT,
    "float": r"(?i)^\s*[-+]?((\d+\.?\d*|\.\d+)(e[-+]?\d+)?|nan|inf|infinity)\s*$|^$",
    # an integer that a spreadsheet or pandas may have written as a float ('862.0')
    "intfloat": r"^\s*-?\d{1,18}(\.0*)?\s*$|^$",
    "datetime": r"^\s*\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?\s*$|^$",
}
_INT_BOUNDS = {"int8": 2**7, "int16": 2**15, "int32": 2**31, "unix": 2**63}
_DESCRIPTIONS = {
    "float": "a number",
    "datetime": "a 'YYYY-MM-DD HH:MM:SS' timestamp",
    "unix": "an integer (Unix seconds)",
    "intfloat": "an integer",
}
ARROW_TYPES = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "unix": pa.int64(),
    "float": pa.float32(),
    "intfloat": pa.float64(),  # read as float, then checked whole and cast to int32
    "datetime": pa.timestamp("s"),
    "str": pa.string(),
}


@dataclass(frozen=True)
class Member:
    """One file of a release: ``name`` inside the folder or zip ``source``."""

    source: Path
    name: str

    @property
    def in_zip(self) -> bool:
        """Whether the file is a member of a zip archive."""
        return self.source.is_file()

    @property
    def label(self) -> str:
        """How error messages name the file: its path, or the zip and the member."""
        return f"{self.source} member {self.name}" if self.in_zip else str(self.source / self.name)

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Open the file for binary reading, streaming zip members without extracting them.

        Raises:
            FileNotFoundError: the file or member is missing.
            ValueError: the zip is unreadable, truncated or corrupt.
        """
        if not self.in_zip:
            path = self.source / self.name
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
            with open(path, "rb") as stream:
                yield stream
            return
        try:
            archive = zipfile.ZipFile(self.source)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"{self.source} is not a readable zip file ({err})") from err
        with archive:
            try:
                stream = archive.open(self.name)
            except KeyError as err:
                raise FileNotFoundError(f"{self.label} not found in the zip") from err
            try:
                with stream:
                    yield stream
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise ValueError(f"{self.label}: the zip is corrupt or truncated ({err})") from err


@dataclass(frozen=True)
class LineFormat:
    """How a file's lines split into fields, for finding the first malformed line.

    Attributes:
        sep: field separator (``","``, ``"\\t"``, ``"|"`` or ``"::"``).
        columns: column names in file order, as error messages show them.
        kinds: the kind of each column: int8/int16/int32/unix/float/datetime/str.
        free: index of a free-text column that may itself contain ``sep`` (titles, tags).
        quoted: fields may be double-quoted (CSV).
        header: the first line is a header.
        encoding: the file's text encoding.
    """

    sep: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    free: int | None = None
    quoted: bool = False
    header: bool = False
    encoding: str = "utf-8"


def iter_lines(member: Member, encoding: str) -> Iterator[tuple[pa.StringArray, np.ndarray]]:
    """Yield the file's non-empty lines in chunks, with their 1-based line numbers.

    Args:
        member: the file.
        encoding: its text encoding; lines come back as UTF-8 strings without terminators.

    Returns:
        An iterator of ``(lines, line_numbers)`` pairs.

    Raises:
        ValueError: bytes that are not valid in ``encoding``, naming the line.
    """
    first_line, carry = 1, b""
    with member.open() as stream:
        while True:
            block = stream.read(CHUNK_BYTES)
            data = carry + block
            if block:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    carry = data
                    continue
                data, carry = data[:cut], data[cut:]
            if data:
                yield _split_lines(data, first_line, encoding, member.label)
                first_line += data.count(b"\n")
            if not block:
                return


# ml-10m is "UTF-8-ish": mostly UTF-8 with a few stray Latin-1 bytes. Its free-text files
# are decoded as UTF-8, each invalid byte taken as the Latin-1 character it would be.
UTF8_LATIN1_FALLBACK = "utf-8 (latin-1 fallback)"
codecs.register_error(
    "recsys_latin1_fallback",
    lambda err: (err.object[err.start : err.end].decode("latin-1"), err.end),
)


def decode(data: bytes, encoding: str) -> str:
    """Decode ``data``; ``UTF8_LATIN1_FALLBACK`` never fails, every other encoding is strict."""
    if encoding == UTF8_LATIN1_FALLBACK:
        return data.decode("utf-8", errors="recsys_latin1_fallback")
    return data.decode(encoding)


def _split_lines(
    data: bytes, first_line: int, encoding: str, label: str
) -> tuple[pa.StringArray, np.ndarray]:
    try:
        text = decode(data, encoding)
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        bad = data[err.start : err.end]
        raise ValueError(f"{label}, line {line}: bytes {bad!r} are not valid {encoding}") from err
    raw = data if encoding.replace("-", "").lower() == "utf8" else text.encode("utf-8")
    buf = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(buf == ord("\n")) + 1
    if not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    lines = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(raw))
    lines = pc.utf8_rtrim(lines, characters="\r\n")
    trimmed = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    lengths = np.diff(trimmed)  # blank lines (nothing left but terminators) are dropped
    numbers = np.arange(first_line, first_line + len(ends), dtype=np.int64)
    keep = lengths > 0
    if keep.all():
        return lines, numbers
    return lines.filter(pa.array(keep)), numbers[keep]


def _bools(mask: pa.Array) -> np.ndarray:
    """A writable numpy bool array from a pyarrow boolean array, null -> False."""
    return np.array(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def read_lines(member: Member, fmt: LineFormat) -> tuple[pa.StringArray, np.ndarray]:
    """All non-empty data lines of a small file (header dropped) and their line numbers."""
    parts = list(data_lines(member, fmt))
    if not parts:
        return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    return pa.concat_arrays([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def split_fields(lines: pa.StringArray, fmt: LineFormat) -> tuple[np.ndarray, list[pa.Array]]:
    """Split lines into fields: (mask of lines with the right field count, their fields)."""
    n = len(fmt.columns)
    lines = _hide_quotes(lines, fmt)
    if fmt.free is None:
        parts = pc.split_pattern(lines, fmt.sep)
        ok = _bools(pc.equal(pc.list_value_length(parts), n))
        parts = parts if ok.all() else parts.filter(pa.array(ok))
        return ok, [pc.list_element(parts, i) for i in range(n)]
    left = pc.split_pattern(lines, fmt.sep, max_splits=fmt.free)
    ok = _bools(pc.equal(pc.list_value_length(left), fmt.free + 1))
    left = left.filter(pa.array(ok))
    rest = pc.list_element(left, fmt.free) if len(left) else pa.array([], pa.string())
    right = pc.split_pattern(rest, fmt.sep, max_splits=n - fmt.free - 1, reverse=True)
    ok_right = _bools(pc.equal(pc.list_value_length(right), n - fmt.free))
    ok[ok] = ok_right
    left, right = left.filter(pa.array(ok_right)), right.filter(pa.array(ok_right))
    fields = [pc.list_element(left, i) for i in range(fmt.free)]
    return ok, fields + [pc.list_element(right, i) for i in range(n - fmt.free)]


def _hide_quotes(lines: pa.StringArray, fmt: LineFormat) -> pa.StringArray:
    """Unquote simple CSV fields, and hide other quoted text so its separators do not count."""
    if not fmt.quoted or not pc.any(pc.match_substring(lines, '"')).as_py():
        return lines
    lines = pc.replace_substring_regex(lines, r'"([^",]*)"', r"\1")
    return pc.replace_substring_regex(lines, r'"(?:[^"]|"")*"', "Q")


def first_invalid(values: pa.Array, kind: str) -> int | None:
    """Index of the first value pyarrow cannot parse as ``kind``, or None when all parse."""
    if kind not in _PATTERNS or len(values) == 0:
        return None
    try:  # fast path: the whole chunk parses (empty or padded values take the slow path)
        pc.cast(values, ARROW_TYPES[kind])
        return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    good = _bools(pc.match_substring_regex(values, _PATTERNS[kind]))
    if kind in _INT_BOUNDS:  # digits that overflow the column type are invalid too
        trimmed = pc.utf8_trim_whitespace(values.filter(pa.array(good)))
        numbers = pc.cast(_empty_to_null(trimmed), pa.int64()).fill_null(0).to_numpy()
        bound = _INT_BOUNDS[kind]
        good[good] = (numbers >= -bound) & (numbers < bound)
    return None if good.all() else int(np.argmin(good))


def describe_problem(lines: pa.StringArray, numbers: np.ndarray, fmt: LineFormat) -> str | None:
    """Describe the first malformed line in ``lines`` (``line N, column c: ...``), or None."""
    ok, fields = split_fields(lines, fmt)
    found: list[tuple[int, str]] = []
    if not ok.all():
        i = int(np.argmin(ok))
        n_found = len(pc.split_pattern(_hide_quotes(lines[i : i + 1], fmt), fmt.sep)[0])
        expected = f"{'at least ' if fmt.free is not None else ''}{len(fmt.columns)}"
        header = ", ".join(fmt.columns)
        found.append(
            (
                int(numbers[i]),
                f"line {numbers[i]}: expected {expected} fields ({header}) separated by "
                f"{fmt.sep!r}, found {n_found}",
            )
        )
    good_numbers = numbers[ok]
    for column, kind, values in zip(fmt.columns, fmt.kinds, fields, strict=True):
        j = first_invalid(values, kind)
        if j is not None:
            what = _DESCRIPTIONS.get(kind, "an integer")
            line = int(good_numbers[j])
            found.append(
                (
                    line,
                    f"line {line}, column '{column}': cannot parse {values[j].as_py()!r} as {what}",
                )
            )
    return min(found)[1] if found else None


def data_lines(member: Member, fmt: LineFormat) -> Iterator[tuple[pa.StringArray, np.ndarray]]:
    """Like ``iter_lines``, without the header line."""
    first = True
    for lines, numbers in iter_lines(member, fmt.encoding):
        if first and fmt.header:
            lines, numbers = lines[1:], numbers[1:]
        first = False
        yield lines, numbers


def locate_problem(member: Member, fmt: LineFormat) -> str | None:
    """Stream the file and describe its first malformed line, or None if none is found."""
    for lines, numbers in data_lines(member, fmt):
        problem = describe_problem(lines, numbers, fmt)
        if problem is not None:
            return problem
    return None


def line_of_record(member: Member, fmt: LineFormat, index: int) -> int:
    """The 1-based line number of data record ``index`` (0-based, blank lines not counted)."""
    seen = 0
    for _, numbers in data_lines(member, fmt):
        if index < seen + len(numbers):
            return int(numbers[index - seen])
        seen += len(numbers)
    raise IndexError(f"{member.label} has no data record {index}")


def explain_arrow_error(member: Member, fmt: LineFormat, message: str, names: list[str]) -> str:
    """Name the column (and the line, by finding the bad value) in a pyarrow CSV error.

    ``names`` are the column names pyarrow read, whose index ``In CSV column #k`` refers to.
    """
    match = re.search(r"In CSV column #(\d+): .*invalid value '(.*)'", message)
    if match is None or int(match.group(1)) >= len(names):
        return arrow_error_columns(message, names)
    column, value = names[int(match.group(1))], match.group(2)
    if column in fmt.columns:
        k = fmt.columns.index(column)
        for lines, numbers in data_lines(member, fmt):
            ok, fields = split_fields(lines, fmt)
            hit = _bools(pc.equal(pc.utf8_trim_whitespace(fields[k]), value.strip()))
            if hit.any():
                what = _DESCRIPTIONS.get(fmt.kinds[k], "an integer")
                line = int(numbers[ok][np.argmax(hit)])
                return f"line {line}, column '{column}': cannot parse {value!r} as {what}"
    return arrow_error_columns(message, names)


def arrow_error_columns(message: str, names: list[str]) -> str:
    """Replace pyarrow's ``In CSV column #k`` by the column's name in an error message."""

    def name(match: re.Match[str]) -> str:
        k = int(match.group(1))
        return f"column '{names[k]}'" if k < len(names) else match.group(0)

    return re.sub(r"In CSV column #(\d+)", name, message)


def _empty_to_null(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)


def cast_field(values: pa.Array, kind: str) -> pa.Array:
    """Cast a string field split from lines to its kind's type (empty numeric -> null)."""
    if kind == "str":
        return values
    return pc.cast(_empty_to_null(pc.utf8_trim_whitespace(values)), ARROW_TYPES[kind])
