"""Reading text input for the importers (features/importers.py): whole files, decoded and split into lines and
fields vectorized over all lines at once, bad bytes and wrong field counts kept for the rejection report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from argusrank.features.validate import UnreadableInput


def read_input_bytes(p: Path, fmt: str) -> bytes:
    """The bytes of input file ``p``: FileNotFoundError if missing, UnreadableInput if unreadable."""
    if not p.is_file():
        raise FileNotFoundError(f"{fmt}: no such file {p}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UnreadableInput(f"{fmt}: cannot read {p}: {exc.strerror or exc}") from exc


def decode_text(data: bytes, what: str) -> tuple[str, str | None]:
    """(text, None) for valid UTF-8 (BOM dropped); else (text with bad bytes as ``\\xNN``, text with U+FFFD)."""
    if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UnreadableInput(f"{what}: UTF-16/32 text (byte-order mark {data[:2].hex()}); expected UTF-8")
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:  # the two decodings differ exactly where the bytes are bad
        return data.decode("utf-8", errors="backslashreplace"), data.decode("utf-8", errors="replace")


def _split_lines(text: str) -> pa.Array:
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    return pc.utf8_rtrim(lines, "\r")


def text_lines(data: bytes, what: str) -> tuple[pa.Array, np.ndarray, pa.Array | None]:
    """Non-empty lines (CR stripped), their 0-based physical line index, and the same lines
    decoded with U+FFFD replacement where the input has bytes that are not UTF-8 (else None)."""
    text, alt = decode_text(data, what)
    lines = _split_lines(text)
    keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    idx = np.flatnonzero(keep.to_numpy(zero_copy_only=False)).astype(np.int64)
    return lines.filter(keep), idx, None if alt is None else _split_lines(alt).filter(keep)


def split_fields(lines: pa.Array, sep: str | None, names: list[str]) -> tuple[pa.Table, np.ndarray]:
    """Split lines into len(names) string columns (+ ``line``); returns (raw, wrong_field_count mask)."""
    trimmed = pc.utf8_trim_whitespace(lines)
    parts = pc.split_pattern_regex(trimmed, r"\s+") if sep is None else pc.split_pattern(trimmed, sep)
    nfields = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    wrong = nfields != len(names)
    parts = pc.if_else(pa.array(~wrong), parts, pa.scalar(None, parts.type))
    cols = {n: pc.utf8_trim_whitespace(pc.list_element(parts, i)) for i, n in enumerate(names)}
    cols["line"] = pc.cast(lines, pa.string())
    return pa.table(cols), wrong
