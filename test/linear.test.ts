/**
 * Linear attention kernels (src/ops/linear.ts, native/cpu/linear.cc) against the float64 reference,
 * on every SIMD level this CPU has: causal (chunked) and non-causal, forward and backward, decays
 * (1, 0.99, 0.5, per-head mixes), feature maps, normalize, zero and random initial states, a final-
 * state gradient, GQA, N across the chunk boundaries (1, 5, 63, 64, 65, 1000); per-token gates
 * (near 0, ordinary, about -30, combined with a decay) with their gradient dGate. Then the state
 * convention (prefill + decode steps = one prefill, two chunked prefills = one, with and without a
 * gate), the constant decay as the gate log(decay), the step op, and every error path.
 *
 * Tolerances follow the project's rule, with the relative RMS error ||x - ref|| / ||ref|| as the
 * metric (as FLA's tests use): the kernel may be at most 2x (forward, final state) or 3x (gradients)
 * as wrong as a naive implementation in the input dtype (`naiveLinear` below: PyTorch-style eager
 * ops, each rounded to the dtype, float32 accumulation), plus a floor of 2e-6; float32 results must
 * also be within 1e-5. dGate is a float32 output that the kernel computes in float32 from the same
 * (rounded) inputs as the reference for every input dtype, so it has one bound for all: 1e-4.
 */
import { describe, expect, it } from 'vitest';
import {
  AttnkitError,
  cpu,
  cuda,
  linearAttention,
  linearAttentionBackward,
  linearAttentionStep,
  randn,
  Stream,
  tensor,
  zeros,
  type FloatDType,
  type LinearAttentionOptions,
  type Tensor,
} from '../src/index.ts';
import {
  LINEAR_EPS,
  linearFeatureMap,
  linearFeatureMapGrad,
  referenceLinearAttention,
  referenceLinearAttentionBackward,
  referenceLinearAttentionStep,
  type LinearFeatureMap,
  type LinearRefOptions,
  type LinearRefProblem,
} from '../src/reference/linear.ts';
import { concatSeq, gaussian, randT, read64, rounder, sliceSeq, type SeqShape } from './helpers.ts';
import { eachIsaLevel, RatioLog, perCaseAndDtype } from './isa-levels.ts';

// ------------------------------------------------------------------ cases

interface Case extends SeqShape {
  name: string;
  causal?: boolean;
  decay?: number | number[];
  featureMap?: LinearFeatureMap;
  normalize?: boolean;
  scale?: number;
  /** random initial state (else none: zero, and no dInitialState) */
  init: boolean;
  /** random gradient of the final state */
  dFinal: boolean;
  /** a random gate [B, N, H]: values in [-(1 + |z|), -0.01] x scale (else none) */
  gate?: { scale: number };
}

const CASES: Case[] = [
  { name: 'N=1 D=8', B: 1, N: 1, H: 1, Hkv: 1, D: 8, Dv: 8, init: false, dFinal: false },
  { name: 'N=5 MQA decay 0.5 init', B: 2, N: 5, H: 2, Hkv: 1, D: 16, Dv: 12, decay: 0.5, init: true, dFinal: true },
  { name: 'N=63 decay 0.99 elu1 normalize', B: 1, N: 63, H: 2, Hkv: 2, D: 16, Dv: 16, decay: 0.99, featureMap: 'elu1', normalize: true, init: true, dFinal: true },
  { name: 'N=64 per-head decay relu GQA', B: 1, N: 64, H: 4, Hkv: 2, D: 32, Dv: 24, decay: [1, 0.99, 0.5, 0.9], featureMap: 'relu', init: true, dFinal: false },
  { name: 'N=65 D=33 Dv=20 no decay init', B: 1, N: 65, H: 2, Hkv: 2, D: 33, Dv: 20, init: true, dFinal: true },
  { name: 'N=130 D=64 decay 0.99 scale 0.3', B: 1, N: 130, H: 1, Hkv: 1, D: 64, Dv: 64, decay: 0.99, scale: 0.3, init: false, dFinal: true },
  { name: 'N=1000 per-head decay relu normalize', B: 1, N: 1000, H: 2, Hkv: 1, D: 16, Dv: 16, decay: [0.5, 0.99], featureMap: 'relu', normalize: true, init: true, dFinal: true },
  { name: 'N=1000 no decay elu1', B: 1, N: 1000, H: 1, Hkv: 1, D: 16, Dv: 8, featureMap: 'elu1', init: false, dFinal: false },
  { name: 'N=100 Dv=40 normalize elu1 decay 0.9 (value tiles)', B: 1, N: 100, H: 1, Hkv: 1, D: 24, Dv: 40, decay: 0.9, featureMap: 'elu1', normalize: true, init: true, dFinal: true },
  { name: 'non-causal N=70 Dv=48 normalize relu (value tiles)', B: 1, N: 70, H: 1, Hkv: 1, D: 8, Dv: 48, causal: false, featureMap: 'relu', normalize: true, init: true, dFinal: true },
  { name: 'non-causal N=5 init', B: 2, N: 5, H: 2, Hkv: 2, D: 8, Dv: 16, causal: false, init: true, dFinal: true },
  { name: 'non-causal N=65 GQA elu1 normalize', B: 1, N: 65, H: 4, Hkv: 2, D: 16, Dv: 16, causal: false, featureMap: 'elu1', normalize: true, init: true, dFinal: true },
  { name: 'non-causal N=1000 relu', B: 1, N: 1000, H: 1, Hkv: 1, D: 16, Dv: 16, causal: false, featureMap: 'relu', init: false, dFinal: false },
  { name: 'gate N=1', B: 2, N: 1, H: 2, Hkv: 1, D: 8, Dv: 8, init: true, dFinal: true, gate: { scale: 0.5 } },
  { name: 'gate N=63 decay 0.99 elu1 normalize', B: 1, N: 63, H: 2, Hkv: 2, D: 16, Dv: 16, decay: 0.99, featureMap: 'elu1', normalize: true, init: true, dFinal: true, gate: { scale: 0.2 } },
  { name: 'gate near 0 N=64 GQA relu', B: 1, N: 64, H: 4, Hkv: 2, D: 32, Dv: 24, featureMap: 'relu', init: true, dFinal: false, gate: { scale: 1e-3 } },
  { name: 'gate about -30 N=65 D=33 Dv=20', B: 1, N: 65, H: 2, Hkv: 2, D: 33, Dv: 20, init: true, dFinal: true, gate: { scale: 30 } },
  { name: 'gate N=130 D=64 Dv=40 per-head decay (value tiles)', B: 1, N: 130, H: 1, Hkv: 1, D: 64, Dv: 40, decay: [0.9], init: true, dFinal: true, gate: { scale: 0.05 } },
  { name: 'gate N=1000 relu normalize', B: 1, N: 1000, H: 2, Hkv: 1, D: 16, Dv: 16, featureMap: 'relu', normalize: true, init: false, dFinal: true, gate: { scale: 0.02 } },
];

/** The gate of a case, [B, N, H] float32 (or undefined). */
function gateValues(c: { B: number; N: number; H: number; gate?: { scale: number } }, seed: number): Float64Array | undefined {
  if (!c.gate) return undefined;
  const s = c.gate.scale;
  return Float64Array.from(gaussian(c.B * c.N * c.H, seed), (z) => Math.fround(-s * Math.min(1 + Math.abs(z), Math.max(0.01, Math.abs(z)))));
}

const DTYPES: FloatDType[] = ['float32', 'float16', 'bfloat16'];
type Quantity = 'out' | 'finalState' | 'dq' | 'dk' | 'dv' | 'dInitialState' | 'dGate';
const QUANTITIES: Quantity[] = ['out', 'finalState', 'dq', 'dk', 'dv', 'dInitialState', 'dGate'];

const stateCols = (c: { Dv: number; normalize?: boolean }) => c.Dv + (c.normalize ? 1 : 0);

function refOptions(c: Case, initialState?: Float64Array, gate?: Float64Array): LinearRefOptions {
  return { causal: c.causal ?? true, decay: c.decay, featureMap: c.featureMap, normalize: c.normalize, scale: c.scale, initialState, gate };
}

function opOptions(c: Case, initialState?: Tensor, gate?: Tensor): LinearAttentionOptions {
  const o: LinearAttentionOptions = { causal: c.causal ?? true, returnFinalState: true };
  if (c.decay !== undefined) o.decay = c.decay;
  if (gate) o.gate = gate;
  if (c.featureMap) o.featureMap = c.featureMap;
  if (c.normalize) o.normalize = true;
  if (c.scale !== undefined) o.scale = c.scale;
  if (initialState) o.initialState = initialState;
  return o;
}

/** A float32 state [B, H, D, Ds]; with normalize the key-sum column is positive, as a real one is. */
async function makeState(c: { B: number; H: number; D: number; Dv: number; normalize?: boolean }, seed: number): Promise<{ t: Tensor; a: Float64Array }> {
  const Ds = stateCols(c);
  const s = gaussian(c.B * c.H * c.D * Ds, seed);
  if (c.normalize) for (let i = c.Dv; i < s.length; i += Ds) s[i] = Math.abs(s[i]!) + 0.5;
  const t = tensor(Float32Array.from(s), [c.B, c.H, c.D, Ds]);
  return { t, a: await read64(t) };
}

function relRms(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (x.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = x[i]! - ref[i]!;
    if (!Number.isFinite(d)) return Infinity;
    num += d * d;
    den += ref[i]! * ref[i]!;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

// ------------------------------------------------------------------ naive low-precision yardstick

/**
 * Linear attention as a naive eager implementation in `dtype` would compute it (Lightning's torch
 * reference: masked (Q K^T . M) V plus the state terms), every tensor op rounded to the dtype,
 * matmuls accumulating in float32. States stay float32 (as FLA returns them). Backward: autograd
 * through the same ops.
 */
function naiveLinear(p: LinearRefProblem, o: LinearRefOptions, dtype: FloatDType, dOut: ArrayLike<number>, dFinal: ArrayLike<number> | undefined) {
  const f = Math.fround;
  const r = rounder(dtype);
  const { B, N, H, Hkv, D, Dv } = p;
  const causal = o.causal ?? true;
  const fm = o.featureMap ?? 'identity';
  const norm = o.normalize ?? false;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const Ds = Dv + (norm ? 1 : 0);
  const group = H / Hkv;
  const out = new Float64Array(B * N * H * Dv);
  const finalState = new Float64Array(B * H * D * Ds);
  const dq = new Float64Array(B * N * H * D);
  const dkAcc = new Float64Array(B * N * Hkv * D);
  const dvAcc = new Float64Array(B * N * Hkv * Dv);
  const dInitialState = new Float64Array(B * H * D * Ds);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      const lam = typeof o.decay === 'number' ? o.decay : o.decay ? o.decay[h]! : 1;
      // cumulative log decay L_t (the gate's and the decay's); the weights are exp of differences
      const L = new Float64Array(N);
      for (let t = 0; t < N; t++) L[t] = (t > 0 ? L[t - 1]! : 0) + Math.log(lam) + (o.gate ? o.gate[(b * N + t) * H + h]! : 0);
      const wq = (t: number) => (causal ? r(Math.exp(L[t]!)) : 1); // weight of S0 for query t
      const wk = (s: number) => (causal ? r(Math.exp(L[N - 1]! - L[s]!)) : 1); // key s in the final state
      const wN = causal && N > 0 ? f(Math.exp(L[N - 1]!)) : 1;
      const w = (t: number, s: number) => (!causal ? 1 : s <= t ? r(Math.exp(L[t]! - L[s]!)) : 0);
      const bh = b * H + h;
      const qi = (t: number, d: number) => ((b * N + t) * H + h) * D + d;
      const ki = (t: number, d: number) => ((b * N + t) * Hkv + hk) * D + d;
      const Q = new Float64Array(N * D);
      const K = new Float64Array(N * D);
      const V = new Float64Array(N * Ds);
      for (let t = 0; t < N; t++) {
        for (let d = 0; d < D; d++) {
          Q[t * D + d] = r(r(linearFeatureMap(fm, p.q[qi(t, d)]!)) * scale);
          K[t * D + d] = r(linearFeatureMap(fm, p.k[ki(t, d)]!));
        }
        for (let e = 0; e < Dv; e++) V[t * Ds + e] = p.v[((b * N + t) * Hkv + hk) * Dv + e]!;
        if (norm) V[t * Ds + Dv] = 1;
      }
      const S0 = new Float64Array(D * Ds);
      if (o.initialState) for (let i = 0; i < D * Ds; i++) S0[i] = o.initialState[bh * D * Ds + i]!;
      // forward
      const P = new Float64Array(N * N);
      const Op = new Float64Array(N * Ds);
      for (let t = 0; t < N; t++) {
        for (let s = 0; s < N; s++) {
          const ws = w(t, s);
          if (ws === 0) continue;
          let a = 0;
          for (let d = 0; d < D; d++) a = f(a + Q[t * D + d]! * K[s * D + d]!);
          P[t * N + s] = r(r(a) * ws);
        }
        for (let e = 0; e < Ds; e++) {
          let acc = 0;
          for (let s = 0; s < N; s++) acc = f(acc + P[t * N + s]! * V[s * Ds + e]!);
          let inter = 0;
          for (let d = 0; d < D; d++) inter = f(inter + Q[t * D + d]! * S0[d * Ds + e]!);
          Op[t * Ds + e] = r(r(acc) + r(r(inter) * wq(t)));
        }
        for (let e = 0; e < Dv; e++)
          out[((b * N + t) * H + h) * Dv + e] = norm ? r(Op[t * Ds + e]! / r(Op[t * Ds + Dv]! + LINEAR_EPS)) : Op[t * Ds + e]!;
      }
      for (let d = 0; d < D; d++)
        for (let e = 0; e < Ds; e++) {
          let acc = 0;
          for (let s = 0; s < N; s++) acc = f(acc + r(K[s * D + d]! * wk(s)) * V[s * Ds + e]!);
          finalState[(bh * D + d) * Ds + e] = f(r(acc) + f(S0[d * Ds + e]! * wN));
        }
      // backward
      const dO = new Float64Array(N * Ds);
      for (let t = 0; t < N; t++) {
        const ro = ((b * N + t) * H + h) * Dv;
        if (!norm) {
          for (let e = 0; e < Dv; e++) dO[t * Ds + e] = dOut[ro + e]!;
          continue;
        }
        const u = r(Op[t * Ds + Dv]! + LINEAR_EPS);
        let g = 0;
        for (let e = 0; e < Dv; e++) {
          g = f(g + dOut[ro + e]! * out[ro + e]!);
          dO[t * Ds + e] = r(dOut[ro + e]! / u);
        }
        dO[t * Ds + Dv] = r(-r(g) / u);
      }
      const dST = new Float64Array(D * Ds);
      if (dFinal) for (let i = 0; i < D * Ds; i++) dST[i] = dFinal[bh * D * Ds + i]!;
      const dA = new Float64Array(N * N);
      for (let t = 0; t < N; t++)
        for (let s = 0; s < N; s++) {
          const ws = w(t, s);
          if (ws === 0) continue;
          let a = 0;
          for (let e = 0; e < Ds; e++) a = f(a + dO[t * Ds + e]! * V[s * Ds + e]!);
          dA[t * N + s] = r(r(a) * ws);
        }
      for (let t = 0; t < N; t++)
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s < N; s++) acc = f(acc + dA[t * N + s]! * K[s * D + d]!);
          let inter = 0;
          for (let e = 0; e < Ds; e++) inter = f(inter + dO[t * Ds + e]! * S0[d * Ds + e]!);
          const dQs = r(r(acc) + r(r(inter) * wq(t)));
          dq[qi(t, d)] = r(r(dQs * scale) * linearFeatureMapGrad(fm, p.q[qi(t, d)]!));
        }
      for (let s = 0; s < N; s++) {
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let t = 0; t < N; t++) acc = f(acc + dA[t * N + s]! * Q[t * D + d]!);
          let fin = 0;
          for (let e = 0; e < Ds; e++) fin = f(fin + dST[d * Ds + e]! * V[s * Ds + e]!);
          const dKf = r(r(acc) + r(r(fin) * wk(s)));
          dkAcc[ki(s, d)] = f(dkAcc[ki(s, d)]! + r(dKf * linearFeatureMapGrad(fm, p.k[ki(s, d)]!)));
        }
        for (let e = 0; e < Dv; e++) {
          let acc = 0;
          for (let t = 0; t < N; t++) acc = f(acc + P[t * N + s]! * dO[t * Ds + e]!);
          let fin = 0;
          for (let d = 0; d < D; d++) fin = f(fin + dST[d * Ds + e]! * K[s * D + d]!);
          const vi = ((b * N + s) * Hkv + hk) * Dv + e;
          dvAcc[vi] = f(dvAcc[vi]! + r(r(acc) + r(r(fin) * wk(s))));
        }
      }
      for (let d = 0; d < D; d++)
        for (let e = 0; e < Ds; e++) {
          let acc = 0;
          for (let t = 0; t < N; t++) acc = f(acc + r(Q[t * D + d]! * wq(t)) * dO[t * Ds + e]!);
          dInitialState[(bh * D + d) * Ds + e] = f(r(acc) + f(dST[d * Ds + e]! * wN));
        }
    }
  return { out, finalState, dq, dk: dkAcc.map(r), dv: dvAcc.map(r), dInitialState, dGate: new Float64Array(0) };
}

// ------------------------------------------------------------------ conformance

interface Expected {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  s0?: Tensor;
  gate?: Tensor;
  dOut: Tensor;
  dFinal?: Tensor;
  ref: Record<Quantity, Float64Array>;
  naiveErr: Record<Quantity, number>;
}

// The reference and the naive errors depend only on (case, dtype): computed once for all levels.
const expected = perCaseAndDtype(async (c: Case, ci: number, dtype: FloatDType): Promise<Expected> => {
  const seed = 5000 + 100 * ci;
  const q = await randT([c.B, c.N, c.H, c.D], { seed, dtype });
  const k = await randT([c.B, c.N, c.Hkv, c.D], { seed: seed + 1, dtype });
  const v = await randT([c.B, c.N, c.Hkv, c.Dv], { seed: seed + 2, dtype });
  const dOut = await randT([c.B, c.N, c.H, c.Dv], { seed: seed + 3, dtype });
  const s0 = c.init ? await makeState(c, seed + 4) : undefined;
  const dFinal = c.dFinal ? await makeState({ ...c, normalize: false, Dv: stateCols(c) }, seed + 5) : undefined;
  const g = gateValues(c, seed + 6);
  const p: LinearRefProblem = { B: c.B, N: c.N, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.Dv, q: q.a, k: k.a, v: v.a };
  const opts = refOptions(c, s0?.a, g);
  const fwd = referenceLinearAttention(p, opts);
  const bwd = referenceLinearAttentionBackward(p, dOut.a, dFinal?.a, opts);
  const ref = { ...fwd, ...bwd };
  const naive = naiveLinear(p, opts, dtype, dOut.a, dFinal?.a);
  const naiveErr = Object.fromEntries(QUANTITIES.map((qn) => [qn, relRms(naive[qn], ref[qn])])) as Record<Quantity, number>;
  const gate = g ? tensor(Float32Array.from(g), [c.B, c.N, c.H]) : undefined;
  return { q: q.t, k: k.t, v: v.t, s0: s0?.t, gate, dOut: dOut.t, dFinal: dFinal?.t, ref, naiveErr };
});

// Worst kernel/naive ratio per dtype and quantity, printed with ATTNKIT_TEST_RATIOS=1.
const ratios = new RatioLog('relative-RMS ratios', 24);

eachIsaLevel((test, level) => {

  for (const [ci, c] of CASES.entries())
    for (const dtype of DTYPES)
      test(`${c.name} ${dtype}`, async () => {
        expect(cpu.isa()).toBe(level);
        const e = await expected(c, ci, dtype);
        const r = linearAttention(e.q, e.k, e.v, opOptions(c, e.s0, e.gate));
        expect(r.out.dtype).toBe(dtype);
        expect(r.out.shape).toEqual([c.B, c.N, c.H, c.Dv]);
        expect(r.finalState!.dtype).toBe('float32');
        expect(r.finalState!.shape).toEqual([c.B, c.H, c.D, stateCols(c)]);
        const g = r.backward(e.dOut, e.dFinal);
        expect(g.dq.shape).toEqual([c.B, c.N, c.H, c.D]);
        expect(g.dk.shape).toEqual([c.B, c.N, c.Hkv, c.D]);
        expect(g.dv.shape).toEqual([c.B, c.N, c.Hkv, c.Dv]);
        expect(g.dInitialState === null).toBe(!c.init);
        expect(g.dGate === null).toBe(!c.gate);
        if (g.dGate) expect([g.dGate.dtype, g.dGate.shape]).toEqual(['float32', [c.B, c.N, c.H]]);
        const got: Partial<Record<Quantity, Float64Array>> = {
          out: await read64(r.out),
          finalState: await read64(r.finalState!),
          dq: await read64(g.dq),
          dk: await read64(g.dk),
          dv: await read64(g.dv),
        };
        if (g.dInitialState) got.dInitialState = await read64(g.dInitialState);
        if (g.dGate) got.dGate = await read64(g.dGate);
        for (const qn of QUANTITIES) {
          const x = got[qn];
          if (!x) continue;
          const err = relRms(x, e.ref[qn]);
          if (qn === 'dGate') {
            expect(err, `dGate: relative RMS error ${err}`).toBeLessThanOrEqual(1e-4);
            continue;
          }
          const naive = e.naiveErr[qn];
          const factor = qn === 'out' || qn === 'finalState' ? 2 : 3;
          ratios.note(`${dtype} ${qn}`, err, naive, `${level} / ${c.name}`);
          expect(err, `${qn}: kernel relative RMS error ${err} vs naive ${dtype} ${naive}`).toBeLessThanOrEqual(factor * naive + 2e-6);
          if (dtype === 'float32') expect(err, `${qn}: float32 relative RMS error ${err}`).toBeLessThanOrEqual(1e-5);
        }
        for (const t of [r.out, r.finalState!, g.dq, g.dk, g.dv, g.dInitialState, g.dGate]) t?.dispose();
      });

  test('small decays (1e-3, 1e-20) stay finite and exact: no lambda^-j overflow, no subnormal drift', async () => {
    const c: Case = { name: '', B: 1, N: 200, H: 2, Hkv: 1, D: 16, Dv: 16, decay: [1e-3, 1e-20], init: true, dFinal: true };
    const e = await expected(c, 90, 'float32');
    const r = linearAttention(e.q, e.k, e.v, opOptions(c, e.s0));
    const g = r.backward(e.dOut, e.dFinal);
    expect(relRms(await read64(r.out), e.ref.out)).toBeLessThanOrEqual(1e-6);
    expect(relRms(await read64(r.finalState!), e.ref.finalState)).toBeLessThanOrEqual(1e-6);
    expect(relRms(await read64(g.dq), e.ref.dq)).toBeLessThanOrEqual(1e-6);
    expect(relRms(await read64(g.dk), e.ref.dk)).toBeLessThanOrEqual(1e-6);
    expect(relRms(await read64(g.dInitialState!), e.ref.dInitialState)).toBeLessThanOrEqual(1e-6);
  });
});

// ------------------------------------------------------------------ gates

describe('gate', () => {
  const c = { B: 2, N: 150, H: 4, Hkv: 2, D: 16, Dv: 12 };
  const decay = [1, 0.99, 0.9, 0.5];
  const gateT = (g: Float64Array, shape: number[]) => tensor(Float32Array.from(g), shape);

  eachIsaLevel((test) => {
    test('the constant decay is the gate g = log(decay): same outputs, states and gradients', async () => {
      const q = await randT([c.B, c.N, c.H, c.D], { seed: 201 });
      const k = await randT([c.B, c.N, c.Hkv, c.D], { seed: 202 });
      const v = await randT([c.B, c.N, c.Hkv, c.Dv], { seed: 203 });
      const dO = await randT([c.B, c.N, c.H, c.Dv], { seed: 204 });
      const s0 = await makeState({ ...c, normalize: true }, 205);
      const dST = await makeState({ ...c, normalize: true }, 206);
      const g = new Float64Array(c.B * c.N * c.H).map((_, i) => Math.log(decay[i % c.H]!));
      const opts = { featureMap: 'elu1', normalize: true, initialState: s0.t, returnFinalState: true } as const;
      const a = linearAttention(q.t, k.t, v.t, { ...opts, decay });
      const b = linearAttention(q.t, k.t, v.t, { ...opts, gate: gateT(g, [c.B, c.N, c.H]) });
      const ga = a.backward(dO.t, dST.t);
      const gb = b.backward(dO.t, dST.t);
      for (const [name, x, y] of [
        ['out', a.out, b.out],
        ['finalState', a.finalState!, b.finalState!],
        ['dq', ga.dq, gb.dq],
        ['dk', ga.dk, gb.dk],
        ['dv', ga.dv, gb.dv],
        ['dInitialState', ga.dInitialState!, gb.dInitialState!],
      ] as const)
        expect(relRms(await read64(y), await read64(x)), name).toBeLessThanOrEqual(1e-6);
      expect(ga.dGate).toBeNull();
      // and the gated run's dGate is the reference's gradient at g = log(decay)
      const p: LinearRefProblem = { ...c, q: q.a, k: k.a, v: v.a };
      const ref = referenceLinearAttentionBackward(p, dO.a, dST.a, { featureMap: 'elu1', normalize: true, initialState: s0.a, gate: Float64Array.from(g, Math.fround) });
      expect(relRms(await read64(gb.dGate!), ref.dGate)).toBeLessThanOrEqual(1e-4);
    });

    test('very negative gates (-30 and -80 everywhere) stay finite and exact: only the diagonal survives', async () => {
      const s = { B: 1, N: 140, H: 2, Hkv: 1, D: 16, Dv: 16 };
      const q = await randT([s.B, s.N, s.H, s.D], { seed: 211 });
      const k = await randT([s.B, s.N, s.Hkv, s.D], { seed: 212 });
      const v = await randT([s.B, s.N, s.Hkv, s.Dv], { seed: 213 });
      const dO = await randT([s.B, s.N, s.H, s.Dv], { seed: 214 });
      const s0 = await makeState(s, 215);
      const dST = await makeState(s, 216);
      const g = new Float64Array(s.B * s.N * s.H).map((_, i) => (i % 2 ? -80 : -30));
      const p: LinearRefProblem = { ...s, q: q.a, k: k.a, v: v.a };
      const ro = { initialState: s0.a, gate: g };
      const fwd = referenceLinearAttention(p, ro);
      const bwd = referenceLinearAttentionBackward(p, dO.a, dST.a, ro);
      const r = linearAttention(q.t, k.t, v.t, { gate: gateT(g, [s.B, s.N, s.H]), initialState: s0.t, returnFinalState: true });
      const gr = r.backward(dO.t, dST.t);
      expect(relRms(await read64(r.out), fwd.out)).toBeLessThanOrEqual(1e-6);
      expect(relRms(await read64(r.finalState!), fwd.finalState)).toBeLessThanOrEqual(1e-6);
      for (const n of ['dq', 'dk', 'dv', 'dInitialState', 'dGate'] as const) {
        const x = await read64(gr[n]!);
        expect(x.every(Number.isFinite), n).toBe(true);
        expect(relRms(x, bwd[n]), n).toBeLessThanOrEqual(n === 'dGate' ? 1e-4 : 1e-6);
      }
    });
  });

  it('the step with a gate matches the float64 reference, and a gate of 0 is no gate', async () => {
    const s = { B: 3, H: 4, Hkv: 2, D: 24, Dv: 20 };
    const q = await randT([s.B, 1, s.H, s.D], { seed: 241 });
    const k = await randT([s.B, 1, s.Hkv, s.D], { seed: 242 });
    const v = await randT([s.B, 1, s.Hkv, s.Dv], { seed: 243 });
    const st = await makeState(s, 244);
    const g = gateValues({ B: s.B, N: 1, H: s.H, gate: { scale: 1 } }, 245)!;
    const opts = { decay: [0.9, 0.8, 1, 0.5], featureMap: 'elu1' } as const;
    const p = { B: s.B, H: s.H, Hkv: s.Hkv, D: s.D, Dv: s.Dv, q: q.a, k: k.a, v: v.a };
    const r = linearAttentionStep(q.t, k.t, v.t, st.t, { ...opts, gate: gateT(g, [s.B, s.H]) });
    const ref = referenceLinearAttentionStep(p, st.a, { ...opts, gate: g });
    expect(relRms(await read64(r.out), ref.out)).toBeLessThanOrEqual(1e-6);
    expect(relRms(await read64(r.state), ref.state)).toBeLessThanOrEqual(1e-6);
    const plain = linearAttentionStep(q.t, k.t, v.t, st.t, opts);
    const zero = linearAttentionStep(q.t, k.t, v.t, st.t, { ...opts, gate: gateT(new Float64Array(s.B * s.H), [s.B, s.H]) });
    expect(Array.from(await read64(zero.state))).toEqual(Array.from(await read64(plain.state)));
  });
});

// ------------------------------------------------------------------ state convention and the step

describe('state convention', () => {
  const c = { B: 2, N: 150, H: 4, Hkv: 2, D: 16, Dv: 12 };
  const decay = [1, 0.99, 0.9, 0.5];

  for (const dtype of ['float32', 'bfloat16'] as const)
    for (const normalize of [false, true])
      for (const gated of [false, true])
        it(`prefill (N=${c.N - 7}) then 7 steps = one prefill (${dtype}${normalize ? ', normalize' : ''}${gated ? ', gate' : ''})`, async () => {
          const fm = normalize ? 'elu1' : 'identity';
          const q = await randT([c.B, c.N, c.H, c.D], { seed: 71, dtype });
          const k = await randT([c.B, c.N, c.Hkv, c.D], { seed: 72, dtype });
          const v = await randT([c.B, c.N, c.Hkv, c.Dv], { seed: 73, dtype });
          const s0 = await makeState({ ...c, normalize }, 74);
          const opts = { decay, featureMap: fm, normalize } as const;
          // the gate [B, N, H] of the whole sequence, its prefix [B, N0, H] and one token's [B, H]
          const g = gated ? gateValues({ ...c, gate: { scale: 0.3 } }, 75)! : undefined;
          const gateAt = (n0: number, n1: number, shape: number[]) => (g ? { gate: tensor(Float32Array.from(sliceSeq(g, c.B, c.N, c.H, n0, n1)), shape) } : {});
          const full = linearAttention(q.t, k.t, v.t, { ...opts, ...gateAt(0, c.N, [c.B, c.N, c.H]), initialState: s0.t, returnFinalState: true });
          const fullOut = await read64(full.out);
          const N0 = c.N - 7;
          const slice = (a: Float64Array, heads: number, dim: number, n0: number, n1: number, shape: number[]) =>
            tensor(Float32Array.from(sliceSeq(a, c.B, c.N, heads * dim, n0, n1)), shape, { dtype });
          const pre = linearAttention(
            slice(q.a, c.H, c.D, 0, N0, [c.B, N0, c.H, c.D]),
            slice(k.a, c.Hkv, c.D, 0, N0, [c.B, N0, c.Hkv, c.D]),
            slice(v.a, c.Hkv, c.Dv, 0, N0, [c.B, N0, c.Hkv, c.Dv]),
            { ...opts, ...gateAt(0, N0, [c.B, N0, c.H]), initialState: s0.t, returnFinalState: true },
          );
          const parts = [{ a: await read64(pre.out), N: N0 }];
          let state = pre.finalState!;
          for (let t = N0; t < c.N; t++) {
            const st = linearAttentionStep(
              slice(q.a, c.H, c.D, t, t + 1, [c.B, 1, c.H, c.D]),
              slice(k.a, c.Hkv, c.D, t, t + 1, [c.B, 1, c.Hkv, c.D]),
              slice(v.a, c.Hkv, c.Dv, t, t + 1, [c.B, 1, c.Hkv, c.Dv]),
              state,
              { ...opts, ...gateAt(t, t + 1, [c.B, c.H]) },
            );
            expect(st.out.shape).toEqual([c.B, 1, c.H, c.Dv]);
            parts.push({ a: await read64(st.out), N: 1 });
            state = st.state;
          }
          const stitched = concatSeq(parts, c.B, c.H * c.Dv);
          // float32: identical up to float32 rounding of a different summation order; bfloat16: the
          // outputs are rounded to bfloat16 either way, so at most one rounding step apart.
          expect(relRms(stitched, fullOut)).toBeLessThanOrEqual(dtype === 'float32' ? 1e-6 : 4e-3);
          expect(relRms(await read64(state), await read64(full.finalState!))).toBeLessThanOrEqual(1e-6);
        });

  for (const gated of [false, true])
    it(`two chunked prefills (split at 70, inside a chunk) = one prefill, forward and backward${gated ? ', with a gate and dGate' : ''}`, async () => {
      const q = await randT([c.B, c.N, c.H, c.D], { seed: 81 });
      const k = await randT([c.B, c.N, c.Hkv, c.D], { seed: 82 });
      const v = await randT([c.B, c.N, c.Hkv, c.Dv], { seed: 83 });
      const dO = await randT([c.B, c.N, c.H, c.Dv], { seed: 84 });
      const g = gated ? gateValues({ ...c, gate: { scale: 0.2 } }, 85)! : undefined;
      const opts = { decay, featureMap: 'elu1' } as const;
      const N0 = 70;
      const part = (a: Float64Array, heads: number, dim: number, n0: number, n1: number) =>
        tensor(Float32Array.from(sliceSeq(a, c.B, c.N, heads * dim, n0, n1)), dim === 1 ? [c.B, n1 - n0, heads] : [c.B, n1 - n0, heads, dim]);
      const gateAt = (n0: number, n1: number) => (g ? { gate: part(g, c.H, 1, n0, n1) } : {});
      const full = linearAttention(q.t, k.t, v.t, { ...opts, ...gateAt(0, c.N), returnFinalState: true });
      const q1 = part(q.a, c.H, c.D, 0, N0), k1 = part(k.a, c.Hkv, c.D, 0, N0), v1 = part(v.a, c.Hkv, c.Dv, 0, N0);
      const q2 = part(q.a, c.H, c.D, N0, c.N), k2 = part(k.a, c.Hkv, c.D, N0, c.N), v2 = part(v.a, c.Hkv, c.Dv, N0, c.N);
      const a = linearAttention(q1, k1, v1, { ...opts, ...gateAt(0, N0), returnFinalState: true });
      const b = linearAttention(q2, k2, v2, { ...opts, ...gateAt(N0, c.N), initialState: a.finalState!, returnFinalState: true });
      const stitched = concatSeq([{ a: await read64(a.out), N: N0 }, { a: await read64(b.out), N: c.N - N0 }], c.B, c.H * c.Dv);
      expect(relRms(stitched, await read64(full.out))).toBeLessThanOrEqual(1e-6);
      expect(relRms(await read64(b.finalState!), await read64(full.finalState!))).toBeLessThanOrEqual(1e-6);
      // Backward through the split: the second part's dInitialState is the first part's dFinalState.
      const gFull = full.backward(dO.t);
      const gb = b.backward(part(dO.a, c.H, c.Dv, N0, c.N));
      const ga = a.backward(part(dO.a, c.H, c.Dv, 0, N0), gb.dInitialState!);
      expect(gFull.dGate === null).toBe(!gated);
      for (const [name, x, y, heads, dim] of [
        ['dq', ga.dq, gb.dq, c.H, c.D],
        ['dk', ga.dk, gb.dk, c.Hkv, c.D],
        ['dv', ga.dv, gb.dv, c.Hkv, c.Dv],
        ...(gated ? ([['dGate', ga.dGate!, gb.dGate!, c.H, 1]] as const) : []),
      ] as const) {
        const st = concatSeq([{ a: await read64(x), N: N0 }, { a: await read64(y), N: c.N - N0 }], c.B, heads * dim);
        expect(relRms(st, await read64(gFull[name]!)), name).toBeLessThanOrEqual(name === 'dGate' ? 1e-5 : 1e-6);
      }
    });

  it('the step matches the float64 reference, from a state and from none (fp16, GQA, normalize)', async () => {
    const s = { B: 3, H: 4, Hkv: 2, D: 24, Dv: 20, normalize: true };
    const q = await randT([s.B, 1, s.H, s.D], { seed: 91, dtype: 'float16' });
    const k = await randT([s.B, 1, s.Hkv, s.D], { seed: 92, dtype: 'float16' });
    const v = await randT([s.B, 1, s.Hkv, s.Dv], { seed: 93, dtype: 'float16' });
    const st = await makeState(s, 94);
    const opts = { decay: [0.9, 0.8, 1, 0.5], featureMap: 'relu', normalize: true, scale: 0.5 } as const;
    const p = { B: s.B, H: s.H, Hkv: s.Hkv, D: s.D, Dv: s.Dv, q: q.a, k: k.a, v: v.a };
    for (const state of [st, null]) {
      const r = linearAttentionStep(q.t, k.t, v.t, state ? state.t : null, opts);
      const ref = referenceLinearAttentionStep(p, state?.a, opts);
      expect(r.state.shape).toEqual([s.B, s.H, s.D, s.Dv + 1]);
      expect(relRms(await read64(r.out), ref.out)).toBeLessThanOrEqual(1e-3); // float16 output rounding
      expect(relRms(await read64(r.state), ref.state)).toBeLessThanOrEqual(1e-6);
    }
    // the input state is left as it was
    expect(Array.from(await read64(st.t))).toEqual(Array.from(st.a));
  });

  it('N = 0: empty output, the state passes through (decay^0 = 1), and so does its gradient', async () => {
    const s = { B: 2, H: 2, D: 8, Dv: 4, normalize: true };
    const s0 = await makeState(s, 51);
    const dST = await makeState(s, 52);
    const e = (shape: number[]) => randn(shape, { seed: 53 });
    const r = linearAttention(e([2, 0, 2, 8]), e([2, 0, 1, 8]), e([2, 0, 1, 4]), {
      decay: 0.5, normalize: true, featureMap: 'elu1', initialState: s0.t, returnFinalState: true,
    });
    expect(r.out.shape).toEqual([2, 0, 2, 4]);
    expect(Array.from(await read64(r.finalState!))).toEqual(Array.from(s0.a));
    const g = r.backward(e([2, 0, 2, 4]), dST.t);
    expect(g.dq.shape).toEqual([2, 0, 2, 8]);
    expect(Array.from(await read64(g.dInitialState!))).toEqual(Array.from(dST.a));
  });

  it('backward needs no saved outputs and is deterministic', async () => {
    const q = await randT([c.B, c.N, c.H, c.D], { seed: 61 });
    const k = await randT([c.B, c.N, c.Hkv, c.D], { seed: 62 });
    const v = await randT([c.B, c.N, c.Hkv, c.Dv], { seed: 63 });
    const dO = await randT([c.B, c.N, c.H, c.Dv], { seed: 64 });
    const opts = { decay, normalize: true, featureMap: 'elu1' } as const;
    const g1 = linearAttention(q.t, k.t, v.t, opts).backward(dO.t);
    const g2 = linearAttentionBackward(q.t, k.t, v.t, dO.t, opts);
    for (const n of ['dq', 'dk', 'dv'] as const) expect(Array.from(await read64(g2[n]))).toEqual(Array.from(await read64(g1[n])));
  });
});

// ------------------------------------------------------------------ errors

function expectError(fn: () => unknown, code: string, op: string, argument: string | undefined, has: string[] = []) {
  let caught: unknown = 'did not throw';
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttnkitError);
  const e = caught as AttnkitError;
  expect({ code: e.code, op: e.op, argument: e.argument }).toEqual({ code, op, argument });
  expect(e.message.startsWith(`${op}: `), e.message).toBe(true);
  for (const s of has) expect(e.message).toContain(s);
}

describe('errors', () => {
  const B = 1, N = 4, H = 2, D = 8, Dv = 6;
  const q = randn([B, N, H, D], { seed: 1 });
  const k = randn([B, N, H, D], { seed: 2 });
  const v = randn([B, N, H, Dv], { seed: 3 });
  const op = 'linearAttention';

  it('decay outside (0, 1], wrong length, wrong type, or with non-causal attention', () => {
    for (const d of [0, -0.5, 1.5, NaN, Infinity])
      expectError(() => linearAttention(q, k, v, { decay: d }), 'ERR_ATTNKIT_ARGUMENT', op, 'decay', ['(0, 1]']);
    expectError(() => linearAttention(q, k, v, { decay: [0.5, 0] }), 'ERR_ATTNKIT_ARGUMENT', op, 'decay', ['at head 1']);
    expectError(() => linearAttention(q, k, v, { decay: new Float32Array([0.9, 2]) }), 'ERR_ATTNKIT_ARGUMENT', op, 'decay', ['2 at head 1']);
    expectError(() => linearAttention(q, k, v, { decay: [0.5, 0.5, 0.5] }), 'ERR_ATTNKIT_SHAPE', op, 'decay', ['one value per query head (2)', '3 values']);
    expectError(() => linearAttention(q, k, v, { decay: '0.5' as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'decay', ['a number or an array']);
    expectError(() => linearAttention(q, k, v, { causal: false, decay: 0.9 }), 'ERR_ATTNKIT_UNSUPPORTED', op, 'decay', ['causal']);
    // decay 1 is plain linear attention and allowed without causality
    expect(() => linearAttention(q, k, v, { causal: false, decay: 1 }).out.dispose()).not.toThrow();
  });

  it('initial state: shape (with the normalize column), dtype, not a tensor', () => {
    const good = randn([B, H, D, Dv], { seed: 4 });
    expectError(() => linearAttention(q, k, v, { initialState: randn([B, H, Dv, D], { seed: 4 }) }), 'ERR_ATTNKIT_SHAPE', op, 'initialState', [`[${B}, ${H}, ${D}, ${Dv}]`, `[${B}, ${H}, ${Dv}, ${D}]`]);
    expectError(() => linearAttention(q, k, v, { initialState: good, normalize: true }), 'ERR_ATTNKIT_SHAPE', op, 'initialState', [`[${B}, ${H}, ${D}, ${Dv + 1}]`, 'key sum']);
    expectError(() => linearAttention(q, k, v, { initialState: randn([B, H, D, Dv], { seed: 4, dtype: 'bfloat16' }) }), 'ERR_ATTNKIT_DTYPE', op, 'initialState', ["'float32'"]);
    expectError(() => linearAttention(q, k, v, { initialState: new Float32Array(96) as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'initialState', ['Tensor']);
  });

  it('feature map, scale, booleans, unknown options', () => {
    expectError(() => linearAttention(q, k, v, { featureMap: 'softmax' as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'featureMap', ["'identity', 'elu1', 'relu'", "'softmax'"]);
    expectError(() => linearAttention(q, k, v, { scale: -1 }), 'ERR_ATTNKIT_ARGUMENT', op, 'scale');
    expectError(() => linearAttention(q, k, v, { causal: 1 as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'causal');
    expectError(() => linearAttention(q, k, v, { normalize: 'yes' as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'normalize');
    expectError(() => linearAttention(q, k, v, { returnFinalState: 1 as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'returnFinalState');
    expectError(() => linearAttention(q, k, v, { window: [1, 1] } as never), 'ERR_ATTNKIT_ARGUMENT', op, 'window', ["unknown option 'window'"]);
  });

  it('shapes, dtypes and disposed inputs', () => {
    expectError(() => linearAttention(q, randn([B, N + 1, H, D], { seed: 5 }), v), 'ERR_ATTNKIT_SHAPE', op, 'k', ['sequence length 4']);
    expectError(() => linearAttention(q, randn([B, N, 3, D], { seed: 5 }), randn([B, N, 3, Dv], { seed: 5 })), 'ERR_ATTNKIT_SHAPE', op, 'k', ['divides']);
    expectError(() => linearAttention(q, randn([B, N, H, D + 1], { seed: 5 }), v), 'ERR_ATTNKIT_SHAPE', op, 'k', ['head dim 8']);
    expectError(() => linearAttention(q, k, randn([B, N, H, Dv], { seed: 5, dtype: 'float16' })), 'ERR_ATTNKIT_DTYPE', op, 'v');
    expectError(() => linearAttention(randn([B, N, H], { seed: 5 }), k, v), 'ERR_ATTNKIT_SHAPE', op, 'q', ['rank 4']);
    expectError(() => linearAttention(tensor(new Int32Array(B * N * H * D), [B, N, H, D]), k, v), 'ERR_ATTNKIT_DTYPE', op, 'q');
    const z = randn([B, N, H, 0], { seed: 5 });
    expectError(() => linearAttention(z, z, v), 'ERR_ATTNKIT_UNSUPPORTED', op, 'q', ['head dim']);
    const gone = randn([B, N, H, D], { seed: 6 });
    gone.dispose();
    expectError(() => linearAttention(gone, k, v), 'ERR_ATTNKIT_DISPOSED', op, 'q');
  });

  it('backward: dOut and dFinalState shapes', () => {
    const bop = 'linearAttentionBackward';
    const r = linearAttention(q, k, v, { returnFinalState: true });
    expectError(() => r.backward(randn([B, N, H, D], { seed: 7 })), 'ERR_ATTNKIT_SHAPE', bop, 'dOut', [`[${B}, ${N}, ${H}, ${Dv}]`]);
    expectError(() => r.backward(randn([B, N, H, Dv], { seed: 7 }), randn([B, H, D, Dv + 1], { seed: 8 })), 'ERR_ATTNKIT_SHAPE', bop, 'dFinalState');
    expectError(() => linearAttentionBackward(q, k, v, randn([B, N, H, Dv], { seed: 7, dtype: 'bfloat16' })), 'ERR_ATTNKIT_DTYPE', bop, 'dOut');
  });

  it('gate: tensor, dtype, shape ([B, N, H]; the step [B, H]), causal only', () => {
    const sop = 'linearAttentionStep';
    const g = randn([B, N, H], { seed: 20 });
    expectError(() => linearAttention(q, k, v, { gate: [0, 0] as never }), 'ERR_ATTNKIT_ARGUMENT', op, 'gate', ['Tensor']);
    expectError(() => linearAttention(q, k, v, { gate: randn([B, N, H], { seed: 20, dtype: 'bfloat16' }) }), 'ERR_ATTNKIT_DTYPE', op, 'gate', ["'float32'"]);
    expectError(() => linearAttention(q, k, v, { gate: randn([B, H, N], { seed: 20 }) }), 'ERR_ATTNKIT_SHAPE', op, 'gate', [`[${B}, ${N}, ${H}]`, `[${B}, ${H}, ${N}]`]);
    expectError(() => linearAttention(q, k, v, { gate: randn([B, N, H, 1], { seed: 20 }) }), 'ERR_ATTNKIT_SHAPE', op, 'gate');
    expectError(() => linearAttention(q, k, v, { gate: g, causal: false }), 'ERR_ATTNKIT_UNSUPPORTED', op, 'gate', ['causal']);
    expectError(() => linearAttentionBackward(q, k, v, randn([B, N, H, Dv], { seed: 7 }), { gate: randn([B, N + 1, H], { seed: 20 }) }), 'ERR_ATTNKIT_SHAPE', 'linearAttentionBackward', 'gate');
    const q1 = randn([B, 1, H, D], { seed: 9 }), k1 = randn([B, 1, H, D], { seed: 10 }), v1 = randn([B, 1, H, Dv], { seed: 11 });
    expectError(() => linearAttentionStep(q1, k1, v1, null, { gate: randn([B, 1, H], { seed: 20 }) }), 'ERR_ATTNKIT_SHAPE', sop, 'gate', [`[${B}, ${H}]`]);
    const gone = randn([B, N, H], { seed: 21 });
    gone.dispose();
    expectError(() => linearAttention(q, k, v, { gate: gone }), 'ERR_ATTNKIT_DISPOSED', op, 'gate');
  });

  it.skipIf(!cuda.available())('gate on another device than q', () => {
    expectError(() => linearAttention(q, k, v, { gate: zeros([B, N, H], { device: 'cuda:0' }) }), 'ERR_ATTNKIT_DEVICE', op, 'gate');
  });

  it('gate values > 0, NaN or -Infinity fail the outputs with ERR_ATTNKIT_ARGUMENT naming the gate; inputs are untouched', async () => {
    const s = new Stream();
    const rejection = async (p: Promise<unknown>) => {
      const e = await p.then(() => 'resolved', (x: unknown) => x);
      expect(e).toBeInstanceOf(AttnkitError);
      return e as AttnkitError;
    };
    const st0 = randn([B, H, D, Dv], { seed: 22 });
    const before = Array.from(await st0.toArray());
    for (const [bad, at] of [[0.5, '[0, 2, 1]'], [NaN, '[0, 2, 1]'], [-Infinity, '[0, 2, 1]']] as const) {
      const gv = new Float32Array(B * N * H).fill(-0.1);
      gv[2 * H + 1] = bad;
      const g = tensor(gv, [B, N, H]);
      const r = linearAttention(q, k, v, { gate: g, initialState: st0, returnFinalState: true, stream: s });
      for (const t of [r.out, r.finalState!]) {
        const e = await rejection(t.toArray());
        expect({ code: e.code, op: e.op }).toEqual({ code: 'ERR_ATTNKIT_ARGUMENT', op });
        expect(e.message).toContain(`linearAttention: expected 'gate' to hold finite log decays <= 0, received ${String(bad).replace('Infinity', 'inf').replace('NaN', 'nan')} at ${at}`);
      }
      const gb = linearAttentionBackward(q, k, v, randn([B, N, H, Dv], { seed: 7 }), { gate: g, stream: s });
      const eb = await rejection(gb.dGate!.toArray());
      expect({ code: eb.code, op: eb.op }).toEqual({ code: 'ERR_ATTNKIT_ARGUMENT', op: 'linearAttentionBackward' });
      expect(eb.message).toContain("'gate'");
      const gs = new Float32Array(B * H).fill(-1);
      gs[1] = bad;
      const q1 = randn([B, 1, H, D], { seed: 9 }), k1 = randn([B, 1, H, D], { seed: 10 }), v1 = randn([B, 1, H, Dv], { seed: 11 });
      const step = linearAttentionStep(q1, k1, v1, st0, { gate: tensor(gs, [B, H]), stream: s });
      const es = await rejection(step.state.toArray());
      expect({ code: es.code, op: es.op }).toEqual({ code: 'ERR_ATTNKIT_ARGUMENT', op: 'linearAttentionStep' });
      expect(es.message).toContain("expected 'gate' to hold finite log decays <= 0");
      expect(es.message).toContain('at [0, 1]');
      await s.synchronize().catch(() => undefined);
    }
    expect(Array.from(await st0.toArray())).toEqual(before);
    await expect(s.synchronize()).resolves.toBeUndefined();
  });

  it('step: one token, the state shape, and no chunked-only options', () => {
    const sop = 'linearAttentionStep';
    const q1 = randn([B, 1, H, D], { seed: 9 }), k1 = randn([B, 1, H, D], { seed: 10 }), v1 = randn([B, 1, H, Dv], { seed: 11 });
    expectError(() => linearAttentionStep(q, k, v, null), 'ERR_ATTNKIT_SHAPE', sop, 'q', ['sequence length 1']);
    expectError(() => linearAttentionStep(q1, k1, v1, randn([B, H, D, Dv + 1], { seed: 12 })), 'ERR_ATTNKIT_SHAPE', sop, 'state', [`[${B}, ${H}, ${D}, ${Dv}]`]);
    expectError(() => linearAttentionStep(q1, k1, v1, randn([B, H, D, Dv], { seed: 12 }), { normalize: true }), 'ERR_ATTNKIT_SHAPE', sop, 'state', ['key sum']);
    expectError(() => linearAttentionStep(q1, k1, v1, null, { causal: true } as never), 'ERR_ATTNKIT_ARGUMENT', sop, 'causal', ['unknown option']);
    expectError(() => linearAttentionStep(q1, k1, v1, null, { decay: 1.01 }), 'ERR_ATTNKIT_ARGUMENT', sop, 'decay');
  });
});
