"""Read and write TensorFlow V2 checkpoints ("tensor bundles") with numpy and the standard library.

No TensorFlow and no protobuf: the PyTorch backend loads OpenAI's original GPT-2 checkpoints
through this module. The few protobuf messages involved are decoded/encoded by hand.

Format, for prefix P (e.g. ``models/124M/model.ckpt``)::

    P.index                     LevelDB-style SSTable, keys sorted bytewise:
                                  ""     -> BundleHeaderProto {1 num_shards, 2 endianness (0 little),
                                                              3 version {1 producer, 2 min_consumer}}
                                  <name> -> BundleEntryProto {1 dtype, 2 shape {2 dim {1 size}},
                                            3 shard_id, 4 offset, 5 size, 6 crc32c (fixed32), 7 slices}
    P.data-0000S-of-0000N       raw little-endian tensor bytes at [offset, offset+size) of shard S;
                                strings: varint64 lengths, masked crc32c of the lengths, the bytes.

The SSTable container, varints and CRC-32C are :mod:`gpt2_common.sstable`'s job.
"""
from __future__ import annotations

import math
import os
import re
import struct
import tempfile
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from .safeio import file_mode
from .sstable import (as_bytes, build_table, crc32c, fields, get_varint, int64, mask, read_table,
                      varint)

__all__ = ["CheckpointError", "crc32c", "list_variables", "read_checkpoint",
           "resolve_checkpoint_prefix", "write_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or corrupt (one-line message naming the file)."""


# ------------------------------------------------------------------------- BundleEntryProto
class _Entry(NamedTuple):
    dtype: int
    shape: Tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc: int
    sliced: bool


def _parse_entry(buf: bytes, what: str) -> _Entry:
    """Decode a BundleEntryProto; an unknown dimension or rank shows up as -1 in the shape."""
    f: Dict[int, Union[int, bytes]] = {1: 0, 3: 0, 4: 0, 5: 0, 6: 0, 2: b""}
    sliced = False
    for field, value in fields(buf, what):
        sliced |= field == 7
        if field in f:
            if isinstance(value, bytes) != (field == 2):
                raise ValueError(f"malformed {what}")
            f[field] = value
    shape = []
    for field, dim in fields(f[2], what):
        if field == 3 and dim:  # unknown_rank
            shape.append(-1)
        elif field == 2:
            size = dict(fields(dim, what)).get(1, 0) if isinstance(dim, bytes) else -1
            shape.append(int64(size) if isinstance(size, int) else -1)
    return _Entry(f[1], tuple(shape), f[3], int64(f[4]), int64(f[5]), f[6], sliced)


def _encode_entry(e: _Entry) -> bytes:
    dims = b"".join(b"\x12" + varint(len(d)) + d for d in
                    ((b"\x08" + varint(s)) if s else b"" for s in e.shape))
    out = b"\x08" + varint(e.dtype) + b"\x12" + varint(len(dims)) + dims
    if e.shard_id:
        out += b"\x18" + varint(e.shard_id)
    if e.offset:
        out += b"\x20" + varint(e.offset)
    if e.size:
        out += b"\x28" + varint(e.size)
    return out + b"\x35" + struct.pack("<I", e.crc)


# ----------------------------------------------------------------------------------- dtypes
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8",
           10: "?", 17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4", 23: "<u8"}
_DT_STRING, _DT_BFLOAT16 = 7, 14
_DT_NAMES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
             16: "quint16", 20: "resource", 21: "variant"}
_NP_TO_DT = {np.dtype(v).str[1:]: k for k, v in _DTYPES.items()}


def _np_dtype(dt: int, where: str) -> np.dtype:
    if dt in _DTYPES:
        return np.dtype(_DTYPES[dt])
    if dt == _DT_BFLOAT16:
        try:
            import ml_dtypes
        except ImportError:
            raise CheckpointError(f"{where}: dtype bfloat16 needs the 'ml_dtypes' package "
                                  "(pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    raise CheckpointError(f"{where}: unsupported dtype {_DT_NAMES.get(dt, 'DataType')} ({dt})")


def _tf_dtype(a: np.ndarray, where: str) -> int:
    if a.dtype.kind in "SUO":
        return _DT_STRING
    if a.dtype.name == "bfloat16":
        return _DT_BFLOAT16
    if a.dtype.str[1:] not in _NP_TO_DT:
        raise CheckpointError(f"{where}: cannot store numpy dtype {a.dtype} in a checkpoint")
    return _NP_TO_DT[a.dtype.str[1:]]

# ------------------------------------------------------------------------------- public API
def resolve_checkpoint_prefix(path: PathLike) -> str:
    """The checkpoint prefix for ``path``: a model directory or a prefix like ``dir/model.ckpt``.

    A directory is resolved through its ``checkpoint`` file (``model_checkpoint_path: "..."``,
    relative to the directory), else ``model.ckpt`` when ``model.ckpt.index`` exists.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        prefix = path[:-len(".index")] if path.endswith(".index") else path
        if os.path.isfile(prefix + ".index"):
            return prefix
        raise CheckpointError(f"{path}: no checkpoint here: expected {prefix}.index "
                              "(or a model directory with a 'checkpoint' file)")
    state = os.path.join(path, "checkpoint")
    if not os.path.isfile(state):
        if os.path.isfile(os.path.join(path, "model.ckpt.index")):
            return os.path.join(path, "model.ckpt")
        raise CheckpointError(f"{path}: no checkpoint in this directory: expected a 'checkpoint' "
                              "file or model.ckpt.index")
    with open(state, encoding="utf-8", errors="replace") as f:
        m = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', f.read(), re.M)
    if not m:
        raise CheckpointError(f"{state}: no 'model_checkpoint_path: \"...\"' line")
    named = re.sub(r"\\(.)", r"\1", m.group(1))
    for prefix in (os.path.join(path, named), os.path.join(path, os.path.basename(named))):
        if os.path.isfile(prefix + ".index"):
            return prefix
    raise CheckpointError(f"{state}: points to checkpoint '{named}', but "
                          f"{os.path.join(path, named)}.index does not exist")


def _read_index(prefix: str) -> Tuple[int, Dict[str, _Entry]]:
    """(num_shards, name -> entry) from ``<prefix>.index``."""
    index = prefix + ".index"
    if not os.path.isfile(index):
        raise CheckpointError(f"{index}: checkpoint index file not found")
    try:
        items = read_table(index)
        if not items or items[0][0] != b"":
            raise ValueError("no header entry")
        header = dict(fields(items[0][1], "header"))
        version = dict(fields(header.get(3, b""), "header version"))
        entries = {k.decode("utf-8", "surrogateescape"): _parse_entry(v, f"entry {k!r}")
                   for k, v in items[1:]}
    except ValueError as e:
        raise CheckpointError(f"{index}: {e}") from None
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{index}: big-endian checkpoints are not supported")
    if version.get(2, 0) > 1:
        raise CheckpointError(f"{index}: needs a newer reader (bundle min_consumer "
                              f"{version.get(2)} > 1)")
    return max(header.get(1, 1), 1), entries


def list_variables(path: PathLike) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every variable in the checkpoint at ``path``, sorted by name."""
    _, entries = _read_index(resolve_checkpoint_prefix(path))
    return {name: entries[name].shape for name in sorted(entries)}


def _read_string_tensor(f, e: _Entry, where: str) -> Tuple[np.ndarray, int]:
    """Decode a DT_STRING tensor: varint64 lengths, masked crc32c of the lengths, the bytes."""
    f.seek(e.offset)
    buf = f.read(e.size)
    count, pos, lengths = math.prod(e.shape), 0, []
    if count > len(buf):  # each string's length takes at least one byte
        raise CheckpointError(f"{where}: shape {e.shape} needs more than its {e.size} bytes")
    try:
        for _ in range(count):
            n, pos = get_varint(buf, pos, "string lengths")
            lengths.append(n)
    except ValueError:
        raise CheckpointError(f"{where}: string tensor data is truncated") from None
    # TF checksums each length as a little-endian uint32 (uint64 if it does not fit)
    crc = crc32c(b"".join(struct.pack("<I" if n < 1 << 32 else "<Q", n) for n in lengths))
    if pos + 4 + sum(lengths) != e.size:
        raise CheckpointError(f"{where}: string tensor needs {pos + 4 + sum(lengths)} bytes, "
                              f"its entry says {e.size}")
    if mask(crc) != struct.unpack_from("<I", buf, pos)[0]:
        raise CheckpointError(f"{where}: string length checksum mismatch (corrupt data)")
    crc, pos = crc32c(buf[pos:pos + 4], crc), pos + 4
    strings = np.empty(count, dtype=object)
    for i, n in enumerate(lengths):
        strings[i], pos = buf[pos:pos + n], pos + n
    return strings.reshape(e.shape), crc32c(buf[pos - sum(lengths):pos], crc)


ALIGNMENT = 64  # bytes: TensorFlow's (Eigen's) alignment, so its tensors can share numpy's memory


def aligned_empty(count: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``count`` ``dtype`` items starting at an ALIGNMENT boundary."""
    nbytes = count * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -buf.ctypes.data % ALIGNMENT
    return buf[start:start + nbytes].view(dtype)


def read_checkpoint(path: PathLike, names: Optional[Iterable[str]] = None,
                    verify: bool = True) -> Dict[str, np.ndarray]:
    """Read variables from the checkpoint at ``path`` (model directory or prefix).

    Returns name -> writable numpy array of the stored dtype (strings as object arrays of bytes),
    all variables sorted by name, or just ``names`` in the given order. ``verify`` checks each
    tensor's crc32c. Every problem raises :class:`CheckpointError`.
    """
    prefix = resolve_checkpoint_prefix(path)
    num_shards, entries = _read_index(prefix)
    wanted = sorted(entries) if names is None else [names] if isinstance(names, str) else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise CheckpointError(f"{prefix}.index: variable {missing[0]!r} not in checkpoint "
                              f"({len(missing)} missing of {len(wanted)} requested; "
                              f"it has {len(entries)} variables)")
    out: Dict[str, np.ndarray] = {}
    files: Dict[int, Tuple[str, int, object]] = {}
    try:  # read in file order, one open file per shard
        for name in sorted(wanted, key=lambda n: (entries[n].shard_id, entries[n].offset)):
            e = entries[name]
            if e.sliced:
                raise CheckpointError(f"{prefix}.index: variable {name!r} is partitioned into "
                                      "slices, which is not supported")
            if e.shard_id >= num_shards or min(e.shape, default=0) < 0 or e.offset < 0:
                raise CheckpointError(f"{prefix}.index: invalid entry for {name!r} (shard "
                                      f"{e.shard_id} of {num_shards}, shape {e.shape})")
            if e.shard_id not in files:
                data = f"{prefix}.data-{e.shard_id:05d}-of-{num_shards:05d}"
                if not os.path.isfile(data):
                    raise CheckpointError(f"{data}: checkpoint data file not found")
                files[e.shard_id] = (data, os.path.getsize(data), open(data, "rb"))
            data, data_size, f = files[e.shard_id]
            where = f"{data}: variable {name!r}"
            if e.offset + e.size > data_size:
                raise CheckpointError(f"{where} needs bytes [{e.offset}, {e.offset + e.size}) but "
                                      f"the file has only {data_size} (truncated)")
            if e.dtype == _DT_STRING:
                array, crc = _read_string_tensor(f, e, where)
            else:
                dtype = _np_dtype(e.dtype, where)
                count = math.prod(e.shape)  # Python ints: no int64 wrap-around
                if e.size != count * dtype.itemsize:
                    raise CheckpointError(f"{where} has {e.size} bytes, but shape {e.shape} of "
                                          f"{dtype.name} needs {count * dtype.itemsize}")
                f.seek(e.offset)
                array = aligned_empty(count, dtype)  # TF can then take the memory without a copy
                if f.readinto(array.view(np.uint8)) != e.size:
                    raise CheckpointError(f"{where}: short read (truncated file)")
                crc = crc32c(array) if verify else 0
                array = array.reshape(e.shape)
            if verify and mask(crc) != e.crc:
                raise CheckpointError(f"{where}: crc32c mismatch (stored {e.crc:#010x}, data gives "
                                      f"{mask(crc):#010x}); the data file is corrupt")
            out[name] = array
    finally:
        for _, _, f in files.values():
            f.close()
    return {name: out[name] for name in wanted}


def _string_tensor_bytes(a: np.ndarray) -> Tuple[bytes, int]:
    """Serialise a string array the way TF does; returns (bytes, unmasked crc32c)."""
    items = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in a.ravel().tolist()]
    crc = crc32c(b"".join(struct.pack("<I" if len(x) < 1 << 32 else "<Q", len(x)) for x in items))
    checksum = struct.pack("<I", mask(crc))
    body = b"".join(items)
    raw = b"".join(varint(len(x)) for x in items) + checksum + body
    return raw, crc32c(body, crc32c(checksum, crc))


def write_checkpoint(directory: PathLike, tensors: Mapping[str, np.ndarray],
                     prefix: str = "model.ckpt") -> str:
    """Write ``tensors`` as a single-shard TF checkpoint ``<directory>/<prefix>`` and point the
    directory's ``checkpoint`` file at it; returns the prefix path.

    Files are written under temporary names and renamed when complete (data, then index, then
    ``checkpoint``), so a crash never leaves a half-written file under a final name.
    """
    directory = os.fspath(directory)
    final = os.path.join(directory, prefix)
    parent = os.path.dirname(final) or "."
    if any(not isinstance(n, str) or not n for n in tensors):
        raise CheckpointError(f"{final}: variable names must be non-empty strings")
    names = sorted(tensors, key=lambda n: n.encode("utf-8", "surrogateescape"))  # SSTable order
    os.makedirs(parent, exist_ok=True)
    temps: List[str] = []

    def temp_file(kind: str):
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(final)}.{kind}.",
                                    suffix=".tmp")
        temps.append(name)
        return os.fdopen(fd, "wb"), name

    try:
        items = [(b"", b"\x08\x01\x1a\x02\x08\x01")]  # header: 1 shard, little-endian, producer 1
        f, data_tmp = temp_file("data")
        with f:
            offset = 0
            for name in names:
                a = np.asarray(tensors[name])
                dt = _tf_dtype(a, f"{final}: variable {name!r}")
                if dt == _DT_STRING:
                    raw, crc = _string_tensor_bytes(a)
                    f.write(raw)
                    size = len(raw)
                else:
                    if a.dtype.byteorder == ">":
                        a = a.astype(a.dtype.newbyteorder("<"))
                    buf = as_bytes(a)
                    crc, size = crc32c(buf), buf.size
                    f.write(buf.data)
                entry = _Entry(dt, tuple(a.shape), 0, offset, size, mask(crc), False)
                items.append((name.encode("utf-8", "surrogateescape"), _encode_entry(entry)))
                offset += size
        f, index_tmp = temp_file("index")
        with f:
            f.write(build_table(items))
        f, state_tmp = temp_file("checkpoint")
        with f:
            quoted = prefix.replace("\\", "\\\\").replace('"', '\\"')
            f.write(f'model_checkpoint_path: "{quoted}"\n'
                    f'all_model_checkpoint_paths: "{quoted}"\n'.encode("utf-8"))
        for name in temps:  # mkstemp's 0600 is for the temporary names only
            os.chmod(name, file_mode())
        os.replace(data_tmp, final + ".data-00000-of-00001")
        os.replace(index_tmp, final + ".index")
        os.replace(state_tmp, os.path.join(directory, "checkpoint"))
    except BaseException:
        for name in temps:
            if os.path.exists(name):
                os.remove(name)
        raise
    return final
