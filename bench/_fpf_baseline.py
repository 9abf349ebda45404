"""A re-implementation of FixedPointFinder's PyTorch algorithm, the baseline users know.

Written here from the algorithm's description (Golub & Sussillo, JOSS 2018; its PyTorch port), not
copied: Adam on the *mean* of q = ||F(h) - h||^2 / 2 over all points, lr 1.0, ReduceLROnPlateau
(factor 0.95, patience 2) stepped on that mean, and the joint stop rule: stop when every point has
q < tol_q (1e-12) or |mean q - previous mean q| < tol_dq * lr (tol_dq 1e-20), at most 5000
iterations. The cell is a torch module built from the same weights fastfp uses.
"""

from __future__ import annotations

import numpy as np


def torch_cell(params, dtype):
    """A torch function (x, h) -> F(h, x) for fastfp's ``gru`` or ``lstm`` params."""
    import torch

    H, M = params.hidden_size, params.input_size
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    if params.cell == "gru":
        cell = torch.nn.GRUCell(M, H).to(tdtype)
    elif params.cell == "lstm":
        cell = torch.nn.LSTMCell(M, H).to(tdtype)
    else:
        raise ValueError(f"baseline supports gru and lstm, got {params.cell!r}")
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(np.array(params.w_ih)))
        cell.weight_hh.copy_(torch.tensor(np.array(params.w_hh)))
        cell.bias_ih.copy_(torch.tensor(np.array(params.b_ih)))
        cell.bias_hh.copy_(torch.tensor(np.array(params.b_hh)))
    for p in cell.parameters():
        p.requires_grad_(False)

    if params.cell == "gru":
        return cell, lambda x, h: cell(x, h)

    def lstm_step(x, state):
        h, c = state[:, :H], state[:, H:]
        h2, c2 = cell(x, (h, c))
        return torch.cat([h2, c2], dim=1)

    return cell, lstm_step


def fpf_adam(params, h0, x, *, lr=1.0, max_iters=5000, tol_q=1e-12, tol_dq=1e-20, dtype=np.float32):
    """Run the baseline; returns (final states (B, N) as float64, iterations run)."""
    import torch

    _, step = torch_cell(params, dtype)
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    h = torch.tensor(np.asarray(h0), dtype=tdtype, requires_grad=True)
    inputs = torch.tensor(np.broadcast_to(x, (len(h0), params.input_size)).copy(), dtype=tdtype)
    opt = torch.optim.Adam([h], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.95, patience=2)
    prev = None
    it = 0
    for it in range(max_iters):
        opt.zero_grad()
        F = step(inputs, h)
        q = 0.5 * ((F - h) ** 2).sum(dim=1)
        loss = q.mean()
        loss.backward()
        opt.step()
        sched.step(loss.item())
        current_lr = opt.param_groups[0]["lr"]
        value = loss.item()
        if bool((q < tol_q).all()) or (prev is not None and abs(value - prev) < tol_dq * current_lr):
            break
        prev = value
    return h.detach().double().numpy(), it + 1
