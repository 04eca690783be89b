"""The Parquet footer at the Thrift level: enough to append row groups to a file without rewriting it.

A Parquet file ends with its ``FileMetaData`` (Thrift compact protocol), the
footer's length (4 bytes, little-endian) and ``PAR1``. Appending row groups
means: keep the bytes before the footer, add the new row groups' pages, and
write a footer that lists the old row groups as they were plus the new ones
with their page offsets moved to where they now sit. pyarrow cannot do this
(its writer counts offsets from 0 and has no append mode), so this module
edits the footer itself.

Why a codec of our own (about 150 lines) rather than a library: the only
well-kept Python Parquet library with the Thrift classes, fastparquet, is a
second Parquet engine with compiled code, pulled in to edit a dozen integers;
the ``thrift`` package needs the generated classes of parquet.thrift, which
we would have to generate and keep in step with the format. This codec is
generic instead: it decodes any compact-protocol struct into field lists,
keeps unknown fields as they are, and encodes them back byte for byte
(``tests/test_manifest_append.py`` round-trips real manifests), so a field
a newer writer adds (size statistics, geospatial statistics) passes through.
The old row groups are not decoded at all: they are skipped as byte ranges
and copied, so appending to a 100,000-unit footer does not build its ~15,000
column-chunk structs in Python.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from tessera_ray.errors import DataError

MAGIC = b"PAR1"

Field = list[Any]
"""One struct field, ``[field_id, compact type, value]``: a list, so an edit changes it in place."""
Fields = list[Field]
"""A struct's fields in file order; a value is an int, bytes, a bool, a struct's :data:`Fields`, a list as
``(element type, items)``, a map as ``(key type, value type, [(k, v), ...])`` or :class:`Raw` bytes
(thrift's values are typed by the ids in the data, so their Python type is ``Any`` here)."""

# compact-protocol type ids
BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)

# FileMetaData, RowGroup, ColumnChunk and ColumnMetaData field ids (parquet.thrift)
FMD_NUM_ROWS, FMD_ROW_GROUPS, FMD_KEY_VALUE = 3, 4, 5
RG_COLUMNS, RG_NUM_ROWS, RG_FILE_OFFSET, RG_ORDINAL = 1, 3, 5, 7
CC_FILE_OFFSET, CC_META_DATA, CC_OFFSET_INDEX_OFFSET, CC_COLUMN_INDEX_OFFSET = 2, 3, 4, 6
CMD_OFFSETS = (9, 10, 11, 14)  # data_page_offset, index_page_offset, dictionary_page_offset, bloom_filter_offset


class Raw(bytes):
    """A value kept as its encoded bytes (an old row group): written back as it is."""


@dataclass(frozen=True)
class Footer:
    """Where a Parquet file's footer is and what it holds."""

    start: int
    """Offset of the footer: the file's pages and indexes are the bytes before it."""
    fields: Fields
    """The FileMetaData fields, ``[field_id, type, value]``, in file order; row groups as :class:`Raw`."""

    def get(self, fid: int) -> Any:
        return next((f[2] for f in self.fields if f[0] == fid), None)

    def set(self, fid: int, value: Any) -> None:
        next(f for f in self.fields if f[0] == fid)[2] = value


_SEEN: dict[bytes, Fields] = {}
"""The last footers this process wrote or split, by their bytes: the driver appends to the manifest it
wrote at its previous publish, so the next split finds it here instead of walking ~800 row groups
(0.14 s at 100,000 units; a dictionary lookup hashes the footer's bytes in about a millisecond)."""
_SEEN_MAX = 4


def split(data: bytes | memoryview, where: str = "manifest") -> Footer:
    """The footer of a whole Parquet file's bytes (its row groups left encoded); the caller may edit it."""
    n = len(data)
    if n < 12 or bytes(data[:4]) != MAGIC or bytes(data[-4:]) != MAGIC:
        raise DataError(f"{where} is not a Parquet file")
    length = struct.unpack("<I", bytes(data[-8:-4]))[0]
    start = n - 8 - length
    if start < 4:
        raise DataError(f"{where} has a footer longer than the file")
    body = bytes(data[start:n - 8])
    fields = _SEEN.get(body)
    if fields is None:
        fields, end = _struct(body, 0, lazy=(FMD_ROW_GROUPS,))
        if end != length:
            raise DataError(f"{where} has {length - end} bytes after its footer's end")
        _remember(body, fields)
    return Footer(start, _copy(fields))


def footer_bytes(fields: Fields) -> bytes:
    """A FileMetaData's encoding, with the length and magic that end the file."""
    out = bytearray()
    _write_struct(out, fields)
    body = bytes(out)
    _remember(body, _copy(fields))
    return body + struct.pack("<I", len(out)) + MAGIC


def _remember(body: bytes, fields: Fields) -> None:
    while len(_SEEN) >= _SEEN_MAX:
        _SEEN.pop(next(iter(_SEEN)))
    _SEEN[body] = fields


def _copy(value: Any) -> Any:
    """Lists and tuples copied, down to the values (bytes and numbers are immutable): the cache stays intact."""
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


def decode(data: bytes) -> Fields:
    """A whole compact-protocol struct (a row group's bytes, say) as field lists."""
    fields, end = _struct(bytes(data), 0)
    if end != len(data):
        raise DataError("thrift struct has trailing bytes")
    return fields


def encode(fields: Fields) -> bytes:
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


def shift_row_group(fields: Fields, delta: int, ordinal: int | None) -> None:
    """Move a decoded row group's every page offset by ``delta`` bytes (and renumber it), in place."""
    for f in fields:
        if f[0] == RG_FILE_OFFSET:
            f[2] += delta
        elif f[0] == RG_ORDINAL and ordinal is not None:
            f[2] = ordinal
        elif f[0] == RG_COLUMNS:
            for chunk in f[2][1]:
                for c in chunk:
                    if c[0] in (CC_FILE_OFFSET, CC_OFFSET_INDEX_OFFSET, CC_COLUMN_INDEX_OFFSET):
                        c[2] += delta
                    elif c[0] == CC_META_DATA:
                        for m in c[2]:
                            if m[0] in CMD_OFFSETS:
                                m[2] += delta


# --------------------------------------------------------------------------- decoding


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: bytes, pos: int, ctype: int) -> tuple[Any, int]:
    if ctype in (I16, I32, I64):
        n, pos = _varint(buf, pos)
        return _zigzag(n), pos
    if ctype == BINARY:
        n, pos = _varint(buf, pos)
        return buf[pos:pos + n], pos + n
    if ctype == STRUCT:
        return _struct(buf, pos)
    if ctype in (LIST, SET):
        return _list(buf, pos)
    if ctype == BYTE or ctype in (BOOL_TRUE, BOOL_FALSE):  # a bool inside a list is one byte
        return buf[pos], pos + 1
    if ctype == DOUBLE:
        return buf[pos:pos + 8], pos + 8
    if ctype == MAP:
        n, pos = _varint(buf, pos)
        if n == 0:
            return (0, 0, []), pos
        kinds = buf[pos]
        pos += 1
        kt, vt, items = kinds >> 4, kinds & 0x0F, []
        for _ in range(n):
            k, pos = _value(buf, pos, kt)
            v, pos = _value(buf, pos, vt)
            items.append((k, v))
        return (kt, vt, items), pos
    raise DataError(f"thrift: unknown type {ctype}")


def _list(buf: bytes, pos: int, lazy: bool = False) -> tuple[tuple[int, list[Any]], int]:
    head = buf[pos]
    pos += 1
    etype, n = head & 0x0F, head >> 4
    if n == 15:
        n, pos = _varint(buf, pos)
    items: list[Any] = []
    for _ in range(n):
        start = pos
        if lazy:
            pos = _skip(buf, pos, etype)
            items.append(Raw(buf[start:pos]))
        else:
            v, pos = _value(buf, pos, etype)
            items.append(v)
    return (etype, items), pos


def _struct(buf: bytes, pos: int, lazy: tuple[int, ...] = ()) -> tuple[Fields, int]:
    fields: Fields = []
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        ctype, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            n, pos = _varint(buf, pos)
            fid = _zigzag(n)
        last = fid
        if ctype in (BOOL_TRUE, BOOL_FALSE):
            value: Any = ctype == BOOL_TRUE
        elif fid in lazy and ctype == LIST:
            value, pos = _list(buf, pos, lazy=True)
        else:
            value, pos = _value(buf, pos, ctype)
        fields.append([fid, ctype, value])


def _skip(buf: bytes, pos: int, ctype: int) -> int:
    """The position after a value, without building it (old row groups: thousands of structs)."""
    if ctype == STRUCT:
        while True:
            head = buf[pos]
            pos += 1
            if head == 0:
                return pos
            t = head & 0x0F
            if not head >> 4:
                while buf[pos] & 0x80:
                    pos += 1
                pos += 1
            if t in (I16, I32, I64):
                while buf[pos] & 0x80:
                    pos += 1
                pos += 1
            elif t == BINARY:
                n, pos = _varint(buf, pos)
                pos += n
            elif t not in (BOOL_TRUE, BOOL_FALSE):
                pos = _skip(buf, pos, t)
    if ctype in (I16, I32, I64):
        while buf[pos] & 0x80:
            pos += 1
        return pos + 1
    if ctype == BINARY:
        n, pos = _varint(buf, pos)
        return pos + n
    if ctype in (LIST, SET):
        head = buf[pos]
        pos += 1
        etype, n = head & 0x0F, head >> 4
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos = _skip(buf, pos, etype)
        return pos
    end: int = _value(buf, pos, ctype)[1]
    return end


# --------------------------------------------------------------------------- encoding


def _write_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_value(out: bytearray, ctype: int, value: Any) -> None:
    if isinstance(value, Raw):
        out += value
    elif ctype in (I16, I32, I64):
        _write_varint(out, (value << 1) ^ (value >> 63))
    elif ctype == BINARY:
        _write_varint(out, len(value))
        out += value
    elif ctype == STRUCT:
        _write_struct(out, value)
    elif ctype in (LIST, SET):
        etype, items = value
        if len(items) < 15:
            out.append((len(items) << 4) | etype)
        else:
            out.append(0xF0 | etype)
            _write_varint(out, len(items))
        for item in items:
            _write_value(out, etype, item)
    elif ctype in (BYTE, BOOL_TRUE, BOOL_FALSE):
        out.append(value & 0xFF)
    elif ctype == DOUBLE:
        out += value
    elif ctype == MAP:
        kt, vt, items = value
        _write_varint(out, len(items))
        if items:
            out.append((kt << 4) | vt)
            for k, v in items:
                _write_value(out, kt, k)
                _write_value(out, vt, v)
    else:
        raise DataError(f"thrift: unknown type {ctype}")


def _write_struct(out: bytearray, fields: Fields) -> None:
    last = 0
    for fid, ctype, value in fields:
        if ctype in (BOOL_TRUE, BOOL_FALSE):
            ctype = BOOL_TRUE if value else BOOL_FALSE
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | ctype)
        else:
            out.append(ctype)
            _write_varint(out, (fid << 1) ^ (fid >> 63))
        last = fid
        if ctype not in (BOOL_TRUE, BOOL_FALSE):
            _write_value(out, ctype, value)
    out.append(0)
