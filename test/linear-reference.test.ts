/**
 * The float64 linear-attention references checked on their own (src/reference/linear.ts): the
 * closed form (O(N^2)) against the recurrent form, forward and backward; the closed-form gradients
 * against central finite differences of L = <dOut, out> + <dFinalState, finalState>, including the
 * initial-state gradient; a hand-computed example; and the decode step as the recurrence's
 * continuation.
 */
import { describe, expect, it } from 'vitest';
import {
  LINEAR_EPS,
  referenceLinearAttention,
  referenceLinearAttentionBackward,
  referenceLinearAttentionRecurrent,
  referenceLinearAttentionRecurrentBackward,
  referenceLinearAttentionStep,
  type LinearRefOptions,
  type LinearRefProblem,
} from '../src/reference/linear.ts';
import { gaussian, maxAbs, maxAbsErr, sliceSeq, worst, type SeqShape } from './helpers.ts';

interface RefCase extends SeqShape {
  name: string;
  opts: Omit<LinearRefOptions, 'initialState' | 'gate'>;
  init: boolean;
  /** a random per-token gate [B, N, H] in [-(1 + spread), -0.01] x scale, or none */
  gate?: { scale: number };
}

const CASES: RefCase[] = [
  { name: 'causal, no decay', B: 1, N: 7, H: 1, Hkv: 1, D: 3, Dv: 2, opts: {}, init: false },
  { name: 'causal, decay 0.5, initial state', B: 2, N: 6, H: 2, Hkv: 2, D: 3, Dv: 4, opts: { decay: 0.5 }, init: true },
  { name: 'causal, per-head decay, GQA, elu1', B: 1, N: 9, H: 4, Hkv: 2, D: 2, Dv: 3, opts: { decay: [1, 0.99, 0.5, 0.8], featureMap: 'elu1' }, init: true },
  { name: 'causal, relu, scale 0.7', B: 1, N: 5, H: 2, Hkv: 1, D: 4, Dv: 2, opts: { featureMap: 'relu', scale: 0.7, decay: 0.9 }, init: true },
  { name: 'causal, normalize, elu1, decay', B: 1, N: 8, H: 2, Hkv: 1, D: 3, Dv: 3, opts: { normalize: true, featureMap: 'elu1', decay: [0.95, 0.6] }, init: true },
  { name: 'non-causal', B: 2, N: 5, H: 2, Hkv: 2, D: 3, Dv: 2, opts: { causal: false }, init: true },
  { name: 'non-causal, normalize, elu1, MQA', B: 1, N: 6, H: 3, Hkv: 1, D: 2, Dv: 3, opts: { causal: false, normalize: true, featureMap: 'elu1' }, init: true },
  { name: 'N = 1', B: 1, N: 1, H: 1, Hkv: 1, D: 2, Dv: 2, opts: { decay: 0.7 }, init: true },
  { name: 'gate', B: 1, N: 7, H: 2, Hkv: 2, D: 3, Dv: 2, opts: {}, init: true, gate: { scale: 0.5 } },
  { name: 'gate and per-head decay, GQA, normalize, elu1', B: 2, N: 6, H: 2, Hkv: 1, D: 2, Dv: 3, opts: { decay: [0.9, 1], normalize: true, featureMap: 'elu1' }, init: true, gate: { scale: 0.3 } },
  { name: 'gate near 0, no initial state', B: 1, N: 8, H: 1, Hkv: 1, D: 3, Dv: 3, opts: {}, init: false, gate: { scale: 1e-3 } },
  { name: 'very negative gate (about -30)', B: 1, N: 6, H: 2, Hkv: 1, D: 2, Dv: 2, opts: { decay: 0.8 }, init: true, gate: { scale: 30 } },
];

/** The case's gate [B, N, H]: every value in [-(1 + |z|), -0.01] x scale, so g <= 0 with room for a finite difference. */
function gateOf(c: RefCase, seed: number): Float64Array | undefined {
  if (!c.gate) return undefined;
  const scale = c.gate.scale;
  return gaussian(c.B * c.N * c.H, seed).map((z) => -scale * Math.min(1 + Math.abs(z), Math.max(0.01, Math.abs(z))));
}

function problem(c: RefCase, seed: number): LinearRefProblem {
  return {
    B: c.B,
    N: c.N,
    H: c.H,
    Hkv: c.Hkv,
    D: c.D,
    Dv: c.Dv,
    q: gaussian(c.B * c.N * c.H * c.D, seed),
    k: gaussian(c.B * c.N * c.Hkv * c.D, seed + 1),
    v: gaussian(c.B * c.N * c.Hkv * c.Dv, seed + 2),
  };
}

const stateCols = (c: RefCase) => c.Dv + (c.opts.normalize ? 1 : 0);

/** Random initial state; with normalize the key-sum column is positive (a real key sum is). */
function initialState(c: RefCase, seed: number): Float64Array | undefined {
  if (!c.init) return undefined;
  const Ds = stateCols(c);
  const s = gaussian(c.B * c.H * c.D * Ds, seed);
  if (c.opts.normalize) for (let i = c.Dv; i < s.length; i += Ds) s[i] = Math.abs(s[i]!) + 0.5;
  return s;
}

function loss(p: LinearRefProblem, opts: LinearRefOptions, dOut: Float64Array, dST: Float64Array): number {
  const { out, finalState } = referenceLinearAttention(p, opts);
  let L = 0;
  for (let i = 0; i < out.length; i++) L += dOut[i]! * out[i]!;
  for (let i = 0; i < finalState.length; i++) L += dST[i]! * finalState[i]!;
  return L;
}

function closeTo(a: ArrayLike<number>, b: ArrayLike<number>, rel: number, what: string) {
  const err = maxAbsErr(a, b);
  expect(err, `${what}: ${err} (${worst(a, b)})`).toBeLessThanOrEqual(rel * Math.max(1, maxAbs(b)));
}

describe('closed form vs recurrent form', () => {
  for (const [ci, c] of CASES.entries())
    it(c.name, () => {
      const p = problem(c, 100 * ci + 1);
      const opts: LinearRefOptions = { ...c.opts, initialState: initialState(c, 100 * ci + 7), gate: gateOf(c, 100 * ci + 6) };
      const a = referenceLinearAttention(p, opts);
      const b = referenceLinearAttentionRecurrent(p, opts);
      closeTo(a.out, b.out, 1e-12, 'out');
      closeTo(a.finalState, b.finalState, 1e-12, 'finalState');
      const dOut = gaussian(c.B * c.N * c.H * c.Dv, 100 * ci + 8);
      const dST = gaussian(c.B * c.H * c.D * stateCols(c), 100 * ci + 9);
      const ga = referenceLinearAttentionBackward(p, dOut, dST, opts);
      const gb = referenceLinearAttentionRecurrentBackward(p, dOut, dST, opts);
      closeTo(ga.dq, gb.dq, 1e-12, 'dq');
      closeTo(ga.dk, gb.dk, 1e-12, 'dk');
      closeTo(ga.dv, gb.dv, 1e-12, 'dv');
      closeTo(ga.dInitialState, gb.dInitialState, 1e-12, 'dInitialState');
      closeTo(ga.dGate, gb.dGate, 1e-12, 'dGate');
    });
});

describe('closed-form gradients vs central finite differences', () => {
  for (const [ci, c] of CASES.entries())
    it(c.name, () => {
      const p = problem(c, 100 * ci + 1);
      const s0 = initialState(c, 100 * ci + 7) ?? new Float64Array(c.B * c.H * c.D * stateCols(c));
      // without a gate, dGate is the gradient at g = 0: check it through an explicit zero gate
      // (causal only: non-causal attention has no gate)
      const causal = c.opts.causal ?? true;
      const gate = gateOf(c, 100 * ci + 6) ?? new Float64Array(c.B * c.N * c.H);
      const opts: LinearRefOptions = { ...c.opts, initialState: s0, gate: causal ? gate : undefined };
      const dOut = gaussian(c.B * c.N * c.H * c.Dv, 100 * ci + 8);
      const dST = gaussian(c.B * c.H * c.D * stateCols(c), 100 * ci + 9);
      const g = referenceLinearAttentionBackward(p, dOut, dST, opts);
      const h = 1e-6;
      const check = (name: string, arr: Float64Array, grad: Float64Array, rebuild: (a: Float64Array) => [LinearRefProblem, LinearRefOptions]) => {
        expect(grad.length).toBe(arr.length);
        for (let i = 0; i < arr.length; i++) {
          // relu has a kink at 0: a difference across it is not a derivative
          if (c.opts.featureMap === 'relu' && (name === 'q' || name === 'k') && Math.abs(arr[i]!) < 1e-3) continue;
          const x = arr[i]!;
          // a gate of 0 is the end of its domain (g <= 0): a one-sided difference there
          const oneSided = name === 'gate' && x + h > 0;
          arr[i] = oneSided ? x : x + h;
          const lp = loss(...rebuild(arr), dOut, dST);
          arr[i] = x - h;
          const lm = loss(...rebuild(arr), dOut, dST);
          arr[i] = x;
          const fd = (lp - lm) / (oneSided ? h : 2 * h);
          const tol = (oneSided ? 1e-4 : 1e-6) * Math.max(1, Math.abs(fd));
          expect(Math.abs(fd - grad[i]!), `d${name}[${i}]: fd ${fd} vs analytic ${grad[i]}`).toBeLessThanOrEqual(tol);
        }
      };
      const q = Float64Array.from(p.q);
      const k = Float64Array.from(p.k);
      const v = Float64Array.from(p.v);
      check('q', q, g.dq, (a) => [{ ...p, q: a }, opts]);
      check('k', k, g.dk, (a) => [{ ...p, k: a }, opts]);
      check('v', v, g.dv, (a) => [{ ...p, v: a }, opts]);
      check('initialState', s0, g.dInitialState, (a) => [p, { ...opts, initialState: a }]);
      if (causal) check('gate', gate, g.dGate, (a) => [p, { ...opts, gate: a }]);
      else expect(g.dGate.every((x) => x === 0)).toBe(true);
    });
});

describe('hand-computed values and conventions', () => {
  it('N = 2, D = Dv = 1, decay 0.5, scale 1: o = [15, 63], final state 31.5', () => {
    const p: LinearRefProblem = { B: 1, N: 2, H: 1, Hkv: 1, D: 1, Dv: 1, q: [1, 2], k: [3, 4], v: [5, 6] };
    // o_0 = q0 k0 v0 = 15; S_1 = 0.5 * 15 + 24 = 31.5; o_1 = q1 S_1 = 63
    for (const f of [referenceLinearAttention, referenceLinearAttentionRecurrent]) {
      const r = f(p, { decay: 0.5, scale: 1 });
      expect(Array.from(r.out)).toEqual([15, 63]);
      expect(Array.from(r.finalState)).toEqual([31.5]);
    }
    // with an initial state S0 = 2: o_0 = q0 (0.5 * 2 + 15) = 16, S_1 = 0.5 * 16 + 24 = 32, o_1 = 64
    const r = referenceLinearAttention(p, { decay: 0.5, scale: 1, initialState: [2] });
    expect(Array.from(r.out)).toEqual([16, 64]);
    expect(Array.from(r.finalState)).toEqual([32]);
    // non-causal: every query reads S = 15 + 24 = 39
    const nc = referenceLinearAttention(p, { causal: false, scale: 1 });
    expect(Array.from(nc.out)).toEqual([39, 78]);
  });

  it('normalize: out = num / (den + eps), the key sum decays like the state', () => {
    const p: LinearRefProblem = { B: 1, N: 2, H: 1, Hkv: 1, D: 1, Dv: 1, q: [1, 2], k: [3, 4], v: [5, 6] };
    const r = referenceLinearAttention(p, { decay: 0.5, scale: 1, normalize: true });
    // t = 0: num 15, den 3; t = 1: z = 0.5 * 3 + 4 = 5.5, num = 63, den = 2 * 5.5 = 11
    expect(r.out[0]).toBeCloseTo(15 / (3 + LINEAR_EPS), 14);
    expect(r.out[1]).toBeCloseTo(63 / (11 + LINEAR_EPS), 14);
    expect(Array.from(r.finalState)).toEqual([31.5, 5.5]);
  });

  it('default scale is 1/sqrt(D)', () => {
    const c = CASES[1]!;
    const p = problem(c, 5);
    const a = referenceLinearAttention(p, { decay: 0.5 });
    const b = referenceLinearAttention(p, { decay: 0.5, scale: 1 / Math.sqrt(c.D) });
    expect(Array.from(a.out)).toEqual(Array.from(b.out));
  });

  it('prefill then decode steps = one prefill (the state convention)', () => {
    const c: RefCase = { name: '', B: 2, N: 9, H: 2, Hkv: 1, D: 3, Dv: 2, opts: { decay: [0.9, 0.6], featureMap: 'elu1', normalize: true }, init: true };
    const p = problem(c, 11);
    const s0 = initialState(c, 12)!;
    const full = referenceLinearAttention(p, { ...c.opts, initialState: s0 });
    const N0 = 5;
    const pre = referenceLinearAttention(
      { ...p, N: N0, q: sliceSeq(p.q, c.B, c.N, c.H * c.D, 0, N0), k: sliceSeq(p.k, c.B, c.N, c.Hkv * c.D, 0, N0), v: sliceSeq(p.v, c.B, c.N, c.Hkv * c.Dv, 0, N0) },
      { ...c.opts, initialState: s0 },
    );
    closeTo(pre.out, sliceSeq(full.out, c.B, c.N, c.H * c.Dv, 0, N0), 1e-13, 'prefill out');
    let state: Float64Array = pre.finalState;
    for (let t = N0; t < c.N; t++) {
      const step = referenceLinearAttentionStep(
        { B: c.B, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.Dv, q: sliceSeq(p.q, c.B, c.N, c.H * c.D, t, t + 1), k: sliceSeq(p.k, c.B, c.N, c.Hkv * c.D, t, t + 1), v: sliceSeq(p.v, c.B, c.N, c.Hkv * c.Dv, t, t + 1) },
        state,
        c.opts,
      );
      closeTo(step.out, sliceSeq(full.out, c.B, c.N, c.H * c.Dv, t, t + 1), 1e-13, `step ${t}`);
      state = step.state;
    }
    closeTo(state, full.finalState, 1e-13, 'final state');
  });

  it('rejects a decay with non-causal attention', () => {
    const p = problem(CASES[0]!, 1);
    expect(() => referenceLinearAttention(p, { causal: false, decay: 0.9 })).toThrow(/no decay/);
  });
});
