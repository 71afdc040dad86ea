"""The byte layer under TensorFlow checkpoints: CRC-32C, protobuf varints and fields, LevelDB-style
SSTables (the ``.index`` file's container). :mod:`gpt2_common.checkpoint` builds the tensor-bundle
reader and writer on top. numpy and ``google-crc32c`` only (no TensorFlow, no protobuf).

    SSTable:  data blocks | metaindex block | index block | footer (48 bytes)
      block   = entries | restart offsets (uint32 each) | num_restarts (uint32)
                + trailer: compression type (1 byte, 0 = none, 1 = snappy) + masked crc32c (uint32)
                  of block+type byte
      entry   = varint shared_key_len, varint unshared_len, varint value_len, key suffix, value
      index   = block of (key >= last key of data block i) -> BlockHandle (varint offset, varint size)
      footer  = metaindex handle, index handle, zero padding to 40 bytes, magic 0xdb4775248b80fb57

"Masked" crc32c: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32), crc32c = CRC-32C (Castagnoli).
Malformed input raises ``ValueError``; the checkpoint reader adds the file name.
"""
from __future__ import annotations

import os
import struct
from typing import List, Sequence, Tuple, Union

import google_crc32c
import numpy as np

__all__ = ["as_bytes", "build_block", "build_table", "crc32c", "fields", "get_varint", "int64", "mask",
           "read_table", "varint"]

# ----------------------------------------------------------------------------------- CRC-32C
_MASK_DELTA, _MAGIC = 0xA282EAD8, 0xDB4775248B80FB57
_CRC_CHUNK = 1 << 24  # google_crc32c takes only bytes: copy 16 MiB at a time


def as_bytes(data: Union[bytes, bytearray, memoryview, np.ndarray]) -> np.ndarray:
    """``data`` as a flat uint8 array (no copy for contiguous arrays and bytes)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def crc32c(data: Union[bytes, bytearray, memoryview, np.ndarray], crc: int = 0) -> int:
    """CRC-32C of ``data`` (an array counts by its raw bytes), continuing from ``crc``.

    ``google-crc32c`` (a required dependency: hardware CRC-32C, ~10 GB/s) does the work."""
    buf = as_bytes(data)
    for i in range(0, buf.size, _CRC_CHUNK):
        crc = google_crc32c.extend(crc, buf[i:i + _CRC_CHUNK].tobytes())
    return crc


def mask(crc: int) -> int:
    """The masked CRC that LevelDB and TensorFlow store."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------------- protobuf / varints
def varint(n: int) -> bytes:
    """Protobuf varint encoding of ``n`` (negative int64 as 10 bytes)."""
    n &= (1 << 64) - 1  # negative int64 -> 10-byte two's complement, as protobuf does
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def get_varint(buf: bytes, pos: int, what: str) -> Tuple[int, int]:
    """``(value, next position)`` of the varint at ``buf[pos]``; ValueError naming ``what`` if truncated."""
    result, shift = 0, 0
    while pos < len(buf) and shift < 70:
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return result, pos
    raise ValueError(f"truncated varint in {what}")


def fields(buf: bytes, what: str) -> List[Tuple[int, Union[int, bytes]]]:
    """Decode a protobuf message into (field number, int or bytes) pairs."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = get_varint(buf, pos, what)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = get_varint(buf, pos, what)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = get_varint(buf, pos, what)
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in {what}")
        if pos > len(buf):
            raise ValueError(f"truncated {what}")
        out.append((field, value))
    return out


def int64(v: int) -> int:
    """A uint64 varint value read as int64."""
    return v - (1 << 64) if v >= 1 << 63 else v


# ---------------------------------------------------------------------------------- SSTable
def read_table(path: str) -> List[Tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable file, in order; raises ValueError if malformed."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise ValueError("not a checkpoint index (bad SSTable footer/magic number)")

    def block(handle: bytes, what: str) -> bytes:
        off, pos = get_varint(handle, 0, what)
        size, _ = get_varint(handle, pos, what)
        if off + size + 5 > len(data) - 48:
            raise ValueError(f"{what} lies outside the file (truncated index?)")
        raw, kind = data[off:off + size], data[off + size]
        if mask(crc32c(data[off:off + size + 1])) != struct.unpack_from("<I", data, off + size + 1)[0]:
            raise ValueError(f"{what} checksum mismatch (corrupt index)")
        if kind == 1:
            raise ValueError(f"{what} is snappy-compressed, which this reader does not support "
                             "(re-save the checkpoint with TensorFlow's default, uncompressed index)")
        if kind != 0:
            raise ValueError(f"{what} has unknown compression type {kind}")
        return raw

    def entries(blk: bytes, what: str) -> List[Tuple[bytes, bytes]]:
        if len(blk) < 4:
            raise ValueError(f"{what} is too short")
        end = len(blk) - 4 - 4 * struct.unpack_from("<I", blk, len(blk) - 4)[0]
        out, pos, key = [], 0, b""
        while 0 <= pos < end:
            shared, pos = get_varint(blk, pos, what)
            unshared, pos = get_varint(blk, pos, what)
            vlen, pos = get_varint(blk, pos, what)
            if shared > len(key) or pos + unshared + vlen > end:
                raise ValueError(f"{what} has a malformed entry")
            key = key[:shared] + blk[pos:pos + unshared]
            out.append((key, blk[pos + unshared:pos + unshared + vlen]))
            pos += unshared + vlen
        if end < 0:
            raise ValueError(f"{what} has a malformed restart array")
        return out

    footer = data[-48:]
    _, pos = get_varint(footer, 0, "footer")  # skip the metaindex handle (offset, size)
    _, pos = get_varint(footer, pos, "footer")
    result: List[Tuple[bytes, bytes]] = []
    for i, (_, handle) in enumerate(entries(block(footer[pos:], "index block"), "index block")):
        result.extend(entries(block(handle, f"data block {i}"), f"data block {i}"))
    if any(a[0] >= b[0] for a, b in zip(result, result[1:])):
        raise ValueError("keys are not in strictly increasing order")
    return result


def build_block(items: Sequence[Tuple[bytes, bytes]], restart_interval: int) -> bytes:
    """A block plus its trailer (no compression), keys prefix-compressed between restarts."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval:
            shared = len(os.path.commonprefix([prev, key]))
        else:
            restarts.append(len(out))
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts)) + b"\0"
    return bytes(out) + struct.pack("<I", mask(crc32c(out)))


def build_table(items: Sequence[Tuple[bytes, bytes]], block_size: int = 4096) -> bytes:
    """A whole SSTable file holding ``items`` (sorted (key, value) pairs), uncompressed."""
    out, index, pending, pending_size = bytearray(), [], [], 0
    for i, (key, value) in enumerate(items):
        pending.append((key, value))
        pending_size += len(key) + len(value) + 8
        if pending_size >= block_size or i == len(items) - 1:
            blk = build_block(pending, 16)
            index.append((key, varint(len(out)) + varint(len(blk) - 5)))
            out += blk
            pending, pending_size = [], 0
    handles = b""
    for blk in (build_block([], 1), build_block(index, 1)):  # metaindex (empty), index
        handles += varint(len(out)) + varint(len(blk) - 5)
        out += blk
    return bytes(out) + handles.ljust(40, b"\0") + struct.pack("<Q", _MAGIC)
