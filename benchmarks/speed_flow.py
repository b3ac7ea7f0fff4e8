"""Item 2 of the speed benchmark: the flow training step (forward + backward + Adam) in fibers/s per
level, Lite0 and B6 channel sizes, the positional code per fiber (released) or per grid row and column
(``shared_positions``), with glibc's default malloc and with ours (each in its own process), next to
the measured fp32 matmul rate and the FLOPs per fiber counted from the layer shapes."""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.speed_common import Item, in_child, say, sync, table
from bgad.flows import ConditionalFlow, PositionalSubnet

CHUNK_FIBERS = 4096
FLOW_LEVELS = (("lite0", (24, 40, 112)), ("b6", (40, 72, 200)))


def matmul_rate(device: torch.device, n: int, reps: int) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flow_flops(flow: ConditionalFlow, chunk: int) -> tuple[float, float]:
    """(model FLOPs, executed FLOPs) per fiber for one training step (×3 forward for fwd + bwd).

    Model: per block the subnet Linear(d1+128 → 2(d1+128)) and Linear(→ 2·d2) per fiber plus the C×C
    soft permutation, 2 FLOPs per multiply-add. Executed: with shared positions the code's share of
    the first layer is computed per grid row and column ((H + W)·64 products) and summed into an
    (H·W, hidden) table once per chunk, both spread over the chunk's fibers (then gathered per fiber).
    """
    model = executed = 0.0
    height, width = flow.grid
    for block in flow.inn.module_list:
        sub = block.subnet
        c = block.w_perm.shape[0]
        perm = 2.0 * c * c
        if isinstance(sub, PositionalSubnet):
            fc1, fc2 = sub.fc1, sub.fc2
            dense1 = 2.0 * fc1.in_features * fc1.out_features
            code_half = (fc1.in_features - sub.split) / 2
            per_chunk = (2.0 * (height + width) * code_half + height * width) * fc1.out_features
            ex1 = 2.0 * sub.split * fc1.out_features + per_chunk / chunk
        else:
            fc1, fc2 = sub[0], sub[2]
            dense1 = ex1 = 2.0 * fc1.in_features * fc1.out_features
        f2 = 2.0 * fc2.in_features * fc2.out_features
        model += dense1 + f2 + perm
        executed += ex1 + f2 + perm
    return 3 * model, 3 * executed


def item2_side(a: argparse.Namespace, device: torch.device, side: str) -> dict:
    """Fibers/s of both positional forms at every level, in this process's allocator setting."""
    n_mm, reps = (512, 3) if a.smoke else (2048, 5)
    steps, chunk = (2, 1024) if a.smoke else (20, CHUNK_FIBERS)
    peak = matmul_rate(device, n_mm, reps)
    rows = []
    for name, channels in FLOW_LEVELS:
        for level, (c, g) in enumerate(zip(channels, (64, 32, 16), strict=True)):
            for shared in (False, True):
                flow = ConditionalFlow(c, (g, g), 128, 8, 1.9, seed=level, shared_positions=shared).to(device)
                opt = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=2e-4)
                gen = torch.Generator().manual_seed(level)
                x = torch.randn(chunk, c, generator=gen).to(device)
                pos = torch.randint(0, g * g, (chunk,), generator=gen).to(device)

                def step(flow=flow, opt=opt, x=x, pos=pos) -> None:
                    loss = -flow(x, pos).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                step()
                step()
                sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                sync(device)
                model, executed = flow_flops(flow, chunk)
                rows.append(
                    {
                        "backbone": name,
                        "level": level,
                        "channels": c,
                        "grid": f"{g}²",
                        "shared_positions": shared,
                        "fibers_per_s": steps * chunk / (time.perf_counter() - start),
                        "model_flops_per_fiber": model,
                        "executed_flops_per_fiber": executed,
                    }
                )
    return {"peak_flops": peak, "matmul_n": n_mm, "steps": steps, "chunk": chunk, "rows": rows}


def item2(a: argparse.Namespace, device: torch.device) -> dict:
    say(f"  [2] flow steps, glibc default malloc, on {device.type} (fresh process) ...")
    default = in_child(a, "item2:default_malloc", device)
    say(f"  [2] flow steps, our malloc thresholds, on {device.type} (fresh process) ...")
    tuned = in_child(a, "item2:tuned_malloc", device)
    peak = tuned["peak_flops"]
    rows = []
    for d, t in zip(default["rows"], tuned["rows"], strict=True):
        rows.append(
            {
                **{k: t[k] for k in ("backbone", "level", "channels", "grid", "shared_positions")},
                "fibers_per_s_default_malloc": d["fibers_per_s"],
                "fibers_per_s": t["fibers_per_s"],
                "model_flops_per_fiber": t["model_flops_per_fiber"],
                "executed_flops_per_fiber": t["executed_flops_per_fiber"],
                "model_gflops": t["model_flops_per_fiber"] * t["fibers_per_s"] / 1e9,
                "fraction_of_peak_model": t["model_flops_per_fiber"] * t["fibers_per_s"] / peak,
                "fraction_of_peak_executed": t["executed_flops_per_fiber"] * t["fibers_per_s"] / peak,
            }
        )
    for row in rows:  # against the released form (code per fiber) in glibc's default setting
        before = next(
            r
            for r in rows
            if r["backbone"] == row["backbone"] and r["level"] == row["level"] and not r["shared_positions"]
        )
        row["speedup_vs_released_form"] = row["fibers_per_s"] / before["fibers_per_s_default_malloc"]
    return {
        "device": device.type,
        "matmul": {
            "n": tuned["matmul_n"],
            "gflops": peak / 1e9,
            "gflops_default_malloc": default["peak_flops"] / 1e9,
        },
        "chunk_fibers": tuned["chunk"],
        "steps": tuned["steps"],
        "rows": rows,
    }


def b6_flow_forward_floor(res: dict, device: str) -> tuple[float, float] | None:
    """(GFLOP, ms) per 256² image of the B6 flows' forward pass (item 2's executed FLOP count with
    shared positions, ÷3 for forward only, over the 64², 32² and 16² grids) at item 2's measured
    matmul rate on ``device``: what evaluating the flows cannot go below. None without item 2."""
    item2 = next((d for d in res.get("item2", []) if d["device"] == device), None)
    if item2 is None:
        return None
    rows = [r for r in item2["rows"] if r["backbone"] == "b6" and r["shared_positions"]]
    gflop = sum(r["executed_flops_per_fiber"] / 3 * int(r["grid"].rstrip("²")) ** 2 for r in rows) / 1e9
    return gflop, 1000 * gflop / item2["matmul"]["gflops"]


# --------------------------------------------------------------------------------------------------
# report

HEADER = [
    "backbone",
    "level",
    "C",
    "grid",
    "positional term",
    "fibers/s, default malloc",
    "fibers/s, our malloc",
    "model FLOP/fiber",
    "executed FLOP/fiber",
    "of peak (model)",
    "of peak (executed)",
    "vs per fiber, default malloc",
]


def table_row(r: dict) -> list:
    return [
        r["backbone"],
        r["level"],
        r["channels"],
        r["grid"],
        "rows + columns" if r["shared_positions"] else "per fiber",
        f"{r['fibers_per_s_default_malloc']:.0f}",
        f"{r['fibers_per_s']:.0f}",
        f"{r['model_flops_per_fiber'] / 1e3:.1f}k",
        f"{r['executed_flops_per_fiber'] / 1e3:.1f}k",
        f"{100 * r['fraction_of_peak_model']:.1f} %",
        f"{100 * r['fraction_of_peak_executed']:.1f} %",
        f"{r['speedup_vs_released_form']:.2f}×",
    ]


def device_section(d: dict) -> list[str]:
    L = [
        f"### 2. The flow step ({d['device']})",
        "",
        f"Forward + backward + Adam on chunks of {d['chunk_fibers']} fibers, 8 blocks, condition 128, "
        f"{d['steps']} timed steps, each allocator setting in its own process. Measured dense fp32 matmul "
        f"({d['matmul']['n']}² torch.mm): **{d['matmul']['gflops']:.1f} GFLOP/s** "
        f"({d['matmul']['gflops_default_malloc']:.1f} in the default-malloc process). FLOPs per fiber "
        "counted from the layer shapes (subnet Linear(d1+128 → 2(d1+128)) and Linear(→ 2·d2), C×C soft "
        "permutation, ×3 for fwd+bwd); 'model' = the released math, 'executed' = with the code's share "
        "computed per grid row and column. Positional term: *per fiber* = the 128-d code concatenated "
        "to each fiber (released); *rows + columns* = `shared_positions` (ours).",
        "",
    ]
    L += table(HEADER, [table_row(r) for r in d["rows"]])
    return L + [
        "'of peak' uses the our-malloc rate. After the positional code is out of the way, the remaining "
        "layers are thin (C/2 → 2(C/2+128) → C): the step is bound by memory traffic of the 4096 × "
        "2(C/2+128) hidden activations and their gradients, not by the matmul rate.",
        "",
    ]


def section(res: dict) -> list[str]:
    return [line for d in res.get("item2", []) for line in device_section(d)]


ITEM = Item(2, item2, per_device=True, section=section, worker=item2_side)
