"""Zarr v3 ``sharding_indexed`` shards, encoded and decoded from an array's own metadata.

One shard is one object: its inner chunks, each passed through the array's
chunk codecs (bytes, Blosc or Zstd, CRC32C), plus an index of
``(offset, nbytes)`` uint64 pairs in C order of the chunks, at the start or end
of the object, with its own CRC32C. Empty chunks (all fill value) are left out
and marked ``2**64 - 1`` in the index, unless the shard is written dense: every
chunk, fill too, raw bytes + CRC32C in C order after the index, each preceded by
an 8-byte tag ``TRfo`` + its number (uint32 LE), up to the last chunk that is
not all fill (the index marks the rest empty), so that chunk ``n`` with its
tag lies at ``index_nbytes + n * (8 + chunk_nbytes)`` (the array's
``tessera_ray:fixed_offsets`` attribute says so). The tags are bytes the index
does not point to, which Zarr sharding allows and other readers skip; they let
a reader that skips the index check that the CRC-valid chunk it got is the one
it asked for (zarr-python, for one, writes shards in Morton order, and a sparse
writer shifts every later chunk by whole chunks). A mostly empty shard is
written sparse even then (at most ``DENSE_MAX_OVERHEAD`` times its data);
readers find its chunks through the index, after one failed tag check.

The writer encodes whole shards here rather than through zarr-python: zarr
3.1 spends ~10x blosc's time on per-chunk overhead (11 MB/s against ~500 MB/s
measured on a 4096/32 shard). Tests read every shard back with zarr itself.
The client decodes with the same class, reading only the bytes it needs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tessera_ray.errors import DataError

EMPTY = np.uint64(2**64 - 1)
TAG_NBYTES = 8
DENSE_MAX_OVERHEAD = 1.5  # a dense shard stores at most this many chunks per chunk holding data
_TAG_MAGIC = b"TRfo"


def chunk_tag(n: int) -> bytes:
    """The tag before chunk ``n`` of a dense fixed-offset shard."""
    return _TAG_MAGIC + int(n).to_bytes(4, "little")
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def crc32c(data: bytes | bytearray | memoryview) -> int:
    import google_crc32c  # zarr's own Crc32cCodec uses it, so it is always installed

    return int(google_crc32c.value(bytes(data)))


@dataclass(frozen=True)
class ShardedArray:
    """One sharded Zarr array as its metadata describes it."""

    key: str  # e.g. tessera.zarr/utm31/embeddings
    shape: tuple[int, ...]
    shard_shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: float
    codecs: tuple[dict[str, Any], ...]  # inner chunk codecs, as in zarr.json
    index_codecs: tuple[dict[str, Any], ...]
    index_at_start: bool
    fixed_offsets: bool = False  # declared by the writer and possible with these codecs

    @classmethod
    def from_metadata(cls, key: str, meta: dict[str, Any]) -> ShardedArray:
        """The array described by its ``zarr.json`` object; metadata of another shape is a DataError."""
        try:
            array = cls._from_metadata(key, meta)
        except DataError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DataError(f"{key}: malformed array metadata ({detail})") from None
        dims = {len(array.shape), len(array.shard_shape), len(array.chunk_shape)}
        sizes = (*array.shape, *array.shard_shape, *array.chunk_shape)
        if len(dims) != 1 or not all(isinstance(v, int) and v > 0 for v in sizes):
            raise DataError(f"{key}: malformed array metadata (shape {array.shape}, shards {array.shard_shape}, "
                            f"chunks {array.chunk_shape})")
        if any(s % c for s, c in zip(array.shard_shape, array.chunk_shape)):
            raise DataError(f"{key}: shards {array.shard_shape} are not made of whole chunks {array.chunk_shape}")
        return array

    @classmethod
    def _from_metadata(cls, key: str, meta: dict[str, Any]) -> ShardedArray:
        codecs = meta["codecs"]
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            raise DataError(f"{key} is not a sharded array")
        conf = codecs[0]["configuration"]
        fill = meta["fill_value"]
        fill = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}.get(fill, fill)
        raw = [c["name"] for c in conf["codecs"]] == ["bytes", "crc32c"]
        declared = bool((meta.get("attributes") or {}).get("tessera_ray:fixed_offsets", False))
        return cls(
            key=key,
            shape=tuple(meta["shape"]),
            shard_shape=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            chunk_shape=tuple(conf["chunk_shape"]),
            dtype=np.dtype(meta["data_type"]),
            fill_value=float(fill),
            codecs=tuple(conf["codecs"]),
            index_codecs=tuple(conf.get("index_codecs", ())),
            index_at_start=conf.get("index_location", "end") == "start",
            fixed_offsets=declared and raw and conf.get("index_location", "end") == "start",
        )

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))

    @property
    def n_chunks(self) -> int:
        return int(np.prod(self.chunks_per_shard))

    @property
    def index_nbytes(self) -> int:
        return self.n_chunks * 16 + 4 * sum(1 for c in self.index_codecs if c["name"] == "crc32c")

    @property
    def fixed_stride(self) -> int:
        """Bytes per chunk in a dense fixed-offset shard: tag + raw chunk + CRC32C."""
        return TAG_NBYTES + int(np.prod(self.chunk_shape)) * self.dtype.itemsize + 4

    def fixed_offset(self, n: int) -> int:
        """Byte offset of chunk ``n``'s tag in a dense fixed-offset shard (index at the start)."""
        return self.index_nbytes + n * self.fixed_stride

    def shard_key(self, shard_coords: Sequence[int]) -> str:
        return f"{self.key}/c/" + "/".join(str(int(i)) for i in shard_coords)

    # ------------------------------------------------------------------ decode

    def decode_index(self, data: bytes, shard: str) -> np.ndarray:
        """A whole index: (n_chunks, 2) uint64, its CRC32C checked."""
        if len(data) != self.index_nbytes:
            raise DataError(f"shard {shard}: index is {len(data)} bytes, expected {self.index_nbytes}")
        return self.decode_index_entries(_strip_crc(data, self.index_codecs, f"shard {shard} index"))

    def decode_index_entries(self, data: bytes) -> np.ndarray:
        """Consecutive index entries without the CRC (a partial read)."""
        return np.frombuffer(data, dtype=f"{_bytes_endian(self.index_codecs)}u8").reshape(-1, 2)

    def decode_chunk(self, data: bytes, where: str) -> np.ndarray:
        body = data
        for codec in reversed(self.codecs):
            name = codec["name"]
            if name == "crc32c":
                body = _strip_crc(body, (codec,), where)
            elif name in ("blosc", "zstd", "gzip"):
                import numcodecs

                decoder = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd, "gzip": numcodecs.GZip}[name]()
                body = _decode_with(decoder, body, where)
            elif name == "bytes":
                arr = np.frombuffer(body, dtype=self.dtype.newbyteorder(_bytes_endian((codec,))))
                if arr.size != int(np.prod(self.chunk_shape)):
                    raise DataError(f"{where}: decoded {arr.size} values, expected {int(np.prod(self.chunk_shape))}")
                return arr.reshape(self.chunk_shape).astype(self.dtype, copy=False)
            else:
                raise DataError(f"{where}: codec {name!r} is not supported by this reader")
        raise DataError(f"{where}: no bytes codec")

    # ------------------------------------------------------------------ encode

    def encode_chunk(self, chunk: np.ndarray) -> bytes:
        data: Any = None  # the array, then each codec's output
        for codec in self.codecs:
            name, conf = codec["name"], codec.get("configuration") or {}
            if name == "bytes":
                data = np.ascontiguousarray(chunk, dtype=self.dtype.newbyteorder(_bytes_endian((codec,))))
            elif name == "blosc":
                import numcodecs

                blosc = numcodecs.Blosc(conf["cname"], int(conf["clevel"]), _SHUFFLE[conf["shuffle"]],
                                        int(conf.get("blocksize", 0)))
                data = blosc.encode(data)  # typesize from the array's itemsize, as zarr writes it
            elif name == "zstd":
                import numcodecs

                data = numcodecs.Zstd(int(conf.get("level", 0))).encode(data)
            elif name == "crc32c":
                body = bytes(data)
                data = body + crc32c(body).to_bytes(4, "little")
            else:
                raise ValueError(f"codec {name!r} is not supported by this writer")
        return data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))

    def _is_fill(self, chunk: np.ndarray) -> bool:
        if math.isnan(self.fill_value):
            return bool(np.isnan(chunk).all())
        return bool((chunk == self.fill_value).all())

    def encode_shard(self, block: np.ndarray, origin: Sequence[int], threads: int = 4, dense: bool = False,
                     keep: Sequence[int] = ()) -> bytes | None:
        """The bytes of a shard holding ``block`` at ``origin`` (fill elsewhere); None if all fill.

        ``keep`` lists chunk numbers (in C order of the shard) stored even when all fill.

        ``dense`` writes every chunk up to the last one holding data, fill ones
        too, tagged, in C order (fixed offsets; only with the index at the
        start and raw chunks of one size), as long as that stores at most
        ``DENSE_MAX_OVERHEAD`` times the chunks holding data; a mostly empty
        shard (the edge of a region, the coast) is written sparse instead.
        """
        cs, cps = self.chunk_shape, self.chunks_per_shard
        lo = [o // c for o, c in zip(origin, cs)]
        hi = [(o + n - 1) // c for o, n, c in zip(origin, block.shape, cs)]
        chunks: dict[int, np.ndarray] = {}
        kept = set(keep)
        for idx in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi))):
            start = [i * c for i, c in zip(idx, cs)]
            inner = tuple(slice(max(o - s, 0), min(o + n - s, c)) for o, n, s, c in zip(origin, block.shape, start, cs))
            outer = tuple(slice(s + sl.start - o, s + sl.stop - o) for s, sl, o in zip(start, inner, origin))
            if all(sl.stop - sl.start == c for sl, c in zip(inner, cs)):
                chunk = block[outer]
            else:
                chunk = np.full(cs, self.fill_value, self.dtype)
                chunk[inner] = block[outer]
            n = int(np.ravel_multi_index(idx, cps))
            if n in kept or not self._is_fill(chunk):
                chunks[n] = chunk
        if not chunks:
            return None
        # dense up to the last chunk holding data (a reader past the end asks the index: all fill),
        # unless the fill chunks before it would cost more than DENSE_MAX_OVERHEAD: then sparse, read via the index
        dense = dense and max(chunks) + 1 <= DENSE_MAX_OVERHEAD * len(chunks)
        if dense:
            fill = self.encode_chunk(np.full(cs, self.fill_value, self.dtype))
            numbers = list(range(max(chunks) + 1))
        else:
            numbers = sorted(chunks)
        with ThreadPoolExecutor(threads) as pool:  # blosc releases the GIL
            encoded = list(pool.map(lambda n: self.encode_chunk(chunks[n]) if n in chunks else fill, numbers))
        index = np.full((self.n_chunks, 2), EMPTY, "uint64")
        offset = self.index_nbytes if self.index_at_start else 0
        if dense:
            encoded = [piece for n, data in zip(numbers, encoded) for piece in (chunk_tag(n), data)]
        for n, data in zip(numbers, encoded[1::2] if dense else encoded):
            offset += TAG_NBYTES if dense else 0
            index[n] = (offset, len(data))
            offset += len(data)
        index_bytes = index.astype(f"{_bytes_endian(self.index_codecs)}u8").tobytes()
        if any(c["name"] == "crc32c" for c in self.index_codecs):
            index_bytes += crc32c(index_bytes).to_bytes(4, "little")
        body = b"".join(encoded)
        return index_bytes + body if self.index_at_start else body + index_bytes


def _bytes_endian(codecs: Sequence[dict[str, Any]]) -> Literal["<", ">"]:
    for c in codecs:
        if c["name"] == "bytes":
            return "<" if (c.get("configuration") or {}).get("endian", "little") == "little" else ">"
    return "<"


def _strip_crc(data: bytes, codecs: Sequence[dict[str, Any]], where: str) -> bytes:
    if not any(c["name"] == "crc32c" for c in codecs):
        return data
    body, stored = data[:-4], int.from_bytes(data[-4:], "little")
    if crc32c(body) != stored:
        raise DataError(f"{where} failed its CRC32C checksum: the object is corrupt")
    return body


def _decode_with(codec: Any, body: bytes, where: str) -> bytes:
    """``codec``: a numcodecs codec (numcodecs has no type information, so it is ``Any`` to mypy)."""
    try:
        return bytes(codec.decode(body))
    except Exception as exc:  # noqa: BLE001 - a decoder failure means corrupt bytes
        raise DataError(f"{where} cannot be decoded ({type(exc).__name__}): the object is corrupt") from None
