/**
 * Benchmark of dense fused attention (`attention`, forward and backward) through the public API.
 *
 * Validation first: for every (dtype, mask, head dim) to be timed, a small problem (N = 150, two
 * tiles and a tail) is compared with the float64 reference, backward included when it is timed;
 * if any comparison fails, no timing is reported. Then, per configuration: one warm-up run, then
 * `repeats` timed runs, each = enqueue + `synchronize()` (no copy back to JavaScript), measured with
 * `process.hrtime.bigint()`; the backward timing covers only the backward call and its wait. The
 * median is reported, with GFLOP/s by the DESIGN §10 convention (forward = 4 * visible
 * query-key pairs * D, backward = 2.5 x forward) and the fraction of the estimated peak.
 */
import * as ak from '../index.js';
import type { FloatDType } from '../index.js';
import {
  absMaxError,
  median,
  msSince,
  peakGflops,
  relativeMaxError,
  type ComputeKind,
} from './common.js';

/** Mask of the benchmarked problem. */
export type MaskName = 'none' | 'causal';
export type Pass = 'forward' | 'backward';

/** A benchmark shape: q, k, v all [B, N, H, D] (no GQA, Nq = Nk = N, Dv = D). */
export interface BenchShape {
  B: number;
  N: number;
  H: number;
  D: number;
}

export interface AttentionBenchOptions {
  shapes: readonly BenchShape[];
  dtypes: readonly FloatDType[];
  masks: readonly MaskName[];
  /** Time the backward as well as the forward. */
  backward: boolean;
  /** Timed runs per configuration and pass (the median is reported). */
  repeats: number;
  /** Untimed runs before the timed ones. */
  warmup: number;
  /** Called after every validation and every (warm-up or timed) run. */
  onStep?: (label: string) => void;
}

export interface ValidationResult {
  dtype: FloatDType;
  mask: MaskName;
  headDim: number;
  backward: boolean;
  ok: boolean;
  /** Per output: relative max error (out, dq, dk, dv) or absolute max error (lse). */
  errors: Record<string, number>;
  tolerances: Record<string, number>;
}

export interface AttentionTiming {
  op: 'attention';
  /** [B, N, H, D] */
  shape: [number, number, number, number];
  dtype: FloatDType;
  mask: MaskName;
  pass: Pass;
  repeats: number;
  medianMs: number;
  minMs: number;
  /** Floating-point operations of one run by the DESIGN §10 convention. */
  flop: number;
  /** flop / median time. */
  gflops: number;
  /** Which unit bounds this pass on this kernel level. */
  compute: ComputeKind;
  /** Estimated peak for `compute` at the thread count in use; null when unknown for this CPU. */
  peakGflops: number | null;
  /** 100 * gflops / peakGflops, or null. */
  peakPercent: number | null;
}

export interface AttentionBenchReport {
  isa: string;
  threads: number;
  validation: ValidationResult[];
  results: AttentionTiming[];
}

/** Thrown when a validation fails: the report carries the failed comparisons and no timings. */
export class ValidationFailure extends Error {
  readonly validation: ValidationResult[];
  /** `what` opens the message: what was validated. */
  constructor(validation: ValidationResult[], what = 'validation') {
    const bad = validation.filter((v) => !v.ok);
    super(
      `${what} against the float64 reference failed, refusing to report timings: ` +
        bad
          .map((v) => {
            const what = Object.keys(v.errors)
              .filter((k) => !(v.errors[k]! <= v.tolerances[k]!))
              .map((k) => `${k} error ${v.errors[k]!.toExponential(2)} > ${v.tolerances[k]!.toExponential(0)}`)
              .join(', ');
            return `${v.dtype} ${v.mask} D=${v.headDim}${v.backward ? ' (+backward)' : ''}: ${what}`;
          })
          .join('; '),
    );
    this.name = new.target.name;
    this.validation = validation;
  }
}

/**
 * Query-key pairs the dense mask lets through, summed over the Nq rows of one (batch, head): row i
 * is aligned at a = i + Nk - Nq and sees keys max(0, a - left) ... min(Nk - 1, a + right), right
 * clamped to 0 under `causal` (the semantics of `attention`, docs/attention.md). Exact, O(Nq).
 */
export function visiblePairs(
  Nq: number,
  Nk: number,
  causal: boolean,
  window: readonly [number, number] = [-1, -1],
): number {
  const [left, right] = window;
  let pairs = 0;
  for (let i = 0; i < Nq; i++) {
    const a = i + Nk - Nq;
    let hi = Nk - 1;
    if (right >= 0) hi = Math.min(hi, a + right);
    if (causal) hi = Math.min(hi, a);
    const lo = left >= 0 ? Math.max(0, a - left) : 0;
    if (hi >= lo) pairs += hi - lo + 1;
  }
  return pairs;
}

/** FLOPs of one forward (4 * pairs * D) or backward (2.5 x forward) pass. */
export function attentionFlop(s: BenchShape, mask: MaskName, pass: Pass): number {
  const fwd = 4 * s.B * s.H * visiblePairs(s.N, s.N, mask === 'causal') * s.D;
  return pass === 'backward' ? 2.5 * fwd : fwd;
}

/**
 * The unit that bounds a pass (native/cpu/attention.cc): on amx, bfloat16 forward and backward
 * GEMMs run on AMX tiles; on avx512bf16, the bfloat16 forward uses the pair dot product and the
 * backward widens to float32; everything else (float32, float16) computes in float32 FMAs.
 */
export function computeKind(isa: string, dtype: FloatDType, pass: Pass): ComputeKind {
  if (dtype !== 'bfloat16') return 'fp32-fma';
  if (isa === 'amx') return 'amx-bf16';
  if (isa === 'avx512bf16' && pass === 'forward') return 'bf16-dot';
  return 'fp32-fma';
}

/**
 * Validation tolerances. float32: the kernels differ from the float64 reference only by float32
 * rounding (and a degree-6 exp2 polynomial, relative error ~1e-7). float16/bfloat16: outputs are
 * rounded to the dtype (2^-11 / 2^-8 relative) and the bf16 path rounds P to bfloat16 too.
 */
export const TOLERANCES: Readonly<Record<FloatDType, { out: number; lse: number; grad: number }>> = {
  // Measured at D = 32..128 (avx512bf16/amx): float32 <= 1.4e-6, float16 <= 4e-4, bfloat16 <= 6e-3
  // (out and gradients); LSE <= 1e-6 for every dtype. The margins leave room for other levels and
  // head dims, not for a wrong result.
  float32: { out: 2e-5, lse: 2e-5, grad: 2e-5 },
  float16: { out: 2e-3, lse: 1e-4, grad: 2e-3 },
  bfloat16: { out: 2e-2, lse: 1e-3, grad: 3e-2 },
};

/** Sequence length of the validation problem: two full 64-tiles and a tail. */
export const VALIDATION_N = 150;
const VALIDATION_H = 2;

/**
 * Compares one small problem (and its backward when asked) on `device` with the float64 reference,
 * against `tol` (default: the CPU's tolerances for `dtype`).
 */
export async function validateAttention(
  dtype: FloatDType,
  mask: MaskName,
  D: number,
  backward: boolean,
  device: ak.Device = 'cpu',
  tol: { out: number; lse: number; grad: number } = TOLERANCES[dtype],
): Promise<ValidationResult> {
  const B = 1;
  const N = VALIDATION_N;
  const H = VALIDATION_H;
  const shape = [B, N, H, D];
  const causal = mask === 'causal';
  const owned: ak.Tensor[] = [];
  const keep = <T extends ak.Tensor>(t: T): T => (owned.push(t), t);
  try {
    // on a CUDA device, the CPU's numbers copied (randn), on that device's default stream
    const rand = (seed: number) => keep(ak.randn(shape, { dtype, seed, device }));
    const [q, k, v] = [rand(11), rand(12), rand(13)];
    const dOut = backward ? rand(14) : null;
    const r = ak.attention(q, k, v, { causal });
    keep(r.out);
    keep(r.lse);
    const g = dOut ? r.backward(dOut) : null;
    if (g) [g.dq, g.dk, g.dv].forEach(keep);
    // The reference takes the inputs as stored (already rounded to dtype).
    const [qa, ka, va, out, lse] = await Promise.all([q, k, v, r.out, r.lse].map((t) => t.toArray()));
    const p = { B, Nq: N, Nk: N, H, Hkv: H, D, Dv: D, q: qa!, k: ka!, v: va! };
    const ref = ak.reference.referenceAttention(p, { causal });
    const errors: Record<string, number> = {
      out: relativeMaxError(out!, ref.out),
      lse: absMaxError(lse!, ref.lse),
    };
    const tolerances: Record<string, number> = { out: tol.out, lse: tol.lse };
    if (g && dOut) {
      const [dq, dk, dv, dOa] = await Promise.all([g.dq, g.dk, g.dv, dOut].map((t) => t.toArray()));
      const rg = ak.reference.referenceAttentionBackward(p, dOa!, undefined, { causal });
      errors.dq = relativeMaxError(dq!, rg.dq);
      errors.dk = relativeMaxError(dk!, rg.dk);
      errors.dv = relativeMaxError(dv!, rg.dv);
      tolerances.dq = tolerances.dk = tolerances.dv = tol.grad;
    }
    // A NaN error compares false, so it fails.
    const ok = Object.keys(errors).every((key) => errors[key]! <= tolerances[key]!);
    return { dtype, mask, headDim: D, backward, ok, errors, tolerances };
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** Number of onStep calls a run with these options makes (for a progress bar). */
export function countSteps(o: AttentionBenchOptions): number {
  const validations = new Set(o.shapes.map((s) => s.D)).size * o.dtypes.length * o.masks.length;
  const perPass = o.warmup + o.repeats;
  const configs = o.shapes.length * o.dtypes.length * o.masks.length;
  return validations + configs * perPass * (o.backward ? 2 : 1);
}

function label(s: BenchShape, dtype: FloatDType, mask: MaskName, what: string): string {
  return `attention ${s.B},${s.N},${s.H},${s.D} ${dtype} ${mask} ${what}`;
}

/** Validates, then times every configuration. Throws ValidationFailure before timing anything. */
export async function benchAttention(o: AttentionBenchOptions): Promise<AttentionBenchReport> {
  const step = o.onStep ?? (() => {});
  const { isa, threads } = ak.info().cpu;

  const validation: ValidationResult[] = [];
  for (const D of new Set(o.shapes.map((s) => s.D)))
    for (const dtype of o.dtypes)
      for (const mask of o.masks) {
        validation.push(await validateAttention(dtype, mask, D, o.backward));
        step(`validate ${dtype} ${mask} D=${D}`);
      }
  if (validation.some((v) => !v.ok)) throw new ValidationFailure(validation);

  const results: AttentionTiming[] = [];
  const record = (s: BenchShape, dtype: FloatDType, mask: MaskName, pass: Pass, times: number[]) => {
    const flop = attentionFlop(s, mask, pass);
    const med = median(times);
    const gflops = flop / (med * 1e6);
    const compute = computeKind(isa, dtype, pass);
    const peak = peakGflops(isa, compute, threads);
    results.push({
      op: 'attention',
      shape: [s.B, s.N, s.H, s.D],
      dtype,
      mask,
      pass,
      repeats: times.length,
      medianMs: med,
      minMs: Math.min(...times),
      flop,
      gflops,
      compute,
      peakGflops: peak,
      peakPercent: peak === null ? null : (100 * gflops) / peak,
    });
  };

  for (const s of o.shapes)
    for (const dtype of o.dtypes)
      for (const mask of o.masks) {
        const shape = [s.B, s.N, s.H, s.D];
        const causal = mask === 'causal';
        const q = ak.randn(shape, { dtype, seed: 1 });
        const k = ak.randn(shape, { dtype, seed: 2 });
        const v = ak.randn(shape, { dtype, seed: 3 });
        const dOut = o.backward ? ak.randn(shape, { dtype, seed: 4 }) : null;
        await ak.synchronize();
        try {
          const fwd: number[] = [];
          for (let i = 0; i < o.warmup + o.repeats; i++) {
            const t0 = process.hrtime.bigint();
            const r = ak.attention(q, k, v, { causal });
            await ak.synchronize();
            const ms = msSince(t0);
            r.out.dispose();
            r.lse.dispose();
            if (i >= o.warmup) fwd.push(ms);
            step(label(s, dtype, mask, 'forward'));
          }
          record(s, dtype, mask, 'forward', fwd);

          if (dOut) {
            const r = ak.attention(q, k, v, { causal });
            await ak.synchronize();
            const bwd: number[] = [];
            for (let i = 0; i < o.warmup + o.repeats; i++) {
              const t0 = process.hrtime.bigint();
              const g = r.backward(dOut);
              await ak.synchronize();
              const ms = msSince(t0);
              g.dq.dispose();
              g.dk.dispose();
              g.dv.dispose();
              if (i >= o.warmup) bwd.push(ms);
              step(label(s, dtype, mask, 'backward'));
            }
            r.out.dispose();
            r.lse.dispose();
            record(s, dtype, mask, 'backward', bwd);
          }
        } finally {
          for (const t of [q, k, v, dOut]) t?.dispose();
        }
      }
  return { isa, threads, validation, results };
}
