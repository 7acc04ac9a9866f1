/**
 * Float64 references for linear attention (docs/linear.md), plain loops straight from the math, in
 * two independent forms:
 *
 * - the closed form, O(N^2) per (batch, head), with L_t = sum_{r<=t} log a_r the cumulative log
 *   decay (a_r = lambda * exp(g_r): the head's constant decay times the token's gate, if any):
 *     o_t = exp(L_t) q~_t^T S0 + sum_{s<=t} exp(L_t - L_s) (q~_t . k~_s) v'_s
 *     S_N = exp(L_{N-1}) S0 + sum_s exp(L_{N-1} - L_s) k~_s v'_s^T
 *   with its gradients written out term by term (for the gate: the gradient of each L_t, summed
 *   from the end: dg_r = sum_{t>=r} dL_t);
 * - the recurrent form, token by token: S_t = a_t S_{t-1} + k~_t v'_t^T, o_t = q~_t^T S_t, with
 *   the backward as a reverse scan of the state gradient (dg_t = a_t <dS_t, S_{t-1}>).
 *
 * Without a gate, L_t = (t+1) log lambda: the constant decay is the gate g = 0.

 * q~ = scale * phi(q), k~ = phi(k), v' = v, or [v, 1] with `normalize` (the last state column is then
 * the decayed key sum z and out = o[:Dv] / (o[Dv] + eps)). Non-causal: every query reads the full
 * state S0 + sum_s k~_s v'_s^T (decay must be 1). GQA: query head h reads kv head h / (H / Hkv).
 * Arrays are flat row-major in the op's layout: q [B, N, H, D], k [B, N, Hkv, D],
 * v [B, N, Hkv, Dv], out [B, N, H, Dv], states [B, H, D, Dv (+1 with normalize)].
 */

export type LinearFeatureMap = 'identity' | 'elu1' | 'relu';

/** A linear-attention problem: sizes and flat row-major q, k, v. */
export interface LinearRefProblem {
  B: number;
  N: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  /** [B, N, H, D] */
  q: ArrayLike<number>;
  /** [B, N, Hkv, D] */
  k: ArrayLike<number>;
  /** [B, N, Hkv, Dv] */
  v: ArrayLike<number>;
}

/** Options of the linear-attention reference (those of linearAttention). */
export interface LinearRefOptions {
  /** default true */
  causal?: boolean;
  /** lambda per query head (or one for all), in (0, 1]; default 1 */
  decay?: number | ArrayLike<number>;
  /** default 1/sqrt(D) */
  scale?: number;
  /** default 'identity' */
  featureMap?: LinearFeatureMap;
  /** default false */
  normalize?: boolean;
  /** the normalize epsilon; default 1e-6 (the library's) */
  eps?: number;
  /** [B, H, D, Dv (+1)]; default zero */
  initialState?: ArrayLike<number>;
  /** per-token log decays g <= 0, [B, N, H] (the step: [B, H]); multiplies the decay: a_t = lambda exp(g_t). Causal only. */
  gate?: ArrayLike<number>;
}

/** A reference linear-attention forward: out and the state after the last token. */
export interface LinearRefForward {
  /** [B, N, H, Dv] */
  out: Float64Array;
  /** [B, H, D, Dv (+1)] */
  finalState: Float64Array;
}

/** Reference linear-attention gradients. */
export interface LinearRefGrads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  /** `[B, H, D, Dv (+1)]`: gradient of the initial state (zero state when none was given) */
  dInitialState: Float64Array;
  /** `[B, N, H]`: gradient of the gate (at g = 0 when none was given) */
  dGate: Float64Array;
}

/** The library's normalize epsilon: out = num / (den + eps). */
export const LINEAR_EPS = 1e-6;

/** phi(x) */
export function linearFeatureMap(f: LinearFeatureMap, x: number): number {
  if (f === 'elu1') return x > 0 ? x + 1 : Math.exp(x);
  if (f === 'relu') return x > 0 ? x : 0;
  return x;
}

/** phi'(x) (relu: 0 at 0) */
export function linearFeatureMapGrad(f: LinearFeatureMap, x: number): number {
  if (f === 'elu1') return x > 0 ? 1 : Math.exp(x);
  if (f === 'relu') return x > 0 ? 1 : 0;
  return 1;
}

function decayOf(opts: LinearRefOptions, h: number): number {
  const d = opts.decay ?? 1;
  return typeof d === 'number' ? d : d[h]!;
}

/** One (batch, head) after feature maps: Q [N x D], K [N x D], V' [N x Ds], S0 [D x Ds]. */
interface Head {
  N: number;
  D: number;
  Ds: number;
  /** log a_t per token [N] (a_t = lambda exp(g_t)) and its running sum L [N] */
  logA: Float64Array;
  L: Float64Array;
  causal: boolean;
  Q: Float64Array;
  K: Float64Array;
  V: Float64Array;
  S0: Float64Array;
}

interface Core {
  /** O' [N x Ds] and the final state [D x Ds] */
  forward(x: Head): { O: Float64Array; ST: Float64Array };
  /** gradients of <dO, O'> + <dST, S_N> */
  backward(
    x: Head,
    dO: Float64Array,
    dST: Float64Array,
  ): { dQ: Float64Array; dK: Float64Array; dV: Float64Array; dS0: Float64Array; dG: Float64Array };
}

/** Weight of key s for query t: exp(L_t - L_s) for s <= t (causal), 1 (non-causal). */
function weight(x: Head, t: number, s: number): number {
  if (!x.causal) return 1;
  return s <= t ? Math.exp(x.L[t]! - x.L[s]!) : 0;
}
/** Weight of the initial state for query t: exp(L_t) (causal), 1 (non-causal). */
function stateWeight(x: Head, t: number): number {
  return x.causal ? Math.exp(x.L[t]!) : 1;
}
/** Weight of key s in the final state: exp(L_{N-1} - L_s) (causal), 1 (non-causal). */
function finalWeight(x: Head, s: number): number {
  return x.causal ? Math.exp(x.L[x.N - 1]! - x.L[s]!) : 1;
}
/** Weight of the initial state in the final state: exp(L_{N-1}) (1 for N = 0 or non-causal). */
function totalWeight(x: Head): number {
  return x.causal && x.N > 0 ? Math.exp(x.L[x.N - 1]!) : 1;
}

function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, n: number): number {
  let acc = 0;
  for (let i = 0; i < n; i++) acc += a[ao + i]! * b[bo + i]!;
  return acc;
}

const closed: Core = {
  forward(x) {
    const { N, D, Ds } = x;
    const O = new Float64Array(N * Ds);
    const ST = new Float64Array(D * Ds);
    for (let t = 0; t < N; t++) {
      const w0 = stateWeight(x, t);
      for (let d = 0; d < D; d++) {
        const qd = w0 * x.Q[t * D + d]!;
        for (let e = 0; e < Ds; e++) O[t * Ds + e]! += qd * x.S0[d * Ds + e]!;
      }
      for (let s = 0; s < N; s++) {
        const w = weight(x, t, s);
        if (w === 0) continue;
        const a = w * dot(x.Q, t * D, x.K, s * D, D);
        for (let e = 0; e < Ds; e++) O[t * Ds + e]! += a * x.V[s * Ds + e]!;
      }
    }
    const wN = totalWeight(x);
    for (let i = 0; i < D * Ds; i++) ST[i] = wN * x.S0[i]!;
    for (let s = 0; s < N; s++) {
      const w = finalWeight(x, s);
      for (let d = 0; d < D; d++)
        for (let e = 0; e < Ds; e++) ST[d * Ds + e]! += w * x.K[s * D + d]! * x.V[s * Ds + e]!;
    }
    return { O, ST };
  },
  backward(x, dO, dST) {
    const { N, D, Ds } = x;
    const dQ = new Float64Array(N * D);
    const dK = new Float64Array(N * D);
    const dV = new Float64Array(N * Ds);
    const dS0 = new Float64Array(D * Ds);
    // dL[t]: gradient of the cumulative log decay L_t. Every term's weight is exp(L_t - L_s) (or
    // exp(L_t), exp(L_{N-1} - L_s), exp(L_{N-1})), so the term adds its value at t and subtracts it
    // at s. The pairs with t = s cancel exactly and are left out: adding and subtracting a term of
    // size 1 would leave rounding noise far above a gradient of size exp(-30).
    const dL = new Float64Array(N);
    for (let t = 0; t < N; t++) {
      // dq_t = exp(L_t) S0 dO_t + sum_s w(t,s) (dO_t . v_s) k_s
      const w0 = stateWeight(x, t);
      for (let d = 0; d < D; d++) dQ[t * D + d] = w0 * dot(x.S0, d * Ds, dO, t * Ds, Ds);
      dL[t]! += dot(x.Q, t * D, dQ, t * D, D);
      for (let s = 0; s < N; s++) {
        const w = weight(x, t, s);
        if (w === 0) continue;
        const g = w * dot(dO, t * Ds, x.V, s * Ds, Ds); // dA_ts
        const a = w * dot(x.Q, t * D, x.K, s * D, D); // A_ts
        for (let d = 0; d < D; d++) {
          dQ[t * D + d]! += g * x.K[s * D + d]!;
          dK[s * D + d]! += g * x.Q[t * D + d]!;
        }
        for (let e = 0; e < Ds; e++) dV[s * Ds + e]! += a * dO[t * Ds + e]!;
        if (s === t) continue;
        const term = (a * g) / w; // w (q_t . k_s) (dO_t . v_s)
        dL[t]! += term;
        dL[s]! -= term;
      }
      // dS0 += exp(L_t) q_t dO_t^T
      for (let d = 0; d < D; d++)
        for (let e = 0; e < Ds; e++) dS0[d * Ds + e]! += w0 * x.Q[t * D + d]! * dO[t * Ds + e]!;
    }
    // final-state terms: dk_s += exp(L_{N-1} - L_s) dS_T v_s, dv_s += exp(L_{N-1} - L_s) dS_T^T k_s
    for (let s = 0; s < N; s++) {
      const w = finalWeight(x, s);
      let term = 0;
      for (let d = 0; d < D; d++) {
        const dk = w * dot(dST, d * Ds, x.V, s * Ds, Ds);
        dK[s * D + d]! += dk;
        term += dk * x.K[s * D + d]!;
      }
      for (let e = 0; e < Ds; e++) {
        let acc = 0;
        for (let d = 0; d < D; d++) acc += dST[d * Ds + e]! * x.K[s * D + d]!;
        dV[s * Ds + e]! += w * acc;
      }
      if (s === N - 1) continue;
      dL[N - 1]! += term;
      dL[s]! -= term;
    }
    const wN = totalWeight(x);
    for (let i = 0; i < D * Ds; i++) dS0[i]! += wN * dST[i]!;
    if (N > 0) dL[N - 1]! += wN * dot(dST, 0, x.S0, 0, D * Ds);
    // non-causal: no decay, so no gate to differentiate
    const dG = new Float64Array(N);
    if (x.causal) for (let t = N - 1, acc = 0; t >= 0; t--) dG[t] = acc += dL[t]!;
    return { dQ, dK, dV, dS0, dG };
  },
};

/** S_t for t = 0..N-1 (after the token's update), or the final state repeated (non-causal). */
function states(x: Head): Float64Array[] {
  const { N, D, Ds } = x;
  const S = Float64Array.from(x.S0);
  const out: Float64Array[] = [];
  for (let t = 0; t < N; t++) {
    const a = x.causal ? Math.exp(x.logA[t]!) : 1;
    for (let d = 0; d < D; d++)
      for (let e = 0; e < Ds; e++) S[d * Ds + e] = a * S[d * Ds + e]! + x.K[t * D + d]! * x.V[t * Ds + e]!;
    out.push(Float64Array.from(S));
  }
  if (!x.causal) return out.map(() => S);
  return out;
}

const recurrent: Core = {
  forward(x) {
    const { N, D, Ds } = x;
    const S = states(x);
    const O = new Float64Array(N * Ds);
    for (let t = 0; t < N; t++)
      for (let e = 0; e < Ds; e++) {
        let acc = 0;
        for (let d = 0; d < D; d++) acc += x.Q[t * D + d]! * S[t]![d * Ds + e]!;
        O[t * Ds + e] = acc;
      }
    return { O, ST: N > 0 ? Float64Array.from(S[N - 1]!) : Float64Array.from(x.S0) };
  },
  backward(x, dO, dST) {
    const { N, D, Ds } = x;
    const S = states(x);
    const dQ = new Float64Array(N * D);
    const dK = new Float64Array(N * D);
    const dV = new Float64Array(N * Ds);
    const dG = new Float64Array(N);
    // dq_t = S_t dO_t
    for (let t = 0; t < N; t++) for (let d = 0; d < D; d++) dQ[t * D + d] = dot(S[t]!, d * Ds, dO, t * Ds, Ds);
    // G = gradient of S_t (all later uses); non-causal: every query reads the final state.
    const G = Float64Array.from(dST);
    if (!x.causal)
      for (let t = 0; t < N; t++)
        for (let d = 0; d < D; d++) for (let e = 0; e < Ds; e++) G[d * Ds + e]! += x.Q[t * D + d]! * dO[t * Ds + e]!;
    for (let t = N - 1; t >= 0; t--) {
      if (x.causal)
        for (let d = 0; d < D; d++) for (let e = 0; e < Ds; e++) G[d * Ds + e]! += x.Q[t * D + d]! * dO[t * Ds + e]!;
      // S_t = a_t S_{t-1} + k_t v_t^T, a_t = exp(log a_t): d log a_t = a_t <G, S_{t-1}>
      for (let d = 0; d < D; d++) dK[t * D + d] = dot(G, d * Ds, x.V, t * Ds, Ds);
      for (let e = 0; e < Ds; e++) {
        let acc = 0;
        for (let d = 0; d < D; d++) acc += G[d * Ds + e]! * x.K[t * D + d]!;
        dV[t * Ds + e] = acc;
      }
      const a = x.causal ? Math.exp(x.logA[t]!) : 1;
      if (x.causal) dG[t] = a * dot(G, 0, t > 0 ? S[t - 1]! : x.S0, 0, D * Ds);
      for (let i = 0; i < D * Ds; i++) G[i]! *= a;
    }
    return { dQ, dK, dV, dS0: G, dG };
  },
};

interface Prepared {
  heads: Head[];
  scale: number;
  fm: LinearFeatureMap;
  Ds: number;
  eps: number;
  normalize: boolean;
}

function prepare(p: LinearRefProblem, opts: LinearRefOptions): Prepared {
  const { B, N, H, Hkv, D, Dv } = p;
  const causal = opts.causal ?? true;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const fm = opts.featureMap ?? 'identity';
  const normalize = opts.normalize ?? false;
  const Ds = Dv + (normalize ? 1 : 0);
  const group = H / Hkv;
  const heads: Head[] = [];
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      const lambda = decayOf(opts, h);
      if (!causal && lambda !== 1) throw new Error('non-causal linear attention has no decay');
      if (!causal && opts.gate) throw new Error('non-causal linear attention has no gate');
      const logA = new Float64Array(N);
      const L = new Float64Array(N);
      for (let t = 0; t < N; t++) {
        const g = opts.gate ? opts.gate[(b * N + t) * H + h]! : 0;
        if (!(g <= 0)) throw new Error(`gate values must be <= 0 (log space), received ${g}`);
        logA[t] = Math.log(lambda) + g;
        L[t] = (t > 0 ? L[t - 1]! : 0) + logA[t]!;
      }
      const x: Head = {
        N,
        D,
        Ds,
        logA,
        L,
        causal,
        Q: new Float64Array(N * D),
        K: new Float64Array(N * D),
        V: new Float64Array(N * Ds),
        S0: new Float64Array(D * Ds),
      };
      for (let t = 0; t < N; t++) {
        for (let d = 0; d < D; d++) {
          x.Q[t * D + d] = scale * linearFeatureMap(fm, p.q[((b * N + t) * H + h) * D + d]!);
          x.K[t * D + d] = linearFeatureMap(fm, p.k[((b * N + t) * Hkv + hk) * D + d]!);
        }
        for (let e = 0; e < Dv; e++) x.V[t * Ds + e] = p.v[((b * N + t) * Hkv + hk) * Dv + e]!;
        if (normalize) x.V[t * Ds + Dv] = 1;
      }
      if (opts.initialState) for (let i = 0; i < D * Ds; i++) x.S0[i] = opts.initialState[(b * H + h) * D * Ds + i]!;
      heads.push(x);
    }
  return { heads, scale, fm, Ds, eps: opts.eps ?? LINEAR_EPS, normalize };
}

function forwardWith(core: Core, p: LinearRefProblem, opts: LinearRefOptions): LinearRefForward {
  const { B, N, H, D, Dv } = p;
  const pr = prepare(p, opts);
  const { Ds } = pr;
  const out = new Float64Array(B * N * H * Dv);
  const finalState = new Float64Array(B * H * D * Ds);
  pr.heads.forEach((x, bh) => {
    const b = Math.floor(bh / H);
    const h = bh % H;
    const { O, ST } = core.forward(x);
    for (let t = 0; t < N; t++) {
      const den = pr.normalize ? O[t * Ds + Dv]! + pr.eps : 1;
      for (let e = 0; e < Dv; e++) out[((b * N + t) * H + h) * Dv + e] = O[t * Ds + e]! / den;
    }
    finalState.set(ST, bh * D * Ds);
  });
  return { out, finalState };
}

function backwardWith(
  core: Core,
  p: LinearRefProblem,
  dOut: ArrayLike<number>,
  dFinalState: ArrayLike<number> | undefined,
  opts: LinearRefOptions,
): LinearRefGrads {
  const { B, N, H, Hkv, D, Dv } = p;
  const pr = prepare(p, opts);
  const { Ds } = pr;
  const group = H / Hkv;
  const dq = new Float64Array(B * N * H * D);
  const dk = new Float64Array(B * N * Hkv * D);
  const dv = new Float64Array(B * N * Hkv * Dv);
  const dInitialState = new Float64Array(B * H * D * Ds);
  const dGate = new Float64Array(B * N * H);
  pr.heads.forEach((x, bh) => {
    const b = Math.floor(bh / H);
    const h = bh % H;
    const hk = Math.floor(h / group);
    // dO' = dOut, or for normalize (out = O[:Dv] / u, u = O[Dv] + eps):
    //   dO'[:Dv] = dOut / u,  dO'[Dv] = -(dOut . out) / u
    const dO = new Float64Array(N * Ds);
    const O = pr.normalize ? core.forward(x).O : null;
    for (let t = 0; t < N; t++) {
      const r = ((b * N + t) * H + h) * Dv;
      if (!O) {
        for (let e = 0; e < Dv; e++) dO[t * Ds + e] = dOut[r + e]!;
        continue;
      }
      const u = O[t * Ds + Dv]! + pr.eps;
      let g = 0;
      for (let e = 0; e < Dv; e++) {
        g += (dOut[r + e]! * O[t * Ds + e]!) / u;
        dO[t * Ds + e] = dOut[r + e]! / u;
      }
      dO[t * Ds + Dv] = -g / u;
    }
    const dST = new Float64Array(D * Ds);
    if (dFinalState) for (let i = 0; i < D * Ds; i++) dST[i] = dFinalState[bh * D * Ds + i]!;
    const g = core.backward(x, dO, dST);
    for (let t = 0; t < N; t++) {
      for (let d = 0; d < D; d++) {
        const qi = ((b * N + t) * H + h) * D + d;
        dq[qi] = pr.scale * linearFeatureMapGrad(pr.fm, p.q[qi]!) * g.dQ[t * D + d]!;
        const ki = ((b * N + t) * Hkv + hk) * D + d;
        dk[ki]! += linearFeatureMapGrad(pr.fm, p.k[ki]!) * g.dK[t * D + d]!;
      }
      for (let e = 0; e < Dv; e++) dv[((b * N + t) * Hkv + hk) * Dv + e]! += g.dV[t * Ds + e]!;
      dGate[(b * N + t) * H + h] = g.dG[t]!;
    }
    dInitialState.set(g.dS0, bh * D * Ds);
  });
  return { dq, dk, dv, dInitialState, dGate };
}

/** Closed form (O(N^2) per head): outputs and the final state. */
export function referenceLinearAttention(p: LinearRefProblem, opts: LinearRefOptions = {}): LinearRefForward {
  return forwardWith(closed, p, opts);
}

/** Recurrent form (token by token): outputs and the final state. */
export function referenceLinearAttentionRecurrent(p: LinearRefProblem, opts: LinearRefOptions = {}): LinearRefForward {
  return forwardWith(recurrent, p, opts);
}

/**
 * Closed-form gradients of L = <dOut, out> + <dFinalState, finalState> with respect to q, k, v and
 * the initial state.
 */
export function referenceLinearAttentionBackward(
  p: LinearRefProblem,
  dOut: ArrayLike<number>,
  dFinalState: ArrayLike<number> | undefined,
  opts: LinearRefOptions = {},
): LinearRefGrads {
  return backwardWith(closed, p, dOut, dFinalState, opts);
}

/** The same gradients by the recurrent form's reverse scan of the state gradient. */
export function referenceLinearAttentionRecurrentBackward(
  p: LinearRefProblem,
  dOut: ArrayLike<number>,
  dFinalState: ArrayLike<number> | undefined,
  opts: LinearRefOptions = {},
): LinearRefGrads {
  return backwardWith(recurrent, p, dOut, dFinalState, opts);
}

/**
 * One decode step for q [B, 1, H, D], k [B, 1, Hkv, D], v [B, 1, Hkv, Dv] from `state`
 * [B, H, D, Dv (+1)] (undefined: zero): decay (by lambda exp(gate), gate [B, H]), add k v^T, then read.
 */
export function referenceLinearAttentionStep(
  p: Omit<LinearRefProblem, 'N'>,
  state: ArrayLike<number> | undefined,
  opts: Omit<LinearRefOptions, 'causal' | 'initialState'> = {},
): { out: Float64Array; state: Float64Array } {
  const r = referenceLinearAttentionRecurrent({ ...p, N: 1 }, { ...opts, causal: true, initialState: state });
  return { out: r.out, state: r.finalState };
}
