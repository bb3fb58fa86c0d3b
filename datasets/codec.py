"""Binary record codec ("mshard v1" record), no pickle.

Layout of one encoded record (all integers little-endian)::

    byte 0      record version (RECORD_VERSION)
    byte 1      flags: bit 0 = body is zlib-compressed
    bytes 2..5  crc32 (uint32) of bytes 0..1 followed by the stored body
    bytes 6..   body (zlib-compressed when flag bit 0 is set)

The (decompressed) body is::

    uint32      H, length of the JSON header
    H bytes     UTF-8 JSON: {"a": [[name, dtype, shape, offset], ...],
                             "i": {name: int}, "s": {name: str}}
    buffers     raw little-endian array bytes, each starting at an 8-byte aligned offset
                (offsets are relative to the first byte after the header)

The crc covers the bytes actually stored, so a flipped bit anywhere in a value is caught
before decompression or decoding (LMDB itself does not checksum values).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from .schema import ARRAY_FIELDS, INT_FIELDS, STR_FIELDS

RECORD_VERSION = 1
FLAG_ZLIB = 1
_PREFIX = struct.Struct("<BBI")  # version, flags, crc32
_HLEN = struct.Struct("<I")


class RecordError(ValueError):
    """A stored record cannot be decoded (checksum mismatch, bad version, bad header)."""


def encode_record(frame: dict, compress: bool = False, level: int = 1) -> bytes:
    """Encode a normalized frame (see ``schema.normalize_frame``) into bytes."""
    arrays, offset, chunks = [], 0, []
    for name in ARRAY_FIELDS:
        if name not in frame:
            continue
        arr = np.asarray(frame[name])
        # '<' makes the byte order explicit on any host; uint8/bool have no order ('|').
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        pad = (-offset) % 8
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        data = np.ascontiguousarray(arr).tobytes()
        arrays.append([name, arr.dtype.str, list(arr.shape), offset])
        chunks.append(data)
        offset += len(data)
    header = {"a": arrays}
    ints = {k: int(frame[k]) for k in INT_FIELDS if k in frame}
    strs = {k: str(frame[k]) for k in STR_FIELDS if k in frame}
    if ints:
        header["i"] = ints
    if strs:
        header["s"] = strs
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    body = b"".join([_HLEN.pack(len(hbytes)), hbytes, *chunks])
    flags = 0
    if compress:
        body = zlib.compress(body, level)
        flags |= FLAG_ZLIB
    head = bytes((RECORD_VERSION, flags))
    crc = zlib.crc32(body, zlib.crc32(head))
    return _PREFIX.pack(RECORD_VERSION, flags, crc) + body


def check_record(data: bytes) -> None:
    """Raise RecordError if the record's version or crc32 is wrong (cheap, no decode)."""
    if len(data) < _PREFIX.size:
        raise RecordError(f"record too short ({len(data)} bytes)")
    version, flags, crc = _PREFIX.unpack_from(data)
    mv = memoryview(data)
    actual = zlib.crc32(mv[_PREFIX.size:], zlib.crc32(mv[:2]))
    if actual != crc:
        raise RecordError(f"crc32 mismatch (stored {crc:08x}, computed {actual:08x})")
    if version != RECORD_VERSION:
        raise RecordError(f"unsupported record version {version} (this reader: "
                          f"{RECORD_VERSION})")
    if flags & ~FLAG_ZLIB:
        raise RecordError(f"unknown flags {flags:#x}")


def decode_record(data: bytes, verify: bool = True) -> dict:
    """Decode bytes from :func:`encode_record` into a frame dict of numpy values.

    Arrays are writable and share one buffer per record; scalars (energy,
    energy_correction) come back as ``np.float64``; charge/spin as ``int``.
    """
    if verify:
        check_record(data)
    _, flags, _ = _PREFIX.unpack_from(data)
    body = data[_PREFIX.size:]
    if flags & FLAG_ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise RecordError(f"zlib: {exc}") from exc
    buf = bytearray(body)  # one copy; arrays below are writable views into it
    try:
        (hlen,) = _HLEN.unpack_from(buf)
        header = json.loads(buf[4:4 + hlen])
        base = 4 + hlen
        frame: dict = {}
        for name, dtype, shape, off in header["a"]:
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=base + off)
            if not dt.isnative:
                arr = arr.astype(dt.newbyteorder("="))
            frame[name] = arr.reshape(shape)[()] if not shape else arr.reshape(shape)
        frame.update(header.get("i", {}))
        frame.update(header.get("s", {}))
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise RecordError(f"malformed record body: {exc}") from exc
    return frame
