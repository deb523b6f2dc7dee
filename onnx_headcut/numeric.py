"""Small numpy functions the decode and the matchers share: the cell grid, sigmoid, DFL."""

from __future__ import annotations

import numpy as np


def cell_grid(h: int, w: int, dtype=np.float32) -> np.ndarray:
    """(h*w, 2) integer cell indices (gx, gy), row-major over (y, x): the order of a level's raw rows."""
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([gx, gy], -1).reshape(-1, 2).astype(dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function, computed in the input's dtype."""
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def dfl_expectation(bins: np.ndarray, reg_max: int) -> np.ndarray:
    """(..., 4 * (reg_max + 1)) bin logits → (..., 4) distances: softmax over each group, then sum_i p_i * i."""
    b = bins.reshape(*bins.shape[:-1], 4, reg_max + 1).astype(np.float32)
    b = np.exp(b - b.max(-1, keepdims=True))
    p = b / b.sum(-1, keepdims=True)
    return (p * np.arange(reg_max + 1, dtype=np.float32)).sum(-1)


#: how far a DFL expectation's fixed weights 0, 1, ..., R-1 may be from those integers: a few float32 ulps of R.
#: Training with an exponential moving average (Ultralytics' ``ModelEMA`` averages every float tensor, the
#: frozen DFL conv too) leaves them within about 1e-6; the decode uses the exact integers, and layer 2 of the
#: verification still compares the result with the original.
BIN_WEIGHTS_ATOL = 2e-5


def is_bin_weights(w: np.ndarray) -> bool:
    """``w`` (any shape) holds 0, 1, ..., n-1 in order, within :data:`BIN_WEIGHTS_ATOL`: the DFL projection."""
    flat = np.asarray(w, dtype=np.float64).reshape(-1)
    return flat.size > 1 and bool(np.all(np.abs(flat - np.arange(flat.size)) <= BIN_WEIGHTS_ATOL))
