/**
 * Benchmark of linear attention (`linearAttention`, causal, forward; optionally backward) through
 * the public API, at a fixed number of tokens per step (B * N = `totalTokens`) so that a flat
 * per-token time means "constant speed" (Lightning Attention's claim), and the crossover against
 * our dense causal `attention` on the same shape.
 *
 * Validation first: for each dtype, a small problem (N = 150: two chunks and a tail, decay 0.99,
 * GQA-free, D = the benchmarked head dim) is compared with the float64 reference, forward and
 * backward, without and with a gate (dGate too); if any comparison fails, no timing is reported. Then per configuration: `warmup`
 * untimed runs, `repeats` timed runs (enqueue + `synchronize()`, no copy back), the median reported.
 *
 * FLOP convention (docs/linear.md), per token and (query) head, chunk C = 64: the GEMMs the chunked
 * algorithm executes, the intra-chunk C x C block counted in full (as Lightning's count does):
 *   causal forward   2C(D + Dv) + 4 D Dv      (Q K^T, A V, Q H, K^T V)
 *   causal backward  6C(D + Dv) + 10 D Dv
 * Dense attention uses DESIGN §10: forward = 4 * visible pairs * D.
 *
 * Dense timings are measured up to `denseMaxN`; beyond it they are extrapolated linearly in N from
 * the largest measured N (at fixed B * N the dense causal work grows exactly linearly in N) and
 * flagged `denseEstimated`.
 *
 * Gated rows (`gated: true`, on by default) time the same shapes with a per-token gate [B, N, H] as
 * well as the decay (logsigmoid of a uniform in [2, 6]: g in [-0.13, -0.0025], a memory of a few
 * dozen tokens), under the same FLOP convention: the gate adds exponentials,
 * not GEMMs. `vsUngated` is the gated time over the constant-decay time of the same shape.
 *
 * Run as `attnkit bench --op linear [--quick] [--backward] [--json]` (src/cli/bench.ts).
 */
import * as ak from '../index.js';
import type { FloatDType } from '../index.js';
import { fmt, formatTable, median, msSince, relativeMaxError } from './common.js';

export const LINEAR_CHUNK = 64;

export interface LinearBenchOptions {
  /** query heads (default 8); kv heads are the same (no GQA) */
  H?: number;
  /** head dim of q/k and v (default 64) */
  D?: number;
  /** B * N for every sequence length (default 65536) */
  totalTokens?: number;
  /** sequence lengths timed for linear attention (default 1024 ... 65536); each must divide totalTokens */
  Ns?: readonly number[];
  /** extra, shorter sequence lengths timed for both ops, to locate the crossover (default 64 ... 512) */
  crossoverNs?: readonly number[];
  /** default float32 and bfloat16 */
  dtypes?: readonly FloatDType[];
  /** per-head decay used (default 0.99 for every head) */
  decay?: number;
  /** time the backward too (default false) */
  backward?: boolean;
  /** also time every linear-attention configuration with a per-token gate (default true) */
  gated?: boolean;
  /** time dense causal attention for the crossover (default true) */
  dense?: boolean;
  /** largest N at which dense attention is measured; longer ones are extrapolated (default 4096) */
  denseMaxN?: number;
  /** timed runs per configuration (default 3) */
  repeats?: number;
  /** untimed runs first (default 1) */
  warmup?: number;
  onStep?: (label: string) => void;
}

export interface LinearBenchRow {
  op: 'linearAttention' | 'attention';
  pass: 'forward' | 'backward';
  dtype: FloatDType;
  B: number;
  N: number;
  H: number;
  D: number;
  /** with a per-token gate [B, N, H] (linearAttention rows) */
  gated: boolean;
  /** gated rows: median time / the constant-decay row's median time (same shape and pass) */
  vsUngated: number | null;
  medianMs: number;
  minMs: number;
  /** FLOP of one run by the convention above */
  flop: number;
  gflops: number;
  /** median time / (B * N) in microseconds */
  usPerToken: number;
  /**
   * least process CPU time of a timed run / pool threads: about the wall time on an idle machine.
   * A wall time well above it means other work shared the cores during the measurement.
   */
  cpuMsPerThread: number;
  /** dense causal attention on the same shape (forward rows of linearAttention only) */
  denseMs: number | null;
  denseEstimated: boolean;
  /** denseMs / medianMs */
  speedup: number | null;
}

export interface LinearBenchReport {
  isa: string;
  threads: number;
  validation: { dtype: FloatDType; gated: boolean; ok: boolean; errors: Record<string, number>; tolerance: number }[];
  rows: LinearBenchRow[];
  /**
   * per dtype: max deviation of the forward per-token time from its mean over N in [1024, 65536],
   * percent, from the best (minimum) time of each configuration: the least disturbed by other load
   */
  flatness: Partial<Record<FloatDType, number>>;
  /** per dtype: smallest timed N from which linear attention's forward beats dense causal attention */
  crossoverN: Partial<Record<FloatDType, number | null>>;
}

/** FLOP of one causal forward or backward by the convention above. */
export function linearFlop(B: number, N: number, H: number, D: number, Dv: number, pass: 'forward' | 'backward'): number {
  const C = LINEAR_CHUNK;
  const perToken = pass === 'forward' ? 2 * C * (D + Dv) + 4 * D * Dv : 6 * C * (D + Dv) + 10 * D * Dv;
  return B * H * N * perToken;
}

/** DESIGN §10 dense causal forward FLOP: 4 * (N (N + 1) / 2) * D per (batch, head). */
export function denseCausalFlop(B: number, N: number, H: number, D: number): number {
  return 4 * B * H * ((N * (N + 1)) / 2) * D;
}

// Validation tolerances (max error relative to the largest reference value): the kernel computes in
// float32 from the exact stored inputs, so float32 differs from float64 by summation-order rounding
// and float16/bfloat16 by the final rounding of the outputs (2^-11 / 2^-8 relative).
const TOL: Record<FloatDType, number> = { float32: 1e-4, float16: 2e-3, bfloat16: 2e-2 };

/** The benchmark's gate [B, N, H]: logsigmoid(z), z uniform in [2, 6], so g in [-0.13, -0.0025]. */
function benchGate(B: number, N: number, H: number, seed: number): ak.Tensor {
  // a small LCG is enough: the values only need to vary from token to token
  const g = new Float32Array(B * N * H);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < g.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const z = 2 + (x / 2 ** 32) * 4;
    g[i] = -Math.log1p(Math.exp(-z));
  }
  return ak.tensor(g, [B, N, H]);
}

async function validate(dtype: FloatDType, D: number, decay: number, gated: boolean) {
  const B = 1, N = 150, H = 2;
  const shape = [B, N, H, D];
  const q = ak.randn(shape, { dtype, seed: 21 }), k = ak.randn(shape, { dtype, seed: 22 });
  const v = ak.randn(shape, { dtype, seed: 23 }), dO = ak.randn(shape, { dtype, seed: 24 });
  const gate = gated ? benchGate(B, N, H, 25) : undefined;
  const r = ak.linearAttention(q, k, v, { decay, gate, returnFinalState: true });
  const g = r.backward(dO);
  const [qa, ka, va, da, out, st, dq, dk, dv, ga, dg] = await Promise.all(
    [q, k, v, dO, r.out, r.finalState!, g.dq, g.dk, g.dv, gate, g.dGate].map((t) => t?.toArray()),
  );
  const p = { B, N, H, Hkv: H, D, Dv: D, q: qa!, k: ka!, v: va! };
  const ref = ak.reference.referenceLinearAttention(p, { decay, gate: ga });
  const rg = ak.reference.referenceLinearAttentionBackward(p, da!, undefined, { decay, gate: ga });
  const errors: Record<string, number> = {
    out: relativeMaxError(out!, ref.out),
    finalState: relativeMaxError(st!, ref.finalState),
    dq: relativeMaxError(dq!, rg.dq),
    dk: relativeMaxError(dk!, rg.dk),
    dv: relativeMaxError(dv!, rg.dv),
  };
  // dGate is float32 computed in float32 for every input dtype: the float32 tolerance
  if (dg) errors.dGate = relativeMaxError(dg, rg.dGate) * (TOL[dtype] / TOL.float32);
  for (const t of [q, k, v, dO, r.out, r.finalState!, g.dq, g.dk, g.dv, gate, g.dGate]) t?.dispose();
  const tolerance = TOL[dtype];
  return { dtype, gated, ok: Object.values(errors).every((e) => e <= tolerance), errors, tolerance };
}

/** Wall times of the timed runs, and the least process CPU time of a run divided by the pool size. */
async function time(
  run: () => ak.Tensor[],
  warmup: number,
  repeats: number,
  threads: number,
  step: () => void,
): Promise<{ wall: number[]; cpu: number }> {
  const wall: number[] = [];
  let cpu = Infinity;
  for (let i = 0; i < warmup + repeats; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const outs = run();
    await ak.synchronize();
    const ms = msSince(t0);
    const c = process.cpuUsage(c0);
    for (const t of outs) t.dispose();
    if (i >= warmup) {
      wall.push(ms);
      cpu = Math.min(cpu, (c.user + c.system) / 1e3 / threads);
    }
    step();
  }
  return { wall, cpu };
}

/** Validates, then times linear attention (and dense attention for the crossover). */
export async function benchLinear(options: LinearBenchOptions = {}): Promise<LinearBenchReport> {
  const H = options.H ?? 8;
  const D = options.D ?? 64;
  const T = options.totalTokens ?? 65536;
  const Ns = options.Ns ?? [1024, 2048, 4096, 8192, 16384, 32768, 65536];
  const crossNs = options.crossoverNs ?? [64, 128, 256, 512];
  const dtypes = options.dtypes ?? ['float32', 'bfloat16'];
  const decay = options.decay ?? 0.99;
  const repeats = options.repeats ?? 3;
  const warmup = options.warmup ?? 1;
  const denseMaxN = options.denseMaxN ?? 4096;
  const doDense = options.dense ?? true;
  const gated = options.gated ?? true;
  const step = options.onStep ?? (() => {});
  const { isa, threads } = ak.info().cpu;
  for (const N of [...Ns, ...crossNs])
    if (T % N !== 0) throw new Error(`bench linear: N = ${N} does not divide totalTokens = ${T}`);

  const validation = [];
  for (const dtype of dtypes)
    for (const g of gated ? [false, true] : [false]) {
      validation.push(await validate(dtype, D, decay, g));
      step(`validate ${dtype}${g ? ' gated' : ''}`);
    }
  if (validation.some((v) => !v.ok))
    throw new Error(
      'bench linear: validation against the float64 reference failed, refusing to report timings: ' +
        JSON.stringify(validation.filter((v) => !v.ok)),
    );

  const rows: LinearBenchRow[] = [];
  const allNs = [...new Set([...crossNs, ...Ns])].sort((a, b) => a - b);
  for (const dtype of dtypes) {
    let denseRef: { N: number; ms: number } | null = null;
    for (const N of allNs) {
      const B = T / N;
      const shape = [B, N, H, D];
      const q = ak.randn(shape, { dtype, seed: 1 }), k = ak.randn(shape, { dtype, seed: 2 }), v = ak.randn(shape, { dtype, seed: 3 });
      await ak.synchronize();
      const label = `linear ${dtype} B=${B} N=${N}`;
      const fwd = await time(() => [ak.linearAttention(q, k, v, { decay }).out], warmup, repeats, threads, () => step(`${label} forward`));
      let denseMs: number | null = null;
      let denseCpu = 0;
      let denseEstimated = false;
      if (doDense) {
        if (N <= denseMaxN) {
          // Dense runs are long: one warm-up at most and at most 2 timed runs.
          const t = await time(
            () => {
              const r = ak.attention(q, k, v, { causal: true });
              return [r.out, r.lse];
            },
            Math.min(warmup, 1),
            Math.min(repeats, 2),
            threads,
            () => step(`dense ${dtype} B=${B} N=${N}`),
          );
          denseMs = median(t.wall);
          denseCpu = t.cpu;
          denseRef = { N, ms: denseMs };
        } else if (denseRef) {
          denseMs = (denseRef.ms * N) / denseRef.N;
          denseEstimated = true;
        }
      }
      const med = median(fwd.wall);
      const flop = linearFlop(B, N, H, D, D, 'forward');
      rows.push({
        op: 'linearAttention', pass: 'forward', dtype, B, N, H, D, gated: false, vsUngated: null,
        medianMs: med, minMs: Math.min(...fwd.wall), flop, gflops: flop / (med * 1e6), usPerToken: (med * 1e3) / T,
        cpuMsPerThread: fwd.cpu, denseMs, denseEstimated, speedup: denseMs === null ? null : denseMs / med,
      });
      const gate = gated && Ns.includes(N) ? benchGate(B, N, H, 5) : null;
      if (gate) {
        const gf = await time(() => [ak.linearAttention(q, k, v, { decay, gate }).out], warmup, repeats, threads, () => step(`${label} gated forward`));
        const gm = median(gf.wall);
        rows.push({
          op: 'linearAttention', pass: 'forward', dtype, B, N, H, D, gated: true, vsUngated: gm / med,
          medianMs: gm, minMs: Math.min(...gf.wall), flop, gflops: flop / (gm * 1e6), usPerToken: (gm * 1e3) / T,
          cpuMsPerThread: gf.cpu, denseMs, denseEstimated, speedup: denseMs === null ? null : denseMs / gm,
        });
      }
      if (denseMs !== null && !denseEstimated) {
        const dflop = denseCausalFlop(B, N, H, D);
        rows.push({
          op: 'attention', pass: 'forward', dtype, B, N, H, D, gated: false, vsUngated: null,
          medianMs: denseMs, minMs: denseMs, flop: dflop, gflops: dflop / (denseMs * 1e6), usPerToken: (denseMs * 1e3) / T,
          cpuMsPerThread: denseCpu, denseMs: null, denseEstimated: false, speedup: null,
        });
      }
      if (options.backward && Ns.includes(N)) {
        const dO = ak.randn(shape, { dtype, seed: 4 });
        const bwd = await time(
          () => {
            const g = ak.linearAttentionBackward(q, k, v, dO, { decay });
            return [g.dq, g.dk, g.dv];
          },
          warmup,
          repeats,
          threads,
          () => step(`${label} backward`),
        );
        const bm = median(bwd.wall);
        const bflop = linearFlop(B, N, H, D, D, 'backward');
        rows.push({
          op: 'linearAttention', pass: 'backward', dtype, B, N, H, D, gated: false, vsUngated: null,
          medianMs: bm, minMs: Math.min(...bwd.wall), flop: bflop, gflops: bflop / (bm * 1e6), usPerToken: (bm * 1e3) / T,
          cpuMsPerThread: bwd.cpu, denseMs: null, denseEstimated: false, speedup: null,
        });
        if (gate) {
          const gb = await time(
            () => {
              const g = ak.linearAttentionBackward(q, k, v, dO, { decay, gate });
              return [g.dq, g.dk, g.dv, g.dGate!];
            },
            warmup,
            repeats,
            threads,
            () => step(`${label} gated backward`),
          );
          const gbm = median(gb.wall);
          rows.push({
            op: 'linearAttention', pass: 'backward', dtype, B, N, H, D, gated: true, vsUngated: gbm / bm,
            medianMs: gbm, minMs: Math.min(...gb.wall), flop: bflop, gflops: bflop / (gbm * 1e6), usPerToken: (gbm * 1e3) / T,
            cpuMsPerThread: gb.cpu, denseMs: null, denseEstimated: false, speedup: null,
          });
        }
        dO.dispose();
      }
      for (const t of [q, k, v, gate]) t?.dispose();
    }
  }

  const flatness: LinearBenchReport['flatness'] = {};
  const crossoverN: LinearBenchReport['crossoverN'] = {};
  for (const dtype of dtypes) {
    const lin = rows.filter((r) => r.op === 'linearAttention' && r.pass === 'forward' && !r.gated && r.dtype === dtype);
    const flat = lin.filter((r) => r.N >= 1024 && r.N <= 65536).map((r) => (r.minMs * 1e3) / (r.B * r.N));
    if (flat.length > 0) {
      const mean = flat.reduce((a, b) => a + b, 0) / flat.length;
      flatness[dtype] = (100 * Math.max(...flat.map((x) => Math.abs(x - mean)))) / mean;
    }
    // smallest N such that linear wins at it and at every longer timed N
    let cross: number | null = null;
    for (const r of [...lin].reverse()) {
      if (r.speedup === null || r.speedup <= 1) break;
      cross = r.N;
    }
    crossoverN[dtype] = doDense ? cross : null;
  }
  return { isa, threads, validation, rows, flatness, crossoverN };
}

/** The report as a plain-text table plus the summary lines. */
export function formatLinearReport(rep: LinearBenchReport): string {
  const head = ['op', 'pass', 'dtype', 'B', 'N', 'ms', 'best ms', 'cpu/thr ms', 'GFLOP/s', 'us/token', 'dense ms', 'speedup', 'vs ungated'];
  const body = rep.rows.map((r) => [
    r.gated ? `${r.op} gated` : r.op,
    r.pass,
    r.dtype,
    String(r.B),
    String(r.N),
    fmt(r.medianMs),
    fmt(r.minMs),
    fmt(r.cpuMsPerThread),
    fmt(r.gflops),
    fmt(r.usPerToken),
    r.denseMs === null ? '' : `${fmt(r.denseMs)}${r.denseEstimated ? ' (est.)' : ''}`,
    r.speedup === null ? '' : `${fmt(r.speedup)}x`,
    r.vsUngated === null ? '' : `${fmt(r.vsUngated)}x`,
  ]);
  const lines = [
    `linear attention bench: cpu, kernel level ${rep.isa}, ${rep.threads} threads; H=${rep.rows[0]?.H}, D=${rep.rows[0]?.D}, ` +
      `B*N=${rep.rows[0] ? rep.rows[0].B * rep.rows[0].N : 0}`,
    formatTable([head, ...body], new Set([3, 4, 5, 6, 7, 8, 9, 10, 11, 12])),
  ];
  for (const [dtype, f] of Object.entries(rep.flatness))
    lines.push(`${dtype}: per-token forward time within ±${f!.toFixed(1)}% of its mean over N = 1024..65536 (goal ±15%)`);
  for (const [dtype, n] of Object.entries(rep.crossoverN))
    lines.push(`${dtype}: linear attention beats dense causal attention from N = ${n ?? 'n/a (not within the timed range)'}`);
  const g = rep.rows.find((r) => r.op === 'linearAttention' && r.pass === 'forward' && !r.gated && r.dtype === 'float32' && r.N === 16384);
  const gg = rep.rows.find((r) => r.gated && r.pass === 'forward' && r.dtype === 'float32' && r.N === 16384);
  const busy = rep.rows.filter((r) => r.minMs > 1.3 * r.cpuMsPerThread).length;
  if (busy > 0)
    lines.push(
      `note: ${busy} of ${rep.rows.length} rows took > 1.3x their CPU time per thread: other work shared the cores, ` +
        'their wall times are inflated',
    );
  if (g)
    lines.push(
      `float32 causal forward at N = 16384: ${fmt(g.gflops)} GFLOP/s median, ${fmt(g.flop / (g.minMs * 1e6))} best (goal >= 100)`,
    );
  if (g && gg)
    lines.push(
      `float32 gated causal forward at N = 16384: ${fmt(gg.gflops)} GFLOP/s median, ${fmt(gg.vsUngated!)}x the constant-decay median, ` +
        `${fmt(gg.minMs / g.minMs)}x best to best, ${fmt(gg.cpuMsPerThread / g.cpuMsPerThread)}x by CPU time per thread (goal <= 1.3x)`,
    );
  return lines.join('\n');
}
