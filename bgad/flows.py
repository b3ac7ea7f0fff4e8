"""Conditional normalizing flows (one per feature level) and the positional condition (docs/method.md §2)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import numpy as np
import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import AllInOneBlock
from threadpoolctl import threadpool_limits
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def positional_code_axes(dim: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of the 2-D sinusoidal code: column code (W, dim/2) and row code (H, dim/2).

    Channel pairs (2k, 2k+1) are (sin, cos) of ``pos * 10000^(-2k/(dim/2))``, as CFLOW-AD/BGAD. The
    code of grid position (r, c) is ``cat(col_code[c], row_code[r])``: kept apart, a linear layer's
    share of the code costs (H + W) products per step instead of one per position or fiber.
    """
    if dim % 4:
        raise ValueError(f"positional code dimension must be a multiple of 4, got {dim}")
    half = dim // 2
    freq = torch.exp(torch.arange(0.0, half, 2) * -(math.log(10000.0) / half))  # (half/2,)

    def axis(length: int) -> torch.Tensor:
        angle = torch.arange(length, dtype=torch.float32)[:, None] * freq  # (length, half/2)
        return torch.stack([torch.sin(angle), torch.cos(angle)], dim=2).flatten(1)  # sin, cos interleaved

    return axis(width), axis(height)


def positional_encoding(dim: int, height: int, width: int) -> torch.Tensor:
    """2-D sinusoidal code (dim, H, W): first dim/2 channels encode the column, the rest the row."""
    col_code, row_code = positional_code_axes(dim, height, width)
    half = dim // 2
    return torch.cat(
        [
            col_code.T[:, None, :].expand(half, height, width),
            row_code.T[:, :, None].expand(half, height, width),
        ]
    )


def _subnet(dims_in: int, dims_out: int) -> nn.Module:
    """CFLOW-AD's fully connected coupling subnet: Linear(d, 2d) - ReLU - Linear(2d, out)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


class PositionalSubnet(nn.Module):
    """CFLOW-AD's subnet fed (x1, grid-position index) instead of (x1, positional code).

    Same parameters, initialisation and outputs as ``_subnet`` on ``cat(x1, code[index])``, computed
    in another order. The code has 128 channels and x1 only C/2, so the code's share of the first
    layer, ``code @ W_code^T``, is most of the subnet's work; but the code of position (r, c) is
    ``cat(col_code[c], row_code[r])``, so that share is ``row_term[r] + col_term[c]`` with
    ``row_term = row_code @ W_row^T`` (H rows) and ``col_term = col_code @ W_col^T`` (W rows): two
    small products and an (H·W, hidden) table of sums per step, and one gathered row per fiber,
    instead of a 128-wide product per fiber.
    """

    def __init__(self, dims_in: int, dims_out: int, col_code: torch.Tensor, row_code: torch.Tensor) -> None:
        super().__init__()
        self.split = dims_in - 1  # the last input channel is the position index r·W + c
        full = self.split + col_code.shape[1] + row_code.shape[1]
        self.fc1 = nn.Linear(full, 2 * full)  # created in _subnet's order: identical initialisation
        self.fc2 = nn.Linear(2 * full, dims_out)
        self.register_buffer("col_code", col_code, persistent=False)
        self.register_buffer("row_code", row_code, persistent=False)

    def forward(self, x1c: torch.Tensor) -> torch.Tensor:
        x1, index = x1c[:, : self.split], x1c[:, self.split].long()
        col_end = self.split + self.col_code.shape[1]
        weight = self.fc1.weight
        w_x, w_col, w_row = weight[:, : self.split], weight[:, self.split : col_end], weight[:, col_end:]
        row_term = torch.addmm(self.fc1.bias, self.row_code, w_row.T)  # (H, hidden), bias included
        col_term = self.col_code @ w_col.T  # (W, hidden)
        table = (row_term[:, None, :] + col_term[None, :, :]).flatten(0, 1)  # row index r·W + c
        hidden = table.index_select(0, index).addmm_(x1, w_x.T).relu_()  # in place: no extra copies
        return self.fc2(hidden)


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
    dim: int,
    cond_dim: int = 128,
    n_blocks: int = 8,
    clamp: float = 1.9,
    seed: int = 0,
    code_axes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> SequenceINN:
    """One conditional flow over ``dim``-channel fibers, deterministic given ``seed`` (and torch's seed).

    Without ``code_axes`` the condition is the positional code of each fiber (CFLOW-AD's form); with
    ``code_axes`` (column and row code, ``positional_code_axes``) the condition is each fiber's
    position index and the code's share of the first layer is computed per row and per column.
    ``cond_dim=0`` builds an unconditional flow (the released code's ``--flow_arch flow_model``).
    """
    flow = SequenceINN(dim)
    if cond_dim == 0:
        subnet, cond_shape = _subnet, None
    elif code_axes is None:
        subnet, cond_shape = _subnet, (cond_dim,)
    else:
        col_code, row_code = code_axes
        subnet = functools.partial(PositionalSubnet, col_code=col_code, row_code=row_code)
        cond_shape = (1,)
    # FrEIA draws each soft permutation with scipy's special_ortho_group (a QR through BLAS); with
    # several BLAS threads next to torch's OpenMP pool each draw takes ~0.2 s instead of ~1 ms.
    with _numpy_global_seed(seed), threadpool_limits(1, user_api="blas"):
        for _ in range(n_blocks):
            condition = {} if cond_shape is None else {"cond": 0, "cond_shape": cond_shape}
            flow.append(
                AllInOneBlock,
                **condition,
                subnet_constructor=subnet,
                affine_clamping=clamp,
                global_affine_type="SOFTPLUS",
                permute_soft=True,
            )
    return flow


def log_likelihood(flow: SequenceINN, fibers: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Per-dimension log-likelihood ℓ = (−C/2·ln 2π − ½‖z‖² + log|det J|) / C of each fiber (N,)."""
    z, log_jac_det = flow(fibers, c=[] if cond is None else [cond])
    channels = fibers.shape[1]
    log_p = -0.5 * channels * LOG_2PI - 0.5 * z.pow(2).sum(dim=1) + log_jac_det
    return log_p / channels


class ConditionalFlow(nn.Module):
    """The flow of one feature level: (fibers, their grid-position indices) -> ℓ per fiber.

    ``conditional=False`` drops the positional condition (the released code's ``flow_model``): one
    density for every position, the reference that shows what the condition contributes.

    ``standardize=True`` puts a fixed per-channel affine layer in front of the coupling blocks,
    x ↦ (x − μ)/σ with μ, σ of the normal training features (``set_input_statistics``), like Glow's
    data-initialised ActNorm. Its log-determinant −Σ log σ_c is part of ℓ, so ℓ stays the density
    of the raw features and every loss, boundary and score keeps its definition; only where the
    optimisation starts changes. Without it, backbone features of standard deviation ~10 (Lite0)
    drive every coupling's soft clamp to its limit at initialisation (docs/flows.md).
    """

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        cond_dim: int = 128,
        n_blocks: int = 8,
        clamp: float = 1.9,
        seed: int = 0,
        shared_positions: bool = True,
        conditional: bool = True,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.conditional = conditional
        self.standardize = standardize
        # Identity until set_input_statistics: persistent, so a saved flow keeps its input layer.
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_std", torch.ones(dim))
        self.shared_positions = shared_positions
        if not conditional:
            self.inn = build_flow(dim, 0, n_blocks, clamp, seed)
        elif shared_positions:
            self.inn = build_flow(dim, cond_dim, n_blocks, clamp, seed, positional_code_axes(cond_dim, *grid))
        else:
            code = positional_encoding(cond_dim, *grid).flatten(1).T.contiguous()  # (h·w, cond_dim)
            self.register_buffer("code", code, persistent=False)
            self.inn = build_flow(dim, cond_dim, n_blocks, clamp, seed)

    @torch.no_grad()
    def set_input_statistics(self, features: torch.Tensor) -> None:
        """Fix the standardising layer from normal training features (N, C, h, w) of this level."""
        if not self.standardize:
            return
        self.input_mean.copy_(features.mean(dim=(0, 2, 3)))
        self.input_std.copy_(features.std(dim=(0, 2, 3)).clamp_min(1e-6))

    def forward(self, fibers: torch.Tensor, position_index: torch.Tensor) -> torch.Tensor:
        if not self.conditional:
            cond = None
        elif self.shared_positions:
            cond = position_index[:, None].to(fibers.dtype)
        else:
            cond = self.code[position_index]
        if not self.standardize:
            return log_likelihood(self.inn, fibers, cond)
        standardized = (fibers - self.input_mean) / self.input_std
        # log|det| of the input layer, per dimension (ℓ is per dimension)
        return log_likelihood(self.inn, standardized, cond) - self.input_std.log().mean()


def flow_parameter_count(flows: list[SequenceINN]) -> int:
    return sum(p.numel() for f in flows for p in f.parameters() if p.requires_grad)
