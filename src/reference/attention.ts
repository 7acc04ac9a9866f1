/**
 * Float64 reference for dense attention and attention merging, written straight from the math with
 * plain loops (docs/attention.md). Ground truth for the kernels; itself checked by finite
 * differences (test/reference.test.ts). Arrays are flat, row-major, in the op's layout.
 */

/** A dense attention problem: sizes and flat row-major q, k, v. */
export interface RefProblem {
  B: number;
  Nq: number;
  Nk: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  /** [B, Nq, H, D] */
  q: ArrayLike<number>;
  /** [B, Nk, Hkv, D] */
  k: ArrayLike<number>;
  /** [B, Nk, Hkv, Dv] */
  v: ArrayLike<number>;
}

/** The mask and scale of a reference attention (causal, window, or any visibility rule). */
export interface RefMaskOptions {
  causal?: boolean;
  window?: readonly [number, number];
  scale?: number;
  /**
   * Visibility of key j to query i, replacing causal/window (how other ops' references, e.g.
   * neighborhood attention, reuse this dense masked attention).
   */
  allows?: (i: number, j: number, b: number, h: number) => boolean;
}

function visible(i: number, j: number, Nq: number, Nk: number, opts: RefMaskOptions, b: number, h: number): boolean {
  return opts.allows ? opts.allows(i, j, b, h) : attentionAllows(i, j, Nq, Nk, opts);
}

/**
 * May query i see key j? Query i is aligned at a = i + Nk - Nq (bottom-right); it sees j when
 * a - left <= j <= a + right (-1 = unbounded); causal means additionally j <= a.
 */
export function attentionAllows(i: number, j: number, Nq: number, Nk: number, opts: RefMaskOptions = {}): boolean {
  const a = i + Nk - Nq;
  if (opts.causal && j > a) return false;
  const [left, right] = opts.window ?? [-1, -1];
  if (left >= 0 && j < a - left) return false;
  if (right >= 0 && j > a + right) return false;
  return true;
}

/** A reference forward: out and the natural-log LSE. */
export interface RefForward {
  /** [B, Nq, H, Dv] */
  out: Float64Array;
  /** [B, Nq, H], natural log; -Infinity for rows with no visible key */
  lse: Float64Array;
}

/** Scores s_j = scale * <q_i, k_j> over visible j; lse = log sum exp s; out = sum softmax(s)_j v_j. */
export function referenceAttention(p: RefProblem, opts: RefMaskOptions = {}): RefForward {
  const { B, Nq, Nk, H, Hkv, D, Dv } = p;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const group = H / Hkv;
  const out = new Float64Array(B * Nq * H * Dv);
  const lse = new Float64Array(B * Nq * H);
  const s = new Float64Array(Nk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Nq; i++) {
        const qo = ((b * Nq + i) * H + h) * D;
        let mx = -Infinity;
        for (let j = 0; j < Nk; j++) {
          if (!visible(i, j, Nq, Nk, opts, b, h)) {
            s[j] = -Infinity;
            continue;
          }
          const ko = ((b * Nk + j) * Hkv + hk) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += p.q[qo + d]! * p.k[ko + d]!;
          s[j] = scale * dot;
          mx = Math.max(mx, s[j]!);
        }
        const li = (b * Nq + i) * H + h;
        const oo = li * Dv;
        if (mx === -Infinity) {
          lse[li] = -Infinity;
          continue;
        }
        let sum = 0;
        for (let j = 0; j < Nk; j++) if (s[j] !== -Infinity) sum += Math.exp(s[j]! - mx);
        lse[li] = mx + Math.log(sum);
        for (let j = 0; j < Nk; j++) {
          if (s[j] === -Infinity) continue;
          const w = Math.exp(s[j]! - lse[li]!);
          const vo = ((b * Nk + j) * Hkv + hk) * Dv;
          for (let e = 0; e < Dv; e++) out[oo + e]! += w * p.v[vo + e]!;
        }
      }
    }
  return { out, lse };
}

/** Reference gradients for q, k, v (their shapes). */
export interface RefGrads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
}

/**
 * Gradients of L = <dOut, out> + <dLse, lse>: with P the softmax, dV_j = sum_i P_ij dOut_i,
 * dP_ij = <dOut_i, v_j>, dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij' + dLse_i),
 * dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i.
 */
export function referenceAttentionBackward(
  p: RefProblem,
  dOut: ArrayLike<number>,
  dLse: ArrayLike<number> | undefined,
  opts: RefMaskOptions = {},
): RefGrads {
  const { B, Nq, Nk, H, Hkv, D, Dv } = p;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const group = H / Hkv;
  const { lse } = referenceAttention(p, opts);
  const dq = new Float64Array(B * Nq * H * D);
  const dk = new Float64Array(B * Nk * Hkv * D);
  const dv = new Float64Array(B * Nk * Hkv * Dv);
  const P = new Float64Array(Nk);
  const dP = new Float64Array(Nk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Nq; i++) {
        const li = (b * Nq + i) * H + h;
        if (lse[li] === -Infinity) continue;
        const qo = li * D;
        const oo = li * Dv;
        let rowDot = 0;
        for (let j = 0; j < Nk; j++) {
          P[j] = 0;
          dP[j] = 0;
          if (!visible(i, j, Nq, Nk, opts, b, h)) continue;
          const ko = ((b * Nk + j) * Hkv + hk) * D;
          const vo = ((b * Nk + j) * Hkv + hk) * Dv;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += p.q[qo + d]! * p.k[ko + d]!;
          P[j] = Math.exp(scale * dot - lse[li]!);
          let g = 0;
          for (let e = 0; e < Dv; e++) g += dOut[oo + e]! * p.v[vo + e]!;
          dP[j] = g;
          rowDot += P[j]! * g;
        }
        const dl = dLse ? dLse[li]! : 0;
        for (let j = 0; j < Nk; j++) {
          if (P[j] === 0) continue;
          const ko = ((b * Nk + j) * Hkv + hk) * D;
          const vo = ((b * Nk + j) * Hkv + hk) * Dv;
          for (let e = 0; e < Dv; e++) dv[vo + e]! += P[j]! * dOut[oo + e]!;
          const dS = P[j]! * (dP[j]! - rowDot + dl);
          for (let d = 0; d < D; d++) {
            dq[qo + d]! += scale * dS * p.k[ko + d]!;
            dk[ko + d]! += scale * dS * p.q[qo + d]!;
          }
        }
      }
    }
  return { dq, dk, dv };
}

/** One partial attention for referenceMerge: out [rows, dv] and lse [rows]. */
export interface RefPart {
  out: ArrayLike<number>;
  lse: ArrayLike<number>;
}

/** out = sum_i exp(lse_i - lse) out_i, lse = log sum_i exp(lse_i), over `rows` rows of width dv. */
export function referenceMerge(parts: readonly RefPart[], rows: number, dv: number): RefForward {
  const out = new Float64Array(rows * dv);
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const mx = Math.max(...parts.map((p) => p.lse[r]!));
    if (mx === -Infinity) {
      lse[r] = -Infinity;
      continue;
    }
    let sum = 0;
    for (const p of parts) sum += Math.exp(p.lse[r]! - mx);
    lse[r] = mx + Math.log(sum);
    for (const p of parts) {
      const w = Math.exp(p.lse[r]! - lse[r]!);
      for (let e = 0; e < dv; e++) out[r * dv + e]! += w * p.out[r * dv + e]!;
    }
  }
  return { out, lse };
}

/** Gradients of <dOut, out> + <dLse, lse> for every part: d out_i = w_i dOut, d lse_i = w_i (<dOut, out_i - out> + dLse). */
export function referenceMergeBackward(
  parts: readonly RefPart[],
  rows: number,
  dv: number,
  dOut: ArrayLike<number>,
  dLse?: ArrayLike<number>,
): { dout: Float64Array; dlse: Float64Array }[] {
  const { out, lse } = referenceMerge(parts, rows, dv);
  return parts.map((p) => {
    const dout = new Float64Array(rows * dv);
    const dlse = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      if (lse[r] === -Infinity || p.lse[r] === -Infinity) continue;
      const w = Math.exp(p.lse[r]! - lse[r]!);
      let dot = 0;
      for (let e = 0; e < dv; e++) {
        dout[r * dv + e] = w * dOut[r * dv + e]!;
        dot += dOut[r * dv + e]! * (p.out[r * dv + e]! - out[r * dv + e]!);
      }
      dlse[r] = w * (dot + (dLse ? dLse[r]! : 0));
    }
    return { dout, dlse };
  });
}
