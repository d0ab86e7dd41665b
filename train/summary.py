"""Parameters and FLOPs per branch: what ``spgim summary`` prints and the README quotes."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import attention_impl, build_model

# Paper Table 6, in millions of parameters (SPGM is the difference of the two published rows).
PAPER_PARAMS_M = {"spd": 40.2, "spgm": 21.0, "total": 61.2}


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in module.parameters())


def model_summary(config: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """Parameters and forward FLOPs per frame of SPD and SPGM at ``height`` x ``width``.

    FLOPs come from ``torch.utils.flop_counter`` (2 per multiply-add, convolutions and matrix
    products) on the meta device, so even the paper config at 512 px costs no real compute.
    """
    with torch.device("meta"):
        spd = build_model("spd", config).eval()
        spgm = build_model("spgm", config).eval()
        image = torch.empty(1, 3, height, width)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            outputs = spd(image)
        spd_flops, spd_counts = counter.get_total_flops(), counter.get_flop_counts()
        # Same count as the fused kernel; the explicit matmuls are what the meta device can run.
        with attention_impl(spgm, "matmul"), FlopCounterMode(display=False) as counter:
            spgm(image, *outputs)
        spgm_flops, spgm_counts = counter.get_total_flops(), counter.get_flop_counts()
    params = {"spd": count_parameters(spd), "spgm": count_parameters(spgm)}
    params["total"] = params["spd"] + params["spgm"]
    flops = {"spd": spd_flops, "spgm": spgm_flops, "total": spd_flops + spgm_flops}
    modules = {"spd": _per_module(spd, "SPD", spd_counts), "spgm": _per_module(spgm, "SPGM", spgm_counts)}
    return {
        "config": config["name"],
        "height": height,
        "width": width,
        "params": params,
        "flops": flops,
        "modules": modules,
    }


def _ops(counts: dict[str, dict[Any, int]], key: str) -> dict[Any, int]:
    """FLOPs per operator of module ``key``; a container never called itself (a ModuleDict) sums its children."""
    if key in counts:
        return counts[key]
    total: dict[Any, int] = {}
    for name, ops in counts.items():
        if name.startswith(key + ".") and name.count(".") == key.count(".") + 1:
            for op, flops in ops.items():
                total[op] = total.get(op, 0) + flops
    return total


def _per_module(model: torch.nn.Module, prefix: str, counts: dict[str, dict[Any, int]]) -> dict[str, dict[str, int]]:
    """Parameters and FLOPs of each child of ``model`` (and each TST stage, with its attention products alone)."""
    rows: dict[str, dict[str, int]] = {}
    named = [(name, child) for name, child in model.named_children()]
    tst = getattr(model, "tst", None)
    if isinstance(tst, torch.nn.Module):
        named += [(f"tst.{name}", child) for name, child in tst.named_children()]
    for name, child in named:
        ops = _ops(counts, f"{prefix}.{name}")
        row = {"params": count_parameters(child), "flops": int(sum(ops.values()))}
        if name.startswith("tst."):
            # The attention itself: q k^T and the weighted sum of v, the matrix products (the rest is 1x1 convs).
            row["attention_flops"] = int(sum(n for op, n in ops.items() if "convolution" not in str(op)))
        if row["params"] or row["flops"]:
            rows[name] = row
    return rows


def format_summary(summary: dict[str, Any]) -> str:
    """A small table of :func:`model_summary`, with paper Table 6 beside the paper config."""
    paper = summary["config"] == "paper"
    lines = [
        f"SPG-IM {summary['config']} config at {summary['width']}x{summary['height']} (WxH)",
        f"{'branch':<8}{'params (M)':>12}{'Table 6 (M)':>13}{'GFLOPs/frame':>14}",
    ]
    for key in ("spd", "spgm", "total"):
        reference = f"{PAPER_PARAMS_M[key]:.1f}" if paper else "-"
        lines.append(
            f"{key.upper() if key != 'total' else 'total':<8}{summary['params'][key] / 1e6:>12.2f}"
            f"{reference:>13}{summary['flops'][key] / 1e9:>14.1f}"
        )
    for branch, rows in summary.get("modules", {}).items():
        lines.append(f"{branch.upper()} by module")
        for name, row in rows.items():
            attention = f"  (attention {row['attention_flops'] / 1e9:.1f})" if "attention_flops" in row else ""
            lines.append(f"  {name:<14}{row['params'] / 1e6:>8.2f}{'':>13}{row['flops'] / 1e9:>14.1f}{attention}")
    return "\n".join(lines)
