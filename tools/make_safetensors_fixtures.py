#!/usr/bin/env python3
"""Write the safetensors fixture of tests/test_loading.py from the existing torch fixture.

tests/data/torch_gru_classifier.safetensors holds exactly the tensors of
tests/data/torch_gru_classifier.pt (embedding.weight, gru.*_l0, readout.weight/bias; float32), read
with fastfp.read_torch_state_dict and written by the small stdlib writer below (keys sorted, header
padded to a multiple of 8 bytes as the reference implementation does), so neither torch nor the
safetensors package is needed and the output is byte-for-byte reproducible. The test checks that
``fastfp.load(..., cell='gru')`` on it reproduces the torch forward pass stored in
tests/data/torch_fixtures_expected.npz.

    python tools/make_safetensors_fixtures.py            # writes into tests/data/
    python tools/make_safetensors_fixtures.py --out /tmp
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from fastfp.io_torch import read_torch_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        arr = arr.astype(arr.dtype.newbyteorder("<"))
        blob = arr.tobytes()
        header[key] = {"dtype": DTYPES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data"))
    args = parser.parse_args()
    sd = read_torch_state_dict(os.path.join(ROOT, "tests", "data", "torch_gru_classifier.pt"))
    data = safetensors_bytes(sd, {"source": "tests/data/torch_gru_classifier.pt", "format": "pt"})
    path = os.path.join(args.out, "torch_gru_classifier.safetensors")
    with open(path, "wb") as fh:
        fh.write(data)
    print(f"wrote {path} ({len(data)} bytes, {len(sd)} tensors)")


if __name__ == "__main__":
    main()
