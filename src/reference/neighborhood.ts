/**
 * Float64 reference for neighborhood attention (NATTEN semantics, docs/neighborhood.md), written
 * from the formulas with plain loops: the per-axis neighbor sets, their Cartesian product, then
 * softmax attention over those keys (plus optional additional keys every query sees).
 */
import { referenceAttention, referenceAttentionBackward, type RefForward, type RefGrads } from './attention.js';

/** Neighborhood parameters per axis (NATTEN semantics, docs/neighborhood.md). */
export interface RefNaParams {
  /** Input extent per axis (rank = its length). */
  size: readonly number[];
  kernelSize: readonly number[];
  stride: readonly number[];
  dilation: readonly number[];
  causal: readonly boolean[];
}

/**
 * Keys (token coordinates on one axis) that query coordinate x sees:
 * dilation group g = x % d, in-group index i = floor(x / d), group length Lg = ceil((L - g) / d),
 * window halves l = floor(k/2), r = floor(k/2) + (k % 2) - 1;
 * non-causal: leader = min(floor(i/s)*s + floor(s/2), Lg-1), start = min(max(leader - l, 0), Lg - k),
 * end = start + k; causal: leader = min(floor(i/s)*s + s - 1, Lg-1), start = max(leader - l - r, 0),
 * end = min(i + 1, Lg). Keys are g + d*j for j in [start, end).
 */
export function neighbors1d(x: number, L: number, k: number, s: number, d: number, causal: boolean): number[] {
  const g = x % d;
  const i = Math.floor(x / d);
  const Lg = Math.ceil((L - g) / d);
  const l = Math.floor(k / 2);
  const r = Math.floor(k / 2) + (k % 2) - 1;
  let start: number;
  let end: number;
  if (causal) {
    const leader = Math.min(Math.floor(i / s) * s + s - 1, Lg - 1);
    start = Math.max(leader - l - r, 0);
    end = Math.min(i + 1, Lg);
  } else {
    const leader = Math.min(Math.floor(i / s) * s + Math.floor(s / 2), Lg - 1);
    start = Math.min(Math.max(leader - l, 0), Lg - k);
    end = start + k;
  }
  const out: number[] = [];
  for (let j = start; j < end; j++) out.push(g + d * j);
  return out;
}

/** Row-major token index of coordinates `c` in a grid of extents `size`. */
function flatten(c: readonly number[], size: readonly number[]): number {
  let idx = 0;
  for (let a = 0; a < size.length; a++) idx = idx * size[a]! + c[a]!;
  return idx;
}

/** Token indices (row-major) of every key query token `q` sees: the product of per-axis sets. */
export function neighborhoodOf(q: number, p: RefNaParams): number[] {
  const R = p.size.length;
  const coords: number[] = new Array(R);
  let rest = q;
  for (let a = R - 1; a >= 0; a--) {
    coords[a] = rest % p.size[a]!;
    rest = Math.floor(rest / p.size[a]!);
  }
  const perAxis = coords.map((x, a) => neighbors1d(x, p.size[a]!, p.kernelSize[a]!, p.stride[a]!, p.dilation[a]!, p.causal[a]!));
  let combos: number[][] = [[]];
  for (const axis of perAxis) combos = combos.flatMap((c) => axis.map((y) => [...c, y]));
  return combos.map((c) => flatten(c, p.size)).sort((a, b) => a - b);
}

/** A boolean visibility matrix [N x N] over tokens (row = query). */
export function neighborhoodMatrix(p: RefNaParams): Uint8Array {
  const N = p.size.reduce((a, b) => a * b, 1);
  const m = new Uint8Array(N * N);
  for (let q = 0; q < N; q++) for (const k of neighborhoodOf(q, p)) m[q * N + k] = 1;
  return m;
}

/** A neighborhood-attention problem over a grid flattened to tokens, with optional additional keys. */
export interface RefNaProblem {
  B: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  /** [B, tokens, H, D] */
  q: ArrayLike<number>;
  /** [B, tokens, Hkv, D] */
  k: ArrayLike<number>;
  /** [B, tokens, Hkv, Dv] */
  v: ArrayLike<number>;
  /** Optional [B, M, Hkv, D] and [B, M, Hkv, Dv]: keys every query sees. */
  addK?: ArrayLike<number>;
  addV?: ArrayLike<number>;
  M?: number;
}

// The dense problem over the key set [tokens, additional] with the neighborhood mask.
function asMasked(prob: RefNaProblem, p: RefNaParams) {
  const { B, H, Hkv, D, Dv } = prob;
  const N = p.size.reduce((a, b) => a * b, 1);
  const M = prob.M ?? 0;
  const K = new Float64Array(B * (N + M) * Hkv * D);
  const V = new Float64Array(B * (N + M) * Hkv * Dv);
  // Row (b, j, hk) of the concatenation comes from the tokens (j < N) or the additional keys.
  const source = (b: number, j: number, hk: number) =>
    j < N ? { k: prob.k, v: prob.v, row: (b * N + j) * Hkv + hk } : { k: prob.addK!, v: prob.addV!, row: (b * M + j - N) * Hkv + hk };
  for (let b = 0; b < B; b++)
    for (let j = 0; j < N + M; j++)
      for (let hk = 0; hk < Hkv; hk++) {
        const dst = (b * (N + M) + j) * Hkv + hk;
        const src = source(b, j, hk);
        for (let d = 0; d < D; d++) K[dst * D + d] = src.k[src.row * D + d]!;
        for (let e = 0; e < Dv; e++) V[dst * Dv + e] = src.v[src.row * Dv + e]!;
      }
  const nb = Array.from({ length: N }, (_, q) => new Set(neighborhoodOf(q, p)));
  return {
    N,
    M,
    source,
    dense: { B, Nq: N, Nk: N + M, H, Hkv, D, Dv, q: prob.q, k: K, v: V },
    allows: (i: number, j: number) => j >= N || nb[i]!.has(j),
  };
}

/**
 * Neighborhood attention: softmax attention of each query over its neighborhood plus the M
 * additional keys. out [B, tokens, H, Dv], lse [B, tokens, H] (natural log).
 */
export function referenceNeighborhood(prob: RefNaProblem, p: RefNaParams, scale?: number): RefForward {
  const m = asMasked(prob, p);
  return referenceAttention(m.dense, { scale, allows: m.allows });
}

/** Reference neighborhood gradients, with those of the additional keys when given. */
export interface RefNaGrads extends RefGrads {
  dAddK?: Float64Array;
  dAddV?: Float64Array;
}

/**
 * Gradients of <dOut, out> + <dLse, lse>: the dense reference's backward (itself checked by
 * finite differences) with the neighborhood mask over [tokens, additional], split back into the
 * token and additional parts.
 */
export function referenceNeighborhoodBackward(
  prob: RefNaProblem,
  p: RefNaParams,
  dOut: ArrayLike<number>,
  dLse?: ArrayLike<number>,
  scale?: number,
): RefNaGrads {
  const { B, Hkv, D, Dv } = prob;
  const m = asMasked(prob, p);
  const g = referenceAttentionBackward(m.dense, dOut, dLse, { scale, allows: m.allows });
  const dk = new Float64Array(B * m.N * Hkv * D);
  const dv = new Float64Array(B * m.N * Hkv * Dv);
  const dAddK = new Float64Array(B * m.M * Hkv * D);
  const dAddV = new Float64Array(B * m.M * Hkv * Dv);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < m.N + m.M; j++)
      for (let hk = 0; hk < Hkv; hk++) {
        const src = (b * (m.N + m.M) + j) * Hkv + hk;
        const dst = m.source(b, j, hk).row;
        const [tk, tv] = j < m.N ? [dk, dv] : [dAddK, dAddV];
        for (let d = 0; d < D; d++) tk[dst * D + d] = g.dk[src * D + d]!;
        for (let e = 0; e < Dv; e++) tv[dst * Dv + e] = g.dv[src * Dv + e]!;
      }
  return m.M > 0 ? { dq: g.dq, dk, dv, dAddK, dAddV } : { dq: g.dq, dk, dv };
}
