#!/usr/bin/env python3
"""Step e of scripts/gpu-check.sh: what users would otherwise pick, timed on the same GPU in the same run.

PyTorch scaled_dot_product_attention (flash backend) dense and causal, and FlexAttention with a
sliding window and with the neighborhood mask of `attnkit bench --op na2d` (56 x 56, kernel 7, and
128 x 128, kernel 13: NATTEN's window, clamped at the borders), forward and forward + backward, in
bfloat16 and float16, at the shapes of `attnkit bench --device cuda` ([B, N, H, D] = [1, N, 4, 64],
N = 4096 .. 32768 where memory allows). FlexAttention's compile time is reported apart from its run
time. Times are medians of CUDA-event timings after a warm-up. Writes one JSON file (--json PATH):
{"torch": version, "device": name, "rows": [{"peer", "mask", "dtype", "shape", "pass", "ms", "tflops",
"compileS"?}], "skipped": [{"what", "why"}]}. TFLOP/s count the visible (query, key) pairs as attnkit's
bench does: 4 D flops per pair forward, 2.5 times that for forward + backward.

Not run on a GPU yet (no GPU was lent while it was written); the rehearsal skips it without CUDA
PyTorch. Standard library and torch only.
"""
import argparse
import json
import math
import statistics
import sys
import time


def median_ms(fn, repeats, torch):
    fn()  # warm-up (and, for compiled code, the compile)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def na_window(i, length, k):
    """NATTEN's window start for query i on an axis of `length` with kernel k (dilation 1)."""
    half = k // 2
    return min(max(i - half, 0), length - k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="N = 4096 only")
    ap.add_argument("--budget", type=float, default=80.0,
                    help="seconds: no new case starts after this (the JSON is rewritten after every row)")
    args = ap.parse_args()
    started = time.time()

    def out_of_time(what):
        if time.time() - started < args.budget:
            return False
        out["skipped"].append({"what": what, "why": f"the {args.budget:.0f} s budget was spent"})
        return True

    out = {"rows": [], "skipped": []}
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - report why, never crash the check
        out["skipped"].append({"what": "everything", "why": f"torch not importable: {e}"})
        json.dump(out, open(args.json, "w"), indent=2)
        return 0
    out["torch"] = torch.__version__
    if not torch.cuda.is_available():
        out["skipped"].append({"what": "everything", "why": "no CUDA device for torch"})
        json.dump(out, open(args.json, "w"), indent=2)
        return 0
    out["device"] = torch.cuda.get_device_name(0)
    dev = "cuda"

    def row(peer, mask, dtype, shape, pass_, ms, visible, D, compile_s=None):
        flop = 4 * D * visible * (2.5 if pass_ == "forward+backward" else 1.0)
        r = {"peer": peer, "mask": mask, "dtype": str(dtype).replace("torch.", ""), "shape": shape, "pass": pass_,
             "ms": round(ms, 4), "tflops": round(flop / (ms * 1e-3) / 1e12, 2)}
        if compile_s is not None:
            r["compileS"] = round(compile_s, 2)
        out["rows"].append(r)
        print(json.dumps(r), flush=True)
        json.dump(out, open(args.json, "w"), indent=2)  # a box that closes early keeps what ran

    def fwd_bwd(fn, q, k, v):
        def run():
            q.grad = k.grad = v.grad = None
            fn(q, k, v).sum().backward()
        return run

    B, H, D = 1, 4, 64
    lengths = [4096] if args.quick else [4096, 8192, 16384, 32768]
    dtypes = [torch.bfloat16, torch.float16]

    # -- SDPA, flash backend: dense and causal
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:  # noqa: BLE001
        sdpa_kernel = None
        out["skipped"].append({"what": "sdpa flash", "why": f"torch.nn.attention: {e}"})
    if sdpa_kernel is not None:
        for dtype in dtypes:
            for N in lengths:
                for causal in (False, True):
                    if out_of_time(f"sdpa-flash {dtype} N={N} causal={causal}"):
                        continue
                    try:
                        q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
                        visible = B * H * (N * (N + 1) // 2 if causal else N * N)
                        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                            f = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
                            with torch.no_grad():
                                ms = median_ms(lambda: f(q, k, v), args.repeats, torch)
                            row("sdpa-flash", "causal" if causal else "none", dtype, [B, N, H, D], "forward", ms, visible, D)
                            ms = median_ms(fwd_bwd(f, q, k, v), args.repeats, torch)
                            row("sdpa-flash", "causal" if causal else "none", dtype, [B, N, H, D], "forward+backward", ms, visible, D)
                        del q, k, v
                    except Exception as e:  # noqa: BLE001 - e.g. out of memory at the largest N
                        out["skipped"].append({"what": f"sdpa-flash {dtype} N={N} causal={causal}", "why": str(e)[:200]})
                    torch.cuda.empty_cache()

    # -- FlexAttention: sliding window, 2-D neighborhood
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as e:  # noqa: BLE001
        out["skipped"].append({"what": "flex attention", "why": f"import: {e}"})
        json.dump(out, open(args.json, "w"), indent=2)
        return 0
    t0 = time.time()
    flex = torch.compile(flex_attention)
    base_compile = time.time() - t0

    def flex_case(name, mask_mod, N, visible, dtype):
        if out_of_time(f"flex {name} {dtype} N={N}"):
            return
        try:
            t0 = time.time()
            bm = create_block_mask(mask_mod, None, None, N, N, device=dev)
            q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            f = lambda q, k, v: flex(q, k, v, block_mask=bm)  # noqa: E731
            with torch.no_grad():
                f(q, k, v)
            torch.cuda.synchronize()
            compile_s = time.time() - t0 + base_compile
            with torch.no_grad():
                ms = median_ms(lambda: f(q, k, v), args.repeats, torch)
            row("flex", name, dtype, [B, N, H, D], "forward", ms, visible, D, compile_s)
            t0 = time.time()
            fwd_bwd(f, q, k, v)()
            torch.cuda.synchronize()
            ms = median_ms(fwd_bwd(f, q, k, v), args.repeats, torch)
            row("flex", name, dtype, [B, N, H, D], "forward+backward", ms, visible, D, time.time() - t0)
        except Exception as e:  # noqa: BLE001
            out["skipped"].append({"what": f"flex {name} {dtype} N={N}", "why": str(e)[:200]})
        torch.cuda.empty_cache()

    for dtype in dtypes:
        for N in lengths[:2]:
            w = 256  # keys [i - w, i]: a causal sliding window
            visible = B * H * sum(min(i, w) + 1 for i in range(N))
            flex_case(f"sliding window {w}", lambda b, h, qi, ki: (ki <= qi) & (qi - ki <= w), N, visible, dtype)
        for side, kern in ((56, 7), (128, 13)):
            N = side * side
            # query (y, x) sees key (ky, kx) when each coordinate is in NATTEN's clamped window
            def na(b, h, qi, ki, side=side, kern=kern):
                qy, qx, ky, kx = qi // side, qi % side, ki // side, ki % side
                half = kern // 2
                sy = torch.clamp(qy - half, 0, side - kern)
                sx = torch.clamp(qx - half, 0, side - kern)
                return (ky >= sy) & (ky < sy + kern) & (kx >= sx) & (kx < sx + kern)
            visible = B * H * N * kern * kern
            assert na_window(0, side, kern) == 0 and na_window(side - 1, side, kern) == side - kern
            flex_case(f"na2d {side}x{side} k{kern}", na, N, visible, dtype)

    json.dump(out, open(args.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
