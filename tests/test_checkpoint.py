"""The numpy-only TF checkpoint reader/writer (gpt2_common.checkpoint).

TensorFlow is the reference where it is installed (tests that need it skip otherwise): checkpoints
it writes must read back bit-identically, and checkpoints we write must load in TF.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpt2_common.checkpoint as ckpt
import gpt2_common.sstable as sstable
from gpt2_common.checkpoint import (CheckpointError, crc32c, list_variables, read_checkpoint,
                                    resolve_checkpoint_prefix, write_checkpoint)
from conftest import need

SRC = Path(__file__).resolve().parents[1] / "src"


def _tf():
    tf = need("tensorflow")
    return tf


def _sample_tensors() -> dict:
    """Several dtypes and shapes (scalars, empty, 3-D), GPT-2 style names, many small ones so the
    index spans several SSTable blocks, and names sharing long prefixes."""
    rng = np.random.default_rng(0)
    t = {
        "model/wte": rng.standard_normal((50, 8)).astype(np.float32),
        "model/h0/attn/c_attn/w": rng.standard_normal((1, 8, 24)).astype(np.float32),
        "model/h0/attn/c_attn/b": np.zeros(24, np.float32),
        "scalar/f32": np.float32(-1.5),
        "scalar/i64": np.int64(-(2 ** 40)),
        "empty/f32": np.zeros((0, 3), np.float32),
        "empty/1d": np.zeros(0, np.int32),
        "f16": rng.standard_normal((3, 5)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "i32": np.arange(-5, 5, dtype=np.int32).reshape(2, 5),
        "i8": np.array([-128, 0, 127], np.int8),
        "u8": np.arange(256, dtype=np.uint8),
        "bool": np.array([[True, False], [False, True]]),
        "strings": np.array([b"hello", b"", b"\x00\xff bytes"], dtype=object),
        "x" * 200 + "/long": np.ones(2, np.float32),
    }
    t.update({f"many/v{i:04d}": np.float32(i) for i in range(400)})
    return t


def _assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, a in want.items():
        a, b = np.asarray(a), got[name]
        assert b.shape == a.shape and b.dtype == a.dtype, name
        assert np.array_equal(b, a), name


# ------------------------------------------------------------------------------------- CRC-32C
def _crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_reference():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    rng = np.random.default_rng(1)
    for n in [1, 3, 4, 5, 63, 511, 512, 513, 4097, 20011]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc_bitwise(data), n
        assert crc32c(data[n // 3:], crc32c(data[:n // 3])) == crc32c(data), n
    # an array counts by its raw bytes, also when longer than one 16 MiB chunk and non-contiguous
    big = rng.integers(0, 256, (1 << 24) + 3_000_017, dtype=np.uint8)
    assert crc32c(big) == crc32c(big[1_000_000:], crc32c(big[:1_000_000].tobytes()))
    words = rng.integers(0, 2**31, (64, 33), dtype=np.int32)
    assert crc32c(words[:, ::2]) == crc32c(np.ascontiguousarray(words[:, ::2]).tobytes())


# ---------------------------------------------------------------------------- TF -> our reader
def test_reads_tf2_object_checkpoint(tmp_path):
    tf = _tf()
    rng = np.random.default_rng(2)
    values = {
        "f32": rng.standard_normal((4, 3)).astype(np.float32),
        "f64": np.float64(np.pi),
        "f16": rng.standard_normal(6).astype(np.float16),
        "i32": np.arange(12, dtype=np.int32).reshape(2, 3, 2),
        "i64": np.int64(2 ** 40 + 3),
        "empty": np.zeros((0, 4), np.float32),
        "flag": np.array([True, False, True]),
        "bf16": tf.constant([1.5, -2.25, 3.0], tf.bfloat16),
        "text": tf.constant([b"ab", b"", b"xyz"]),
    }
    prefix = tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()}).write(
        str(tmp_path / "obj" / "ckpt"))
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in names and "f32/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert list_variables(prefix) == {n: tuple(s) for n, s in tf.train.list_variables(prefix)}
    got = read_checkpoint(prefix)
    assert list(got) == names
    for name in names:
        want = np.asarray(reader.get_tensor(name))
        assert got[name].shape == want.shape, name
        if got[name].dtype == object:  # strings: TF gives bytes (scalar) or an object array
            assert want.dtype.kind in "OS" and got[name].tolist() == want.tolist(), name
        else:
            assert got[name].dtype == want.dtype and np.array_equal(got[name], want), name
    assert got["text/.ATTRIBUTES/VARIABLE_VALUE"].tolist() == [b"ab", b"", b"xyz"]


def test_reads_tf1_saver_checkpoint_with_gpt2_names(tmp_path):
    """Graph-mode Saver writes plain names like the original GPT-2 checkpoints, a `checkpoint`
    file with an absolute path, and a .meta file; the directory still reads after being moved."""
    tf = _tf()
    V, E, C = 97, 16, 12
    shapes = {"model/wte": [V, E], "model/wpe": [C, E], "model/h0/attn/c_attn/w": [1, E, 3 * E],
              "model/h0/attn/c_attn/b": [3 * E], "model/ln_f/g": [E]}
    saved = tmp_path / "saved"
    with tf.Graph().as_default():
        for name, shape in shapes.items():
            tf.compat.v1.get_variable(name, shape, initializer=tf.compat.v1.random_normal_initializer())
        tf.compat.v1.get_variable("model/step", [], dtype=tf.int64,
                                  initializer=tf.compat.v1.constant_initializer(7))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(saved / "model.ckpt"))
    moved = tmp_path / "moved"
    shutil.move(str(saved), str(moved))  # `checkpoint` still names the old absolute path
    reader = tf.train.load_checkpoint(str(moved / "model.ckpt"))
    assert list_variables(moved) == {**{k: tuple(v) for k, v in shapes.items()}, "model/step": ()}
    got = read_checkpoint(moved, names=list(shapes))
    assert list(got) == list(shapes)
    for name in shapes:
        assert got[name].dtype == np.float32 and np.array_equal(got[name], reader.get_tensor(name))
    assert read_checkpoint(moved / "model.ckpt", names=["model/step"])["model/step"] == 7


def test_reads_tf_checkpoint_with_several_data_shards(tmp_path):
    tf = _tf()
    values = {f"v{i}": np.random.default_rng(i).standard_normal(1000).astype(np.float32)
              for i in range(5)}
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=4000)
    prefix = tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()}).write(
        str(tmp_path / "ck"), options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    assert len(list(tmp_path.glob("ck.data-*"))) > 1
    got = read_checkpoint(prefix)
    for k, v in values.items():
        assert np.array_equal(got[f"{k}/.ATTRIBUTES/VARIABLE_VALUE"], v)
    os.remove(sorted(tmp_path.glob("ck.data-*"))[-1])
    with pytest.raises(CheckpointError, match="data file not found"):
        read_checkpoint(prefix)


# ---------------------------------------------------------------------------- our writer -> TF
def test_tf_reads_what_we_write(tmp_path):
    tf = _tf()
    tensors = _sample_tensors()
    tensors["bf16"] = np.asarray(tf.constant([0.5, -3.0], tf.bfloat16))
    prefix = write_checkpoint(tmp_path, tensors)
    assert prefix == str(tmp_path / "model.ckpt")
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix
    assert dict(tf.train.list_variables(str(tmp_path))) == {k: list(np.shape(v)) for k, v in tensors.items()}
    reader = tf.train.load_checkpoint(str(tmp_path))
    for name, value in tensors.items():
        got = np.asarray(reader.get_tensor(name))
        assert got.dtype == np.asarray(value).dtype, name
        assert got.shape == np.shape(value) and np.array_equal(got, value), name


def test_round_trip_without_tf(tmp_path):
    tensors = _sample_tensors()
    tensors["big_endian"] = np.arange(6, dtype=">i4").reshape(3, 2)
    prefix = write_checkpoint(tmp_path / "new" / "dir", tensors, prefix="run1.ckpt")
    folder = tmp_path / "new" / "dir"
    assert sorted(os.listdir(folder)) == ["checkpoint", "run1.ckpt.data-00000-of-00001",
                                          "run1.ckpt.index"]  # no temporary files left over
    assert 'model_checkpoint_path: "run1.ckpt"' in (folder / "checkpoint").read_text()
    want = {k: np.asarray(tensors[k]) for k in sorted(tensors)}
    want["big_endian"] = want["big_endian"].astype("<i4")
    got = read_checkpoint(folder)
    _assert_same(got, want)
    assert all(a.flags.writeable for a in got.values())
    got["model/wte"][0, 0] = 123.0  # writable, and does not touch the file
    _assert_same(read_checkpoint(prefix, verify=False), want)
    assert list_variables(prefix) == {k: v.shape for k, v in want.items()}
    subset = read_checkpoint(prefix + ".index", names=["i32", "model/wte"])
    assert list(subset) == ["i32", "model/wte"]
    assert read_checkpoint(prefix, names="f64")["f64"].shape == (7,)


# ----------------------------------------------------------------------- corruption & messages
def _flip(path: str, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))


def _raises(path, match: str, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        read_checkpoint(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def small(tmp_path) -> Path:
    rng = np.random.default_rng(4)
    write_checkpoint(tmp_path, {"model/wte": rng.standard_normal((20, 4)).astype(np.float32),
                                "model/wpe": rng.standard_normal((5, 4)).astype(np.float32),
                                "model/ln_f/b": np.zeros(4, np.float32)})
    return tmp_path


def test_truncated_data_file(small):
    data = small / "model.ckpt.data-00000-of-00001"
    os.truncate(data, data.stat().st_size - 3)
    msg = _raises(small, "truncated")
    assert str(data) in msg and "model/wte" in msg


def test_missing_data_shard(small):
    os.remove(small / "model.ckpt.data-00000-of-00001")
    assert "model.ckpt.data-00000-of-00001" in _raises(small, "data file not found")
    assert list_variables(small)  # the index alone still lists


def test_deleted_index(small):
    os.remove(small / "model.ckpt.index")
    msg = _raises(small, "points to checkpoint 'model.ckpt'")
    assert "model.ckpt.index does not exist" in msg
    os.remove(small / "checkpoint")
    _raises(small, "expected a 'checkpoint' file or model.ckpt.index")
    _raises(small / "model.ckpt", r"expected .*model\.ckpt\.index")


def test_checkpoint_file_pointing_to_missing_prefix(small):
    (small / "checkpoint").write_text('model_checkpoint_path: "model-1000"\n')
    _raises(small, r"checkpoint: points to checkpoint 'model-1000'")
    (small / "checkpoint").write_text("garbage\n")
    _raises(small, "no 'model_checkpoint_path")


def test_every_flipped_data_byte_is_caught(small):
    data = str(small / "model.ckpt.data-00000-of-00001")
    for pos in range(0, os.path.getsize(data), 7):
        _flip(data, pos)
        _raises(small, "crc32c mismatch")
        _flip(data, pos)  # restore
    assert read_checkpoint(small, verify=False)  # verify=False skips the check


def _varint_at(buf: bytes, pos: int):
    value, shift = 0, 0
    while True:
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if b < 0x80:
            return value, pos


def test_every_flipped_index_byte_is_caught_or_harmless(small):
    """A flipped byte anywhere in the index either raises or, where the byte is unused (footer
    padding, metaindex handle), leaves the result identical: never garbage weights."""
    index = str(small / "model.ckpt.index")
    size = os.path.getsize(index)
    want = read_checkpoint(small)
    harmless = []
    for pos in range(size):
        _flip(index, pos)
        try:
            got = read_checkpoint(small)
        except CheckpointError as e:
            assert "model.ckpt" in str(e) and "\n" not in str(e)
        else:
            _assert_same(got, want)
            harmless.append(pos)
        _flip(index, pos)
    # The footer (last 48 bytes) starts with the metaindex block's handle: two varints.
    footer = Path(index).read_bytes()[-48:]
    meta_offset, pos = _varint_at(footer, 0)
    meta_size, meta_end = _varint_at(footer, pos)
    _, index_end = _varint_at(footer, meta_end)
    _, index_end = _varint_at(footer, index_end)
    unused = set(range(meta_offset, meta_offset + meta_size + 5))  # the (unread) metaindex block
    unused |= set(range(size - 48, size - 48 + meta_end))  # its handle
    unused |= set(range(size - 48 + index_end, size - 8))  # footer padding
    assert set(harmless) <= unused, f"unused bytes only; harmless at {sorted(set(harmless) - unused)}"
    _flip(index, 0)
    _raises(small, "checksum mismatch")
    _flip(index, 0)
    _flip(index, os.path.getsize(index) - 1)
    _raises(small, "magic")


def _rewrite_index(prefix: str, edit) -> None:
    """Re-encode the index after ``edit(name, entry) -> entry`` (valid table, wrong contents)."""
    items = sstable.read_table(prefix + ".index")
    out = [items[0]] + [(k, ckpt._encode_entry(edit(k.decode(), ckpt._parse_entry(v, "test"))))
                        for k, v in items[1:]]
    Path(prefix + ".index").write_bytes(sstable.build_table(out))


def test_entry_size_and_dtype_problems(small):
    prefix = str(small / "model.ckpt")
    _rewrite_index(prefix, lambda n, e: e._replace(shape=(21, 4)) if n == "model/wte" else e)
    _raises(prefix, r"'model/wte' has 320 bytes, but shape \(21, 4\) of float32 needs 336")
    _rewrite_index(prefix, lambda n, e: e._replace(shape=(20, 4), dtype=20) if n == "model/wte" else e)
    _raises(prefix, r"unsupported dtype resource \(20\)", names=["model/wte"])
    read_checkpoint(prefix, names=["model/wpe"])  # other variables still read
    _rewrite_index(prefix, lambda n, e: e._replace(dtype=1, shard_id=3) if n == "model/wte" else e)
    _raises(prefix, "invalid entry for 'model/wte'")
    _raises(prefix, r"variable 'nope' not in checkpoint", names=["model/wpe", "nope"])


def test_element_count_overflowing_int64_is_a_checkpoint_error(small):
    """(2**32, 2**32) elements wrap to 0 in int64, which matched size 0 and ended in a reshape
    ValueError; counted with Python ints it is a CheckpointError."""
    prefix = str(small / "model.ckpt")
    _rewrite_index(prefix, lambda n, e: e._replace(shape=(2**32, 2**32), size=0)
                   if n == "model/wte" else e)
    _raises(prefix, r"'model/wte' has 0 bytes, but shape \(4294967296, 4294967296\) of float32 needs",
            names=["model/wte"])
    _rewrite_index(prefix, lambda n, e: e._replace(shape=(2**32, 2**32), size=0, dtype=7)  # strings
                   if n == "model/wte" else e)
    _raises(prefix, r"'model/wte': shape \(4294967296, 4294967296\) needs more than its 0 bytes",
            names=["model/wte"])


def test_bfloat16_needs_ml_dtypes(small, monkeypatch):
    prefix = str(small / "model.ckpt")
    _rewrite_index(prefix, lambda n, e: e._replace(dtype=14, shape=(5, 8)) if n == "model/wpe" else e)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import fails
    _raises(prefix, "bfloat16 needs the 'ml_dtypes' package", names=["model/wpe"])


def test_snappy_block_and_garbage_index(small):
    index = small / "model.ckpt.index"
    items = sstable.read_table(str(index))
    block = sstable.build_block(items, 16)
    table = sstable.build_table(items)
    assert table.startswith(block)  # the first data block starts the file
    n = len(block) - 5
    contents = block[:n] + b"\x01"  # compression type 1 = snappy, with a valid checksum
    block = contents + ckpt.struct.pack("<I", sstable.mask(crc32c(contents)))
    index.write_bytes(block + table[len(block):])
    _raises(small, "snappy-compressed")
    index.write_bytes(b"not a table" * 10)
    _raises(small, "not a checkpoint index")
    index.write_bytes(b"")
    _raises(small, "not a checkpoint index")


def test_resolve_checkpoint_prefix(small, tmp_path):
    assert resolve_checkpoint_prefix(small) == str(small / "model.ckpt")
    assert resolve_checkpoint_prefix(str(small / "model.ckpt.index")) == str(small / "model.ckpt")
    os.remove(small / "checkpoint")
    assert resolve_checkpoint_prefix(small) == str(small / "model.ckpt")
    os.remove(small / "model.ckpt.index")
    with pytest.raises(CheckpointError, match="no checkpoint in this directory"):
        resolve_checkpoint_prefix(small)
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        resolve_checkpoint_prefix(tmp_path / "missing" / "model.ckpt")


# ---------------------------------------------------------------------------------- packaging
def test_import_does_not_pull_in_tensorflow():
    code = ("import sys, gpt2_common.checkpoint as c; c.crc32c(b'x'); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert not any(m.startswith('google.protobuf') for m in sys.modules), 'protobuf'")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_read_speed_100mb(tmp_path):
    """Not a timing assertion: prints read (+crc) time for ~100 MB (see with -s)."""
    weights = {f"model/h{i}/w": np.random.default_rng(i).standard_normal((2500, 1000)).astype(np.float32)
               for i in range(10)}
    write_checkpoint(tmp_path, weights)
    for verify in (True, False):
        start = time.perf_counter()
        got = read_checkpoint(tmp_path, verify=verify)
        print(f"\nread 100 MB, verify={verify}: {time.perf_counter() - start:.3f} s")
    assert np.array_equal(got["model/h3/w"], weights["model/h3/w"])
