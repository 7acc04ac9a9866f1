/**
 * Shared test utilities: deterministic random inputs, read-back as Float64Array, error metrics,
 * dtype rounding, and the *naive* low-precision attention (the yardstick for tolerances: a kernel
 * may be at most a small multiple as wrong as a naive PyTorch-style implementation in the same
 * dtype, measured against the float64 reference on the same inputs).
 */
import { randn, tensor, type Tensor, type FloatDType } from '../src/index.ts';
import { attentionAllows, type RefMaskOptions, type RefProblem } from '../src/reference/attention.ts';

export interface Shape {
  B: number;
  Nq: number;
  Nk: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
}

/** A shape with one sequence length (linear attention; merge's blocks of one attention). */
export type SeqShape = Omit<Shape, 'Nq' | 'Nk'> & { N: number };

/** Reads a tensor back as float64 (float16/bfloat16 widen exactly). */
export async function read64(t: Tensor): Promise<Float64Array> {
  const a = await t.toArray();
  return Float64Array.from(a as ArrayLike<number>);
}

/** randn in `dtype`, read back: the exact values the kernel sees. */
export async function randT(
  shape: readonly number[],
  opts: { seed: number; dtype?: FloatDType },
): Promise<{ t: Tensor; a: Float64Array }> {
  const t = randn(shape, { seed: opts.seed, dtype: opts.dtype ?? 'float32' });
  return { t, a: await read64(t) };
}

/** A tensor from float64 data (rounded to `dtype` by the library, round to nearest even). */
export async function fromF64(
  data: ArrayLike<number>,
  shape: readonly number[],
  dtype: FloatDType = 'float32',
): Promise<{ t: Tensor; a: Float64Array }> {
  const t = tensor(Float32Array.from(data), shape, { dtype });
  return { t, a: await read64(t) };
}

export interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** float64 copies of q, k, v as the kernel sees them, with the shape: a RefProblem. */
  p: RefProblem;
}

/** q [B, Nq, H, D], k [B, Nk, Hkv, D], v [B, Nk, Hkv, Dv] from seeds seed, seed+1, seed+2. */
export async function makeInputs(s: Shape, opts: { seed: number; dtype?: FloatDType }): Promise<Inputs> {
  const dtype = opts.dtype ?? 'float32';
  const q = await randT([s.B, s.Nq, s.H, s.D], { seed: opts.seed, dtype });
  const k = await randT([s.B, s.Nk, s.Hkv, s.D], { seed: opts.seed + 1, dtype });
  const v = await randT([s.B, s.Nk, s.Hkv, s.Dv], { seed: opts.seed + 2, dtype });
  return { q: q.t, k: k.t, v: v.t, p: { ...s, q: q.a, k: k.a, v: v.a } };
}

/**
 * max |actual - expected|. Infinite expected values (the -Infinity LSE of empty rows) must be
 * matched exactly, otherwise the error is Infinity; NaN anywhere is Infinity.
 */
export function maxAbsErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let m = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a) || Number.isNaN(e)) return Infinity;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a !== e) return Infinity;
      continue;
    }
    const d = Math.abs(a - e);
    if (d > m) m = d;
  }
  return m;
}

/** Index and values of the worst element, for failure messages. */
export function worst(actual: ArrayLike<number>, expected: ArrayLike<number>): string {
  let m = -1;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const d = Number.isFinite(a) && Number.isFinite(e) ? Math.abs(a - e) : a === e ? 0 : Infinity;
    if (d > m || Number.isNaN(d)) {
      m = d;
      at = i;
    }
  }
  return at < 0 ? 'empty' : `at ${at}: got ${actual[at]}, expected ${expected[at]}`;
}

/** max |x| over finite entries (the scale of a quantity). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    if (Number.isFinite(x) && Math.abs(x) > m) m = Math.abs(x);
  }
  return m;
}

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normals from `rng` (Box-Muller), as float64. */
export function gaussian(n: number, seed: number): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = 1 - r();
    const u2 = r();
    out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return out;
}

// ------------------------------------------------------------------ dtype rounding

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Round to bfloat16 (via float32, ties to even), as the library and PyTorch do. */
export function roundBf16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return NaN;
  const r = (u + 0x7fff + ((u >>> 16) & 1)) >>> 0;
  u32buf[0] = (r & 0xffff0000) >>> 0;
  return f32buf[0]!;
}

/** Round to IEEE float16 (via float32, ties to even; subnormals; overflow to Infinity). */
export function roundF16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  const a = (u & 0x7fffffff) >>> 0;
  if (a >= 0x7f800000) return f32buf[0]!; // Inf, NaN
  const sign = u & 0x80000000 ? -1 : 1;
  if (a >= 0x477ff000) return sign * Infinity; // >= 65520
  if (a >= 0x38800000) {
    // normal float16: keep 10 mantissa bits, ties to even
    const r = (a + 0xfff + ((a >>> 13) & 1)) & ~0x1fff;
    u32buf[0] = ((u & 0x80000000) | r) >>> 0;
    return f32buf[0]!;
  }
  // subnormal float16 (or zero): a multiple of 2^-24, ties to even
  const m = Math.abs(f32buf[0]!) * 2 ** 24;
  const fl = Math.floor(m);
  const diff = m - fl;
  const r = diff > 0.5 ? fl + 1 : diff < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
  return sign * r * 2 ** -24;
}

export function rounder(dtype: FloatDType): (x: number) => number {
  return dtype === 'float32' ? Math.fround : dtype === 'float16' ? roundF16 : roundBf16;
}

// ------------------------------------------------------------------ naive low-precision attention

/**
 * A naive implementation in `dtype`, rounding the way eager PyTorch would:
 *   S = ((q @ k^T) -> dtype) * scale -> dtype; masked entries -inf
 *   P = softmax(S.float()) (float32), lse = logsumexp(S.float()) (float32), P -> dtype
 *   out = (P @ v) accumulated in float32 -> dtype
 * Backward (autograd through the above):
 *   dV = P^T dO -> dtype; dP = dO V^T -> dtype; dS = P_f32 * (dP - rowsum(P_f32 * dP) + dLse) -> dtype;
 *   dS *= scale -> dtype; dQ = dS K -> dtype; dK = dS^T Q -> dtype.
 * Every float32 accumulation rounds after each step (Math.fround).
 */
export function naiveAttention(
  p: RefProblem,
  opts: RefMaskOptions,
  dtype: FloatDType,
  grad?: { dOut: ArrayLike<number>; dLse?: ArrayLike<number> },
): { out: Float64Array; lse: Float64Array; dq?: Float64Array; dk?: Float64Array; dv?: Float64Array } {
  const allows = (i: number, j: number) => attentionAllows(i, j, p.Nq, p.Nk, opts);
  return naiveMasked(p, allows, opts.scale ?? 1 / Math.sqrt(p.D), dtype, grad);
}

type NaiveGrad = { dOut: ArrayLike<number>; dLse?: ArrayLike<number> };
type NaiveResult = { out: Float64Array; lse: Float64Array; dq?: Float64Array; dk?: Float64Array; dv?: Float64Array };

/** Which keys a query sees, per batch entry and head (block-sparse masks differ per (b, h)). */
export type Allows = (i: number, j: number, b: number, h: number) => boolean;

/**
 * naiveAttention with an arbitrary visibility (block-sparse, neighborhood): the same eager rounding
 * steps over the keys `allows` lets each query see, in increasing key order. A query that sees no key
 * gets out 0, lse -Infinity and zero gradients.
 */
export function naiveMasked(p: RefProblem, allows: Allows, scale: number, dtype: FloatDType, grad: NaiveGrad): Required<NaiveResult>;
export function naiveMasked(p: RefProblem, allows: Allows, scale: number, dtype: FloatDType, grad?: NaiveGrad): NaiveResult;
export function naiveMasked(p: RefProblem, allows: Allows, scale: number, dtype: FloatDType, grad?: NaiveGrad): NaiveResult {
  const f = Math.fround;
  const r = rounder(dtype);
  const { B, Nq, Nk, H, Hkv, D, Dv } = p;
  const group = H / Hkv;
  const out = new Float64Array(B * Nq * H * Dv);
  const lse = new Float64Array(B * Nq * H);
  const dq = grad ? new Float64Array(B * Nq * H * D) : undefined;
  // float32 accumulators for dk/dv across all query rows and heads of a kv head, rounded at the end
  const dkAcc = grad ? new Float64Array(B * Nk * Hkv * D) : undefined;
  const dvAcc = grad ? new Float64Array(B * Nk * Hkv * Dv) : undefined;
  const S = new Float64Array(Nk);
  const Pf = new Float64Array(Nk);
  const dP = new Float64Array(Nk);
  const dS = new Float64Array(Nk);
  const vis: number[] = [];
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Nq; i++) {
        const li = (b * Nq + i) * H + h;
        const qo = li * D;
        const oo = li * Dv;
        vis.length = 0;
        let mx = -Infinity;
        for (let j = 0; j < Nk; j++) {
          if (!allows(i, j, b, h)) continue;
          vis.push(j);
          const ko = ((b * Nk + j) * Hkv + hk) * D;
          let acc = 0;
          for (let d = 0; d < D; d++) acc = f(acc + p.q[qo + d]! * p.k[ko + d]!);
          S[j] = r(r(acc) * scale);
          if (S[j]! > mx) mx = S[j]!;
        }
        if (vis.length === 0) {
          lse[li] = -Infinity;
          continue; // out stays 0; gradients 0
        }
        let sum = 0;
        for (const j of vis) {
          Pf[j] = f(Math.exp(S[j]! - mx));
          sum = f(sum + Pf[j]!);
        }
        lse[li] = f(mx + f(Math.log(sum)));
        for (const j of vis) Pf[j] = f(Pf[j]! / sum);
        for (let e = 0; e < Dv; e++) {
          let acc = 0;
          for (const j of vis) acc = f(acc + r(Pf[j]!) * p.v[((b * Nk + j) * Hkv + hk) * Dv + e]!);
          out[oo + e] = r(acc);
        }
        if (!grad) continue;
        const dO = grad.dOut;
        let rowDot = 0;
        for (const j of vis) {
          const vo = ((b * Nk + j) * Hkv + hk) * Dv;
          let acc = 0;
          for (let e = 0; e < Dv; e++) acc = f(acc + dO[oo + e]! * p.v[vo + e]!);
          dP[j] = r(acc);
          rowDot = f(rowDot + Pf[j]! * dP[j]!);
          // dV_j += P_ij dO_i (P in dtype, as autograd through P -> dtype @ v uses the rounded P)
          for (let e = 0; e < Dv; e++) dvAcc![vo + e] = f(dvAcc![vo + e]! + r(Pf[j]!) * dO[oo + e]!);
        }
        const dl = grad.dLse ? grad.dLse[li]! : 0;
        for (const j of vis) dS[j] = r(r(f(Pf[j]! * f(f(dP[j]! - rowDot) + dl))) * scale);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (const j of vis) acc = f(acc + dS[j]! * p.k[((b * Nk + j) * Hkv + hk) * D + d]!);
          dq![qo + d] = r(acc);
        }
        for (const j of vis) {
          const ko = ((b * Nk + j) * Hkv + hk) * D;
          for (let d = 0; d < D; d++) dkAcc![ko + d] = f(dkAcc![ko + d]! + dS[j]! * p.q[qo + d]!);
        }
      }
    }
  if (!grad) return { out, lse };
  return { out, lse, dq, dk: dkAcc!.map(r), dv: dvAcc!.map(r) };
}

/** [B, N, heads, dim] flat array, rows [n0, n1) of every batch entry. */
export function sliceSeq(a: ArrayLike<number>, B: number, N: number, rowElems: number, n0: number, n1: number): Float64Array {
  const out = new Float64Array(B * (n1 - n0) * rowElems);
  for (let b = 0; b < B; b++)
    for (let n = n0; n < n1; n++)
      for (let x = 0; x < rowElems; x++) out[(b * (n1 - n0) + n - n0) * rowElems + x] = a[(b * N + n) * rowElems + x]!;
  return out;
}

/** Concatenates [B, N_i, rowElems] arrays along the sequence axis. */
export function concatSeq(parts: { a: ArrayLike<number>; N: number }[], B: number, rowElems: number): Float64Array {
  const Nt = parts.reduce((s, p) => s + p.N, 0);
  const out = new Float64Array(B * Nt * rowElems);
  for (let b = 0; b < B; b++) {
    let n0 = 0;
    for (const p of parts) {
      for (let n = 0; n < p.N; n++)
        for (let x = 0; x < rowElems; x++) out[(b * Nt + n0 + n) * rowElems + x] = p.a[(b * p.N + n) * rowElems + x]!;
      n0 += p.N;
    }
  }
  return out;
}
