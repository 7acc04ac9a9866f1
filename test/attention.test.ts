/**
 * Conformance of the dense fused attention kernel (forward, backward, dLse path) against the float64
 * reference on every SIMD level this CPU has. Tolerances follow the rule "at most 2x (forward) / 3x
 * (gradients) the error of a naive implementation in the same dtype" (test/helpers.ts
 * naiveAttention), measured on the same inputs, plus a tiny floor; float32 also gets an absolute
 * bound of 1e-5 relative to the quantity's scale.
 */
import { describe, expect, it } from 'vitest';
import { attention, attentionBackward, cpu, randn, zeros, type FloatDType, type Tensor } from '../src/index.ts';
import {
  attentionAllows,
  referenceAttention,
  referenceAttentionBackward,
  type RefMaskOptions,
} from '../src/reference/attention.ts';
import { defaultIsa, detectedIsa as detected, eachIsaLevel, RatioLog, runnable, perCaseAndDtype } from './isa-levels.ts';
import { makeInputs, maxAbs, maxAbsErr, naiveAttention, randT, read64, worst, type Inputs, type Shape } from './helpers.ts';

interface Case extends Shape {
  name: string;
  opts: RefMaskOptions;
  /** backward with a random dLse (the merge / LSE-consumer path) */
  dLse: boolean;
  /** number of (b, i, h) rows that see no key */
  empty?: number;
  /** number of (b, j, hk) key rows that no query sees */
  unseen?: number;
}

const CASES: Case[] = [
  { name: 'N=1 D=8', B: 1, Nq: 1, Nk: 1, H: 1, Hkv: 1, D: 8, Dv: 8, opts: {}, dLse: true },
  { name: 'B=2 N=17 D=16 causal', B: 2, Nq: 17, Nk: 17, H: 2, Hkv: 2, D: 16, Dv: 16, opts: { causal: true }, dLse: false },
  { name: 'Nq=17<Nk=97 D=33 Dv=20 GQA causal', B: 1, Nq: 17, Nk: 97, H: 4, Hkv: 2, D: 33, Dv: 20, opts: { causal: true }, dLse: true },
  { name: 'Nq=97>Nk=17 D=59 Dv=40 MQA causal', B: 1, Nq: 97, Nk: 17, H: 3, Hkv: 1, D: 59, Dv: 40, opts: { causal: true }, dLse: true, empty: 80 * 3 },
  { name: 'B=2 N=97 D=64 GQA window [3,0]', B: 2, Nq: 97, Nk: 97, H: 4, Hkv: 2, D: 64, Dv: 64, opts: { window: [3, 0] }, dLse: false },
  { name: 'N=97 D=80 Dv=96 MQA window [5,7]', B: 1, Nq: 97, Nk: 97, H: 2, Hkv: 1, D: 80, Dv: 96, opts: { window: [5, 7] }, dLse: true },
  { name: 'N=97 D=128 window [0,-1]', B: 1, Nq: 97, Nk: 97, H: 1, Hkv: 1, D: 128, Dv: 128, opts: { window: [0, -1] }, dLse: false },
  { name: 'Nq=17<Nk=97 D=128 Dv=64 window [-1,2]', B: 1, Nq: 17, Nk: 97, H: 2, Hkv: 2, D: 128, Dv: 64, opts: { window: [-1, 2] }, dLse: true },
  { name: 'Nq=17<Nk=97 D=64 Dv=48 window [3,0] (unseen keys)', B: 1, Nq: 17, Nk: 97, H: 2, Hkv: 2, D: 64, Dv: 48, opts: { window: [3, 0] }, dLse: true, unseen: 77 * 2 },
  { name: 'N=97 D=16 causal+window [5,7] scale 0.5', B: 1, Nq: 97, Nk: 97, H: 2, Hkv: 1, D: 16, Dv: 24, opts: { causal: true, window: [5, 7], scale: 0.5 }, dLse: true },
  { name: 'Nq=97>Nk=17 D=33 window [3,0] (empty rows)', B: 2, Nq: 97, Nk: 17, H: 2, Hkv: 1, D: 33, Dv: 8, opts: { window: [3, 0] }, dLse: true, empty: 80 * 2 * 2 },
  { name: 'Nq=97>Nk=1 D=8 Dv=1 causal', B: 1, Nq: 97, Nk: 1, H: 2, Hkv: 2, D: 8, Dv: 1, opts: { causal: true }, dLse: true, empty: 96 * 2 },
  { name: 'Nq=1 Nk=1025 D=16 Dv=8 (decode)', B: 2, Nq: 1, Nk: 1025, H: 2, Hkv: 1, D: 16, Dv: 8, opts: {}, dLse: true },
  { name: 'N=1025 D=8 causal', B: 1, Nq: 1025, Nk: 1025, H: 1, Hkv: 1, D: 8, Dv: 8, opts: { causal: true }, dLse: false },
  { name: 'N=1025 D=8 Dv=16 window [5,7]', B: 1, Nq: 1025, Nk: 1025, H: 1, Hkv: 1, D: 8, Dv: 16, opts: { window: [5, 7] }, dLse: true },
];

const DTYPES: FloatDType[] = ['float32', 'float16', 'bfloat16'];

interface Expected {
  inp: Inputs;
  dOut: Tensor;
  dLse?: Tensor;
  ref: { out: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array };
  naiveErr: Record<Quantity, number>;
  emptyRows: number[];
  unseenKeys: number[]; // (b, j, hk) flat rows of k/v that no query sees
}

type Quantity = 'out' | 'lse' | 'dq' | 'dk' | 'dv';
const QUANTITIES: Quantity[] = ['out', 'lse', 'dq', 'dk', 'dv'];

// The reference and the naive implementation depend only on (case, dtype): computed once and
// shared by every SIMD level.
const expected = perCaseAndDtype(async (c: Case, ci: number, dtype: FloatDType): Promise<Expected> => {
  const seed = 1000 * (ci + 1);
  const inp = await makeInputs(c, { seed, dtype });
  const dO = await randT([c.B, c.Nq, c.H, c.Dv], { seed: seed + 3, dtype });
  const dL = c.dLse ? await randT([c.B, c.Nq, c.H], { seed: seed + 4, dtype: 'float32' }) : undefined;
  const fwd = referenceAttention(inp.p, c.opts);
  const bwd = referenceAttentionBackward(inp.p, dO.a, dL?.a, c.opts);
  const ref = { ...fwd, ...bwd };
  const naive = naiveAttention(inp.p, c.opts, dtype, { dOut: dO.a, dLse: dL?.a });
  const naiveErr = Object.fromEntries(
    QUANTITIES.map((qn) => [qn, maxAbsErr(naive[qn]!, ref[qn])]),
  ) as Record<Quantity, number>;
  const emptyRows: number[] = [];
  for (let li = 0; li < fwd.lse.length; li++) if (fwd.lse[li] === -Infinity) emptyRows.push(li);
  const unseenKeys: number[] = [];
  for (let b = 0; b < c.B; b++)
    for (let j = 0; j < c.Nk; j++) {
      let seen = false;
      for (let i = 0; i < c.Nq && !seen; i++) seen = attentionAllows(i, j, c.Nq, c.Nk, c.opts);
      if (!seen) for (let hk = 0; hk < c.Hkv; hk++) unseenKeys.push((b * c.Nk + j) * c.Hkv + hk);
    }
  return { inp, dOut: dO.t, dLse: dL?.t, ref, naiveErr, emptyRows, unseenKeys };
});

// Ratio kernel error / naive error, worst per dtype and quantity (and where), printed at the end.
const ratios = new RatioLog('error ratios');

it('the default level is the detected one; every runnable level can be forced, others are refused', () => {
  expect(cpu.levels).toContain(defaultIsa);
  if (!process.env.ATTNKIT_CPU_ISA) expect(defaultIsa).toBe(detected);
  for (const l of cpu.levels) {
    expect(cpu.setIsa(l), l).toBe(runnable(l));
    if (runnable(l)) expect(cpu.isa()).toBe(l);
  }
  expect(cpu.setIsa(defaultIsa)).toBe(true);
  expect(cpu.isa()).toBe(defaultIsa);
});

eachIsaLevel((test, level) => {
  for (const [ci, c] of CASES.entries())
    for (const dtype of DTYPES)
      test(`${c.name} ${dtype}`, async () => {
        expect(cpu.isa()).toBe(level);
        const e = await expected(c, ci, dtype);
        expect(e.emptyRows.length).toBe(c.empty ?? 0);
        expect(e.unseenKeys.length).toBe(c.unseen ?? 0);
        const { q, k, v } = e.inp;
        const r = attention(q, k, v, c.opts);
        expect(r.out.dtype).toBe(dtype);
        expect(r.out.shape).toEqual([c.B, c.Nq, c.H, c.Dv]);
        expect(r.lse.dtype).toBe('float32');
        expect(r.lse.shape).toEqual([c.B, c.Nq, c.H]);
        const g = r.backward(e.dOut, e.dLse);
        expect(g.dq.shape).toEqual([c.B, c.Nq, c.H, c.D]);
        expect(g.dk.shape).toEqual([c.B, c.Nk, c.Hkv, c.D]);
        expect(g.dv.shape).toEqual([c.B, c.Nk, c.Hkv, c.Dv]);
        const got: Record<Quantity, Float64Array> = {
          out: await read64(r.out),
          lse: await read64(r.lse),
          dq: await read64(g.dq),
          dk: await read64(g.dk),
          dv: await read64(g.dv),
        };

        // Fully masked rows (bottom-right alignment with Nq > Nk, windows): exactly 0 / -Infinity,
        // gradients exactly 0; keys no query sees get exactly zero dk and dv.
        for (const li of e.emptyRows) {
          expect(got.lse[li], `lse row ${li}`).toBe(-Infinity);
          for (let x = 0; x < c.Dv; x++) expect(got.out[li * c.Dv + x] === 0, `out row ${li}: ${got.out[li * c.Dv + x]}`).toBe(true);
          for (let x = 0; x < c.D; x++) expect(got.dq[li * c.D + x] === 0, `dq row ${li}: ${got.dq[li * c.D + x]}`).toBe(true);
        }
        for (const kj of e.unseenKeys) {
          for (let x = 0; x < c.D; x++) expect(got.dk[kj * c.D + x] === 0, `dk row ${kj}: ${got.dk[kj * c.D + x]}`).toBe(true);
          for (let x = 0; x < c.Dv; x++) expect(got.dv[kj * c.Dv + x] === 0, `dv row ${kj}: ${got.dv[kj * c.Dv + x]}`).toBe(true);
        }

        for (const qn of QUANTITIES) {
          const err = maxAbsErr(got[qn], e.ref[qn]);
          const scale = Math.max(1, maxAbs(e.ref[qn]));
          const factor = qn === 'out' || qn === 'lse' ? 2 : 3;
          const floor = 2e-6 * scale;
          ratios.note(`${dtype} ${qn}`, err, e.naiveErr[qn], `${level} / ${c.name}`);
          expect(
            err,
            `${qn}: kernel error ${err} vs naive ${dtype} error ${e.naiveErr[qn]} (${worst(got[qn], e.ref[qn])})`,
          ).toBeLessThanOrEqual(factor * e.naiveErr[qn] + floor);
          if (dtype === 'float32')
            expect(err, `${qn}: float32 error ${err} (${worst(got[qn], e.ref[qn])})`).toBeLessThanOrEqual(1e-5 * scale);
        }
      });

  test('backward is deterministic: two runs give bit-identical dq, dk, dv', async () => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      // several key tiles (the dQ partials are reduced across key chunks) and GQA
      const s: Shape = { B: 1, Nq: 300, Nk: 333, H: 4, Hkv: 2, D: 40, Dv: 24 };
      const inp = await makeInputs(s, { seed: 7, dtype });
      const r = attention(inp.q, inp.k, inp.v, { causal: true });
      const dOut = randn([s.B, s.Nq, s.H, s.Dv], { seed: 8, dtype });
      const dLse = randn([s.B, s.Nq, s.H], { seed: 9 });
      const runs = [];
      for (let t = 0; t < 3; t++) {
        const g = t === 2 ? attentionBackward(inp.q, inp.k, inp.v, r.out, r.lse, dOut, { causal: true, dLse }) : r.backward(dOut, dLse);
        runs.push(await Promise.all([g.dq, g.dk, g.dv].map((x) => x.toArray({ raw: true }))));
      }
      for (let t = 1; t < runs.length; t++)
        for (let x = 0; x < 3; x++) expect(Buffer.from(runs[t]![x]!.buffer).equals(Buffer.from(runs[0]![x]!.buffer))).toBe(true);
      // and the forward too
      const r2 = attention(inp.q, inp.k, inp.v, { causal: true });
      expect(Buffer.from((await r2.out.toArray({ raw: true })).buffer).equals(Buffer.from((await r.out.toArray({ raw: true })).buffer))).toBe(true);
    }
  });
});

describe('functional backward and the dLse path', () => {
  it('attentionBackward equals result.backward; dLse changes dq and dk but not dv', async () => {
    const s: Shape = { B: 2, Nq: 20, Nk: 30, H: 2, Hkv: 1, D: 16, Dv: 12 };
    const inp = await makeInputs(s, { seed: 31 });
    const opts = { causal: true, window: [6, 0] as const };
    const r = attention(inp.q, inp.k, inp.v, opts);
    const dOut = await randT([s.B, s.Nq, s.H, s.Dv], { seed: 32 });
    const dLse = await randT([s.B, s.Nq, s.H], { seed: 33 });
    const a = r.backward(dOut.t, dLse.t);
    const b = attentionBackward(inp.q, inp.k, inp.v, r.out, r.lse, dOut.t, { ...opts, dLse: dLse.t });
    const n = r.backward(dOut.t);
    for (const x of ['dq', 'dk', 'dv'] as const) expect(await read64(b[x])).toEqual(await read64(a[x]));
    // dv does not depend on dLse; dq and dk do
    expect(await read64(n.dv)).toEqual(await read64(a.dv));
    expect(maxAbsErr(await read64(n.dq), await read64(a.dq))).toBeGreaterThan(1e-2);
    // dLse alone (dOut = 0): matches the reference
    const z = attentionBackward(inp.q, inp.k, inp.v, r.out, r.lse, zeros([s.B, s.Nq, s.H, s.Dv]), { ...opts, dLse: dLse.t });
    const ref = referenceAttentionBackward(inp.p, new Float64Array(s.B * s.Nq * s.H * s.Dv), dLse.a, opts);
    expect(maxAbsErr(await read64(z.dv), ref.dv)).toBe(0);
    for (const x of ['dq', 'dk'] as const) {
      const got = await read64(z[x]);
      expect(maxAbsErr(got, ref[x]), worst(got, ref[x])).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(ref[x])));
    }
  });
});
