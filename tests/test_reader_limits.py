"""Untrusted files must not cost unbounded time or memory: regressions from a security review."""

import json
import pickle
import struct
import zipfile

import numpy as np
import pytest

import fastfp
from fastfp import FileFormatError


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(v):
    return b"J" + struct.pack("<i", v)


def _tensor_pickle(entries, numel):
    """A protocol-2 pickle of {name: tensor(size, stride)} on storage '0' (float32, numel elements),
    written opcode by opcode so that no torch is needed to make it."""
    out = b"\x80\x02}("
    for name, size, stride in entries:
        raw = name.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw
        out += _global("torch._utils", "_rebuild_tensor_v2") + b"("
        out += b"(" + b"X\x07\x00\x00\x00storage" + _global("torch", "FloatStorage") + b"X\x01\x00\x00\x000"
        out += b"X\x03\x00\x00\x00cpu" + _int(numel) + b"tQ"  # persistent id -> storage
        out += _int(0) + b"(" + b"".join(map(_int, size)) + b"t" + b"(" + b"".join(map(_int, stride)) + b"t"
        out += b"\x89" + _global("collections", "OrderedDict") + b")R" + b"tR"
    return out + b"u."


def _archive(path, pkl, blobs, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("a/data.pkl", pkl)
        for key, blob in blobs.items():
            z.writestr(f"a/data/{key}", blob)


def test_the_pickle_builder_makes_a_readable_checkpoint(tmp_path):
    path = tmp_path / "ok.pt"
    _archive(path, _tensor_pickle([("w", (2, 2), (2, 1))], 4), {"0": np.arange(4, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(fastfp.read_torch_state_dict(path)["w"], [[0, 1], [2, 3]])


def test_shared_containers_are_walked_once(tmp_path):
    nested = []
    for _ in range(40):  # 2^40 paths through a 40-node graph
        nested = [nested, nested]
    path = tmp_path / "dag.pt"
    _archive(path, pickle.dumps(nested, protocol=2), {})
    # Walking each shared list once is 40 visits; walking every path would be 2^40 (never ends).
    assert fastfp.read_torch_state_dict(path) == {}


def test_stride_zero_expansions_are_capped_in_total(tmp_path):
    entries = [(f"t{i}", (2 ** 24,), (0,)) for i in range(400)]  # 400 x 64 MB from 4 bytes
    path = tmp_path / "expand.pt"
    _archive(path, _tensor_pickle(entries, 1), {"0": b"\0\0\0\0"})
    with pytest.raises(FileFormatError, match="expand to more than"):
        fastfp.read_torch_state_dict(path)


def test_compressed_storage_larger_than_its_tensors_is_not_decompressed(tmp_path):
    path = tmp_path / "bomb.pt"
    _archive(path, _tensor_pickle([("w", (1,), (1,))], 1), {"0": b"\0" * (64 << 20)}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(FileFormatError, match="refusing to decompress"):
        fastfp.read_torch_state_dict(path)


def test_safetensors_entries_may_not_share_bytes(tmp_path):
    header = {f"t{i}": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]} for i in range(3)}
    raw = json.dumps(header).encode()
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(FileFormatError, match="without gaps or overlap"):
        fastfp.read_safetensors(path)


def test_a_safetensors_file_larger_than_memory_allows_is_refused_before_reading(tmp_path, monkeypatch):
    # A 4 kB sparse file whose header declares one 8 GiB tensor: refused by its size, not read.
    from fastfp import io_safetensors

    header = {"w": {"dtype": "F32", "shape": [2 ** 31], "data_offsets": [0, 2 ** 33]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + 2 ** 33)
    monkeypatch.setattr(io_safetensors, "memory_limit_bytes", lambda: 4 << 30)
    with pytest.raises(fastfp.MemoryLimitError, match=r"huge.safetensors: 8.00 GiB of safetensors .* 4.00 GiB"):
        fastfp.read_safetensors(path)
    with pytest.raises(fastfp.MemoryLimitError):
        fastfp.load(path)
