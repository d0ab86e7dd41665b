"""The TST attention alone on OpenVINO's CPU plugin, fp32 against bf16, in each graph form and at each size.

    .venv/bin/python scripts/attention_precision.py --positions 1024,4096,16384 --json attention.json

One attention ``softmax(q k^T * scale) v`` over ``positions`` queries and as many keys, with ``--dim`` channels
(the paper configuration at 512x512 attends over 16384, 4096 and 1024 positions with 64, 128 and 256 channels
at res2, res3 and res4). Three forms of the same computation, built with OpenVINO's own opset so that nothing
but the form differs:

- ``sdpa``: one ``ScaledDotProductAttention`` operation;
- ``matmul``: MatMul, Softmax, MatMul over the whole score matrix;
- ``blocked``: the queries split in ``--blocks`` blocks, each MatMul/Softmax/MatMul, concatenated.

Each is compiled with ``INFERENCE_PRECISION_HINT`` f32 and bf16 and timed (the fastest of ``--runs`` calls
after a warm-up, both precisions alternated over ``--rounds``). A row gives the kinds of layers OpenVINO
compiled the form into, which shows whether it fused the attention (a snippets ``Subgraph``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMS = ("sdpa", "matmul", "blocked")
PRECISIONS = ("f32", "bf16")


def attention_model(form: str, positions: int, dim: int, blocks: int) -> Any:
    """An ``openvino.Model`` of one attention in ``form``, inputs q, k, v of shape (1, positions, dim)."""
    import openvino as ov
    from openvino import opset13 as ops

    q, k, v = (ops.parameter([1, positions, dim], np.float32, name=name) for name in "qkv")
    scale = ops.constant(np.float32(1 / np.sqrt(dim)))

    def whole(queries: Any) -> Any:
        scores = ops.multiply(ops.matmul(queries, k, False, True), scale)
        return ops.matmul(ops.softmax(scores, -1), v, False, False)

    if form == "sdpa":
        heads = [ops.unsqueeze(x, [1]) for x in (q, k, v)]
        out = ops.squeeze(ops.scaled_dot_product_attention(*heads, scale=scale, causal=False), [1])
    elif form == "matmul":
        out = whole(q)
    else:
        parts = ops.split(q, ops.constant(np.int64(1)), blocks).outputs()
        out = ops.concat([whole(part) for part in parts], 1)
    return ov.Model([out], [q, k, v])


def measure(positions: int, dim: int, blocks: int, runs: int, rounds: int, threads: int) -> list[dict[str, Any]]:
    """One row per form: each precision's fastest call in seconds, the speed-up, the compiled layer kinds."""
    import openvino as ov

    core = ov.Core()
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal((1, positions, dim), dtype=np.float32) for name in "qkv"}
    rows = []
    for form in FORMS:
        seconds: dict[str, float] = {}
        layers: dict[str, list[str]] = {}
        for _ in range(rounds):
            for precision in PRECISIONS:
                config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
                compiled = core.compile_model(attention_model(form, positions, dim, blocks), "CPU", config)
                request = compiled.create_infer_request()
                request.infer(feed)
                for _ in range(runs):
                    start = time.perf_counter()
                    request.infer(feed)
                    seconds[precision] = min(seconds.get(precision, np.inf), time.perf_counter() - start)
                kinds = {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()}
                layers[precision] = sorted(kinds - {"Input", "Output", "Parameter", "Result", "Const"})
        flops = 4 * positions * positions * dim  # two matrix products of positions x positions x dim
        rows.append(
            {
                "positions": positions,
                "dim": dim,
                "form": form,
                "seconds": seconds,
                "gflops_per_second": {p: flops / seconds[p] / 1e9 for p in PRECISIONS},
                "bf16_speedup": seconds["f32"] / seconds["bf16"],
                "layers": layers,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", default="1024,4096,16384", help="comma list of query (= key) counts")
    parser.add_argument("--dim", type=int, default=64, help="channels of q, k and v (default 64, res2's)")
    parser.add_argument("--blocks", type=int, default=8, help="query blocks of the blocked form")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for positions in (int(p) for p in args.positions.split(",")):
        for row in measure(positions, args.dim, args.blocks, args.runs, args.rounds, args.threads):
            rows.append(row)
            print(
                f"{positions:>6} positions  {row['form']:<8} f32 {row['seconds']['f32'] * 1e3:8.1f} ms  "
                f"bf16 {row['seconds']['bf16'] * 1e3:8.1f} ms  {row['bf16_speedup']:.2f}x  "
                f"{row['gflops_per_second']['bf16']:.0f} GFLOP/s bf16  {' '.join(row['layers']['bf16'])}"
            )
    if args.json:
        from spgim.machine import cpu_facts

        args.json.write_text(json.dumps({"cpu": cpu_facts(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
