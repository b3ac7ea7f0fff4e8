"""Conditional normalizing flows (one per feature level) and the positional condition (METHOD.md §2)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import AllInOneBlock
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def positional_encoding(dim: int, height: int, width: int) -> torch.Tensor:
    """2-D sinusoidal code (dim, H, W): first dim/2 channels encode the column, the rest the row.

    Channel pairs (2k, 2k+1) are (sin, cos) of ``pos * 10000^(-2k/(dim/2))``, as CFLOW-AD/BGAD.
    """
    if dim % 4:
        raise ValueError(f"positional code dimension must be a multiple of 4, got {dim}")
    half = dim // 2
    freq = torch.exp(torch.arange(0.0, half, 2) * -(math.log(10000.0) / half))  # (half/2,)
    cols = torch.arange(width, dtype=torch.float32)[:, None] * freq  # (W, half/2)
    rows = torch.arange(height, dtype=torch.float32)[:, None] * freq  # (H, half/2)
    code = torch.zeros(dim, height, width)
    code[0:half:2] = torch.sin(cols).T[:, None, :].expand(-1, height, -1)
    code[1:half:2] = torch.cos(cols).T[:, None, :].expand(-1, height, -1)
    code[half::2] = torch.sin(rows).T[:, :, None].expand(-1, -1, width)
    code[half + 1 :: 2] = torch.cos(rows).T[:, :, None].expand(-1, -1, width)
    return code


def _subnet(dims_in: int, dims_out: int) -> nn.Module:
    """CFLOW-AD's fully connected coupling subnet: Linear(d, 2d) - ReLU - Linear(2d, out)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """FrEIA draws its soft permutations from numpy's global RNG; seed it locally and restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def build_flow(
    dim: int, cond_dim: int = 128, n_blocks: int = 8, clamp: float = 1.9, seed: int = 0
) -> SequenceINN:
    """One conditional flow over ``dim``-channel fibers, deterministic given ``seed`` (and torch's seed)."""
    flow = SequenceINN(dim)
    with _numpy_global_seed(seed):
        for _ in range(n_blocks):
            flow.append(
                AllInOneBlock,
                cond=0,
                cond_shape=(cond_dim,),
                subnet_constructor=_subnet,
                affine_clamping=clamp,
                global_affine_type="SOFTPLUS",
                permute_soft=True,
            )
    return flow


def log_likelihood(flow: SequenceINN, fibers: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood ℓ = (−C/2·ln 2π − ½‖z‖² + log|det J|) / C of each fiber (N,)."""
    z, log_jac_det = flow(fibers, c=[cond])
    channels = fibers.shape[1]
    log_p = -0.5 * channels * LOG_2PI - 0.5 * z.pow(2).sum(dim=1) + log_jac_det
    return log_p / channels


def flow_parameter_count(flows: list[SequenceINN]) -> int:
    return sum(p.numel() for f in flows for p in f.parameters() if p.requires_grad)
