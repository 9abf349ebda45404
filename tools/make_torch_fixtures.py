"""Write the PyTorch checkpoint fixtures of tests/test_io_torch.py (needs torch; deterministic).

    python tools/make_torch_fixtures.py [--out tests/data]

Files written:

``torch_gru_classifier.pt``
    ``state_dict()`` of ``Embedding(10, 6) -> GRU(6, 16, batch_first=True) -> Linear(16, 3)``
    (keys ``embedding.weight``, ``gru.weight_ih_l0`` ..., ``readout.weight``, ``readout.bias``).
``torch_lstm2.pt``
    ``{'epoch': 7, 'state_dict': LSTM(5, 8, num_layers=2).state_dict()}`` (a nested checkpoint).
``torch_fixtures_expected.npz``
    torch's own forward on fixed inputs: ``gru_tokens`` (B, T) int, ``gru_states`` (B, T, 16)
    (the GRU outputs), ``gru_logits`` (B, T, 3) (readout of every state); ``lstm_x`` (B, T, 5),
    ``lstm_h0`` / ``lstm_c0`` (B, T, 8) (layer-0 h and c at every step; c by stepping an LSTMCell
    with the same weights), ``lstm_h1`` (B, T, 8) (layer-1 outputs).

torch.save stamps each archive with a random ``.data/serialization_id``; the archives are rewritten
here entry by entry (same names and bytes, stored, fixed timestamps) with a constant id so that the
files are byte-for-byte reproducible. torch.load still reads them.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile

import numpy as np
import torch

B, T = 3, 50


def _canonical_zip(raw: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(".data/serialization_id"):
                data = b"0" * len(data)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _save(obj, path: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(_canonical_zip(raw))
    torch.load(path, weights_only=True)  # still a valid torch checkpoint


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 6)
        self.gru = torch.nn.GRU(6, 16, batch_first=True)
        self.readout = torch.nn.Linear(16, 3)

    def forward(self, tokens):
        states, _ = self.gru(self.embedding(tokens))
        return states, self.readout(states)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(1234)
    torch.use_deterministic_algorithms(True)

    clf = Classifier()
    with torch.no_grad():  # a larger recurrent gain, so the states do not all sit near 0
        clf.gru.weight_hh_l0.mul_(2.0)
    tokens = torch.randint(0, 10, (B, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        gru_states, gru_logits = clf(tokens)
    _save(clf.state_dict(), os.path.join(args.out, "torch_gru_classifier.pt"))

    lstm = torch.nn.LSTM(5, 8, num_layers=2, batch_first=True)
    x = torch.randn(B, T, 5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        h1, _ = lstm(x)
        cell = torch.nn.LSTMCell(5, 8)
        cell.weight_ih.copy_(lstm.weight_ih_l0)
        cell.weight_hh.copy_(lstm.weight_hh_l0)
        cell.bias_ih.copy_(lstm.bias_ih_l0)
        cell.bias_hh.copy_(lstm.bias_hh_l0)
        h = torch.zeros(B, 8)
        c = torch.zeros(B, 8)
        hs, cs = [], []
        for t in range(T):
            h, c = cell(x[:, t], (h, c))
            hs.append(h)
            cs.append(c)
        h0 = torch.stack(hs, 1)
        c0 = torch.stack(cs, 1)
    _save({"epoch": 7, "state_dict": lstm.state_dict()}, os.path.join(args.out, "torch_lstm2.pt"))

    np.savez(
        os.path.join(args.out, "torch_fixtures_expected.npz"),
        gru_tokens=tokens.numpy(),
        gru_states=gru_states.numpy(),
        gru_logits=gru_logits.numpy(),
        lstm_x=x.numpy(),
        lstm_h0=h0.numpy(),
        lstm_c0=c0.numpy(),
        lstm_h1=h1.numpy(),
    )
    for name in ("torch_gru_classifier.pt", "torch_lstm2.pt", "torch_fixtures_expected.npz"):
        print(name, os.path.getsize(os.path.join(args.out, name)), "bytes")


if __name__ == "__main__":
    main()
