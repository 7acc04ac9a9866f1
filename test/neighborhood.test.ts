/**
 * Conformance of na1d / na2d / na3d (forward, backward with dLse, additional keys) against the
 * float64 reference on every SIMD level this CPU has, in float32, float16 and bfloat16.
 *
 * Tolerance rule (as for dense attention, test/attention.test.ts): the kernel's error against the
 * float64 reference is at most 2x (forward) / 3x (gradients) the error of a *naive* implementation
 * in the same dtype on the same inputs, plus a tiny floor; float32 also within 1e-5 of the
 * quantity's scale. The naive implementation is test/helpers.ts's naiveMasked with the
 * neighborhood visibility (over the tokens followed by the additional keys).
 *
 * Cases: odd sizes (1-D 37, 2-D 13x17, 3-D 5x9x11); per axis, every combination of (stride > 1,
 * dilation > 1, causal) occurs on every axis, the axes of a case taking different combinations
 * (a covering set, not the full product); GQA/MQA, Dv != D, additional keys, dLse.
 * Then: functional backward forms, explicit tile shapes, determinism, error paths.
 */
import { describe, expect, it } from 'vitest';
import {
  AttnkitError,
  chooseTileShape,
  cpu,
  na1d,
  na1dBackward,
  na2d,
  na2dBackward,
  na3d,
  na3dBackward,
  neighborhoodPlan,
  randn,
  zeros,
  type FloatDType,
  type NeighborhoodOptions,
  type NeighborhoodResult,
  type Tensor,
} from '../src/index.ts';
import type { RefProblem } from '../src/reference/attention.ts';
import {
  neighborhoodOf,
  referenceNeighborhood,
  referenceNeighborhoodBackward,
  type RefNaParams,
  type RefNaProblem,
} from '../src/reference/neighborhood.ts';
import { concatSeq, maxAbs, maxAbsErr, naiveMasked, randT, read64, worst } from './helpers.ts';
import { eachIsaLevel, RatioLog, perCaseAndDtype } from './isa-levels.ts';

type Rank = 1 | 2 | 3;
const OPS = { 1: na1d, 2: na2d, 3: na3d } as const;
const BWD = { 1: na1dBackward, 2: na2dBackward, 3: na3dBackward } as const;

interface Heads {
  B: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
}

interface Case extends Heads {
  name: string;
  size: number[];
  kernel: number[];
  stride: number[];
  dilation: number[];
  causal: boolean[];
  /** additional keys (0: none) */
  M: number;
  dLse: boolean;
  scale?: number;
  /** pass kernelSize/stride/dilation/causal as plain numbers/booleans (1-D) */
  scalars?: boolean;
  tileShape?: number[];
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

// ------------------------------------------------------------------ the cases

const HEADS: Heads[] = [
  { B: 1, H: 2, Hkv: 2, D: 16, Dv: 16 },
  { B: 2, H: 2, Hkv: 1, D: 20, Dv: 12 }, // MQA, Dv != D
  { B: 1, H: 4, Hkv: 2, D: 32, Dv: 40 }, // GQA, Dv > D
  { B: 1, H: 3, Hkv: 3, D: 8, Dv: 8 },
];

/** Per-axis combination c in 0..7: bit 0 stride > 1, bit 1 dilation 2, bit 2 causal. */
function axis(c: number, k: number, blocked: boolean) {
  return { k, s: c & 1 ? (blocked ? k : Math.max(2, Math.floor(k / 2))) : 1, d: c & 2 ? 2 : 1, causal: (c & 4) !== 0 };
}

function makeCase(rank: Rank, size: number[], kernels: number[], combos: number[], i: number, extra: Partial<Case> = {}): Case {
  const ax = combos.map((c, a) => axis(c, kernels[a]!, (i + a) % 2 === 1));
  const heads = HEADS[i % HEADS.length]!;
  const M = i % 3 === 1 ? 3 : 0;
  const c: Case = {
    name: '',
    size,
    kernel: ax.map((x) => x.k),
    stride: ax.map((x) => x.s),
    dilation: ax.map((x) => x.d),
    causal: ax.map((x) => x.causal),
    ...heads,
    M,
    dLse: i % 2 === 0,
    ...extra,
  };
  c.name =
    `${rank}-D ${size.join('x')}${c.tileShape ? ` tile ${c.tileShape.join('x')}` : ''} k=${c.kernel} s=${c.stride} d=${c.dilation} causal=${c.causal.map((x) => (x ? 'T' : 'F')).join('')}` +
    ` B=${c.B} H=${c.H}/${c.Hkv} D=${c.D} Dv=${c.Dv}${c.M ? ` +${c.M} keys` : ''}${c.dLse ? ' dLse' : ''}${c.scale ? ` scale=${c.scale}` : ''}`;
  return c;
}

const CASES: Case[] = [];
// 1-D 37: all 8 combinations; kernels 7 and 6 (even) alternate.
for (let i = 0; i < 8; i++) CASES.push(makeCase(1, [37], [i % 2 ? 6 : 7], [i], i, i === 3 ? { scalars: true } : {}));
// 2-D 13x17: axis 0 takes combination i, axis 1 the permutation (3i + 5) % 8.
for (let i = 0; i < 8; i++) CASES.push(makeCase(2, [13, 17], i % 2 ? [4, 3] : [5, 7], [i, (3 * i + 5) % 8], i));
// 3-D 5x9x11: axes take i, (3i + 1) % 8, (5i + 2) % 8.
for (let i = 0; i < 8; i++) CASES.push(makeCase(3, [5, 9, 11], i % 2 ? [2, 4, 5] : [2, 3, 4], [i, (3 * i + 1) % 8, (5 * i + 2) % 8], i));
// A few more: one 3x3 NAT-like layer with a custom scale, wide 1-D windows over several tiles,
// a kernel equal to the input on one axis.
CASES.push(makeCase(2, [13, 17], [3, 3], [0, 0], 2, { scale: 0.3, M: 5, dLse: true }));
CASES.push(makeCase(1, [203], [65], [1], 0, { M: 2 }));
CASES.push(makeCase(2, [9, 31], [9, 5], [4, 3], 1));
// Large dilations (groups of unequal lengths), head dims 128/64 and 3/1, B = 2 with dilation.
CASES.push(makeCase(1, [37], [7], [0], 1, { stride: [3], dilation: [5], B: 2, H: 2, Hkv: 1, D: 128, Dv: 64, M: 2, dLse: true }));
CASES.push(makeCase(2, [11, 29], [3, 5], [4, 0], 0, { stride: [3, 2], dilation: [3, 4], B: 1, H: 2, Hkv: 2, D: 3, Dv: 1 }));
// Fully block-sparse (stride = kernel = 8 on 8x8 tiles): Full tiles only, no element masking.
// Keep it last (the covering-set test reads it from there).
CASES.push(makeCase(2, [16, 24], [8, 8], [0, 0], 2, { stride: [8, 8], tileShape: [8, 8], M: 2 }));

const DTYPES: FloatDType[] = ['float32', 'float16', 'bfloat16'];
type Quantity = 'out' | 'lse' | 'dq' | 'dk' | 'dv' | 'dAddK' | 'dAddV';

/** [B, N + M, heads, dim] -> the token part and the additional part. */
function split(a: Float64Array, B: number, N: number, M: number, row: number): [Float64Array, Float64Array] {
  const t = new Float64Array(B * N * row);
  const x = new Float64Array(B * M * row);
  for (let b = 0; b < B; b++) {
    t.set(a.subarray(b * (N + M) * row, (b * (N + M) + N) * row), b * N * row);
    x.set(a.subarray((b * (N + M) + N) * row, (b + 1) * (N + M) * row), b * M * row);
  }
  return [t, x];
}

// ------------------------------------------------------------------ expected values

interface Expected {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  addK?: Tensor;
  addV?: Tensor;
  dOut: Tensor;
  dLse?: Tensor;
  ref: Record<Quantity, Float64Array | undefined>;
  naive: Record<Quantity, number>;
}

const refParams = (c: Case): RefNaParams => ({ size: c.size, kernelSize: c.kernel, stride: c.stride, dilation: c.dilation, causal: c.causal });

function options(c: Case, e: { addK?: Tensor; addV?: Tensor }): NeighborhoodOptions {
  const o: NeighborhoodOptions = c.scalars
    ? { kernelSize: c.kernel[0]!, stride: c.stride[0]!, dilation: c.dilation[0]!, causal: c.causal[0]! }
    : { kernelSize: c.kernel, stride: c.stride, dilation: c.dilation, causal: c.causal };
  if (c.scale !== undefined) o.scale = c.scale;
  if (c.tileShape) o.tileShape = c.tileShape;
  if (e.addK) {
    o.additionalKeys = e.addK;
    o.additionalValues = e.addV;
  }
  return o;
}

// Reference and naive results depend only on (case, dtype): computed once, shared by every level.
const expected = perCaseAndDtype(async (c: Case, ci: number, dtype: FloatDType): Promise<Expected> => {
  const seed = 5000 + 100 * ci;
  const N = prod(c.size);
  const { B, H, Hkv, D, Dv, M } = c;
  const q = await randT([B, ...c.size, H, D], { seed, dtype });
  const k = await randT([B, ...c.size, Hkv, D], { seed: seed + 1, dtype });
  const v = await randT([B, ...c.size, Hkv, Dv], { seed: seed + 2, dtype });
  const addK = M ? await randT([B, M, Hkv, D], { seed: seed + 3, dtype }) : undefined;
  const addV = M ? await randT([B, M, Hkv, Dv], { seed: seed + 4, dtype }) : undefined;
  const dOut = await randT([B, ...c.size, H, Dv], { seed: seed + 5, dtype });
  const dLse = c.dLse ? await randT([B, ...c.size, H], { seed: seed + 6 }) : undefined;
  const prob: RefNaProblem = { B, H, Hkv, D, Dv, q: q.a, k: k.a, v: v.a, ...(M ? { addK: addK!.a, addV: addV!.a, M } : {}) };
  const p = refParams(c);
  const fwd = referenceNeighborhood(prob, p, c.scale);
  const bwd = referenceNeighborhoodBackward(prob, p, dOut.a, dLse?.a, c.scale);
  const ref: Expected['ref'] = { ...fwd, dq: bwd.dq, dk: bwd.dk, dv: bwd.dv, dAddK: bwd.dAddK, dAddV: bwd.dAddV };
  // naive over the tokens followed by the additional keys
  const nb = Array.from({ length: N }, (_, i) => new Set(neighborhoodOf(i, p)));
  const dp: RefProblem = {
    B, Nq: N, Nk: N + M, H, Hkv, D, Dv, q: q.a,
    k: M ? concatSeq([{ a: k.a, N }, { a: addK!.a, N: M }], B, Hkv * D) : k.a,
    v: M ? concatSeq([{ a: v.a, N }, { a: addV!.a, N: M }], B, Hkv * Dv) : v.a,
  };
  const nv = naiveMasked(dp, (i, j) => j >= N || nb[i]!.has(j), c.scale ?? 1 / Math.sqrt(D), dtype, { dOut: dOut.a, dLse: dLse?.a });
  const [ndk, ndAddK] = split(nv.dk, B, N, M, Hkv * D);
  const [ndv, ndAddV] = split(nv.dv, B, N, M, Hkv * Dv);
  const naiveVals: Record<Quantity, Float64Array> = { out: nv.out, lse: nv.lse, dq: nv.dq, dk: ndk, dv: ndv, dAddK: ndAddK, dAddV: ndAddV };
  const naive = {} as Record<Quantity, number>;
  for (const qn of Object.keys(naiveVals) as Quantity[]) if (ref[qn]) naive[qn] = maxAbsErr(naiveVals[qn], ref[qn]!);
  return { q: q.t, k: k.t, v: v.t, addK: addK?.t, addV: addV?.t, dOut: dOut.t, dLse: dLse?.t, ref, naive };
});

/** Asserts the tolerance rule for every quantity present in `got`. */
function expectWithinRule(got: Partial<Record<Quantity, Float64Array>>, e: Expected, dtype: FloatDType, what: string) {
  for (const qn of Object.keys(got) as Quantity[]) {
    const ref = e.ref[qn]!;
    const err = maxAbsErr(got[qn]!, ref);
    const scale = Math.max(1, maxAbs(ref));
    const factor = qn === 'out' || qn === 'lse' ? 2 : 3;
    ratios.note(`${dtype} ${qn}`, err, e.naive[qn]!, what);
    expect(err, `${what} ${qn}: kernel error ${err} vs naive ${dtype} error ${e.naive[qn]} (${worst(got[qn]!, ref)})`).toBeLessThanOrEqual(
      factor * e.naive[qn]! + 2e-6 * scale,
    );
    if (dtype === 'float32') expect(err, `${what} ${qn}: float32 error ${err}`).toBeLessThanOrEqual(1e-5 * scale);
  }
}

// Worst kernel/naive error ratio per dtype and quantity, printed with ATTNKIT_TEST_RATIOS=1.
const ratios = new RatioLog('error ratios');

// ------------------------------------------------------------------ conformance on every level

it('the covering set has every (stride > 1, dilation > 1, causal) combination on every axis', () => {
  for (const rank of [1, 2, 3] as const)
    for (let a = 0; a < rank; a++) {
      const seen = new Set(
        CASES.filter((c) => c.size.length === rank).map((c) => `${c.stride[a]! > 1}/${c.dilation[a]! > 1}/${c.causal[a]}`),
      );
      expect(seen.size, `rank ${rank} axis ${a}`).toBe(8);
    }
  // the fully block-sparse case is one
  const fbs = CASES[CASES.length - 1]!;
  const plan = neighborhoodPlan({ rank: 2, size: fbs.size, kernel: fbs.kernel, stride: fbs.stride, dilation: fbs.dilation, causal: fbs.causal, tile: fbs.tileShape! });
  expect(plan.partialPairs).toBe(0);
  expect(plan.fullPairs).toBeGreaterThan(0);
  // odd sizes, GQA, MQA, Dv != D, additional keys and dLse all occur for every rank
  for (const rank of [1, 2, 3]) {
    const cs = CASES.filter((c) => c.size.length === rank);
    expect(cs.some((c) => c.H > c.Hkv && c.Hkv > 1)).toBe(true);
    expect(cs.some((c) => c.Hkv === 1 && c.H > 1)).toBe(true);
    expect(cs.some((c) => c.Dv !== c.D)).toBe(true);
    expect(cs.some((c) => c.M > 0)).toBe(true);
    expect(cs.some((c) => c.dLse)).toBe(true);
    expect(cs.some((c) => c.kernel.some((k) => k % 2 === 0))).toBe(true);
  }
});

eachIsaLevel((test, level) => {

  for (const [ci, c] of CASES.entries())
    for (const dtype of DTYPES)
      test(`${c.name} ${dtype}`, async () => {
        expect(cpu.isa()).toBe(level);
        const e = await expected(c, ci, dtype);
        const rank = c.size.length as Rank;
        const r = OPS[rank](e.q, e.k, e.v, options(c, e));
        expect(r.out.dtype).toBe(dtype);
        expect(r.out.shape).toEqual([c.B, ...c.size, c.H, c.Dv]);
        expect(r.lse.dtype).toBe('float32');
        expect(r.lse.shape).toEqual([c.B, ...c.size, c.H]);
        const g = r.backward(e.dOut, e.dLse);
        expect(g.dq.shape).toEqual(e.q.shape);
        expect(g.dk.shape).toEqual(e.k.shape);
        expect(g.dv.shape).toEqual(e.v.shape);
        const got: Partial<Record<Quantity, Float64Array>> = {
          out: await read64(r.out),
          lse: await read64(r.lse),
          dq: await read64(g.dq),
          dk: await read64(g.dk),
          dv: await read64(g.dv),
        };
        if (c.M) {
          expect(g.dAdditionalKeys?.shape).toEqual(e.addK!.shape);
          expect(g.dAdditionalValues?.shape).toEqual(e.addV!.shape);
          got.dAddK = await read64(g.dAdditionalKeys!);
          got.dAddV = await read64(g.dAdditionalValues!);
        } else {
          expect(g.dAdditionalKeys).toBeUndefined();
          expect(g.dAdditionalValues).toBeUndefined();
        }
        expectWithinRule(got, e, dtype, `${level} / ${c.name}`);
        for (const t of [r.out, r.lse, g.dq, g.dk, g.dv, g.dAdditionalKeys, g.dAdditionalValues]) t?.dispose();
      });
});

// ------------------------------------------------------------------ functional forms, tiles, determinism

const raw = async (t: Tensor) => Buffer.from((await t.toArray({ raw: true })).buffer);
async function expectBitEqual(a: Tensor, b: Tensor, what: string) {
  expect((await raw(a)).equals(await raw(b)), what).toBe(true);
}

describe('functional backward', () => {
  // One case per rank, with and without additional keys.
  const picks = [0, 1, 8, 9, 16, 17].map((i) => [i, CASES[i]!] as const);
  it.each(picks.map(([i, c]) => [c.name, i, c] as const))('%s', async (_name, ci, c) => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const e = await expected(c, ci, dtype);
      const rank = c.size.length as Rank;
      const opts = options(c, e);
      const r = OPS[rank](e.q, e.k, e.v, opts);
      const a = r.backward(e.dOut, e.dLse);
      const b = BWD[rank](e.q, e.k, e.v, r.out, r.lse, e.dOut, { ...opts, ...(e.dLse ? { dLse: e.dLse } : {}) });
      for (const x of ['dq', 'dk', 'dv', 'dAdditionalKeys', 'dAdditionalValues'] as const) {
        expect(b[x] === undefined, x).toBe(a[x] === undefined);
        if (a[x]) await expectBitEqual(b[x]!, a[x], `${dtype} ${x}`);
      }
    }
  });

  it('dLse alone (dOut = 0) matches the reference; dv does not depend on dLse', async () => {
    const c = CASES[9]!; // 2-D with additional keys
    const e = await expected(c, 9, 'float32');
    const opts = options(c, e);
    const r = na2d(e.q, e.k, e.v, opts);
    const dLse = await randT([c.B, ...c.size, c.H], { seed: 77 });
    const z = na2dBackward(e.q, e.k, e.v, r.out, r.lse, zeros(e.dOut.shape), { ...opts, dLse: dLse.t });
    const prob: RefNaProblem = {
      B: c.B, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.Dv,
      q: await read64(e.q), k: await read64(e.k), v: await read64(e.v),
      addK: await read64(e.addK!), addV: await read64(e.addV!), M: c.M,
    };
    const ref = referenceNeighborhoodBackward(prob, refParams(c), new Float64Array(prod(e.dOut.shape)), dLse.a, c.scale);
    expect(maxAbs(await read64(z.dv))).toBe(0);
    expect(maxAbs(await read64(z.dAdditionalValues!))).toBe(0);
    for (const [x, want] of [['dq', ref.dq], ['dk', ref.dk], ['dAdditionalKeys', ref.dAddK!]] as const) {
      const got = await read64(z[x]!);
      expect(maxAbs(want)).toBeGreaterThan(1e-3);
      expect(maxAbsErr(got, want), `${x}: ${worst(got, want)}`).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(want)));
    }
  });
});

describe('tile shapes', () => {
  const TILES: Record<Rank, number[][]> = {
    1: [[64]],
    2: [[8, 8], [4, 16], [16, 4], [2, 32], [32, 2], [1, 64]],
    3: [[4, 4, 4], [2, 4, 8], [1, 8, 8], [8, 2, 4], [4, 16, 1]],
  };
  // non-causal, strided, dilated and causal cases per rank
  const picks = [1, 6, 10, 13, 18, 21].map((i) => [CASES[i]!.name, i, CASES[i]!] as const);
  it.each(picks)('%s: every tile shape gives the reference result', async (_n, ci, c) => {
    const rank = c.size.length as Rank;
    const e = await expected(c, ci, 'float32');
    const chosen = chooseTileShape({ rank, size: c.size, kernel: c.kernel, stride: c.stride, dilation: c.dilation, causal: c.causal });
    expect(prod(chosen)).toBe(64);
    expect(chosen).toHaveLength(rank);
    let first: NeighborhoodResult | undefined;
    for (const tileShape of TILES[rank]) {
      const r = OPS[rank](e.q, e.k, e.v, { ...options(c, e), tileShape });
      const g = r.backward(e.dOut, e.dLse);
      const got = { out: await read64(r.out), lse: await read64(r.lse), dq: await read64(g.dq), dk: await read64(g.dk), dv: await read64(g.dv) };
      expectWithinRule(got, e, 'float32', `tile [${tileShape}]`);
      // and close to the first tile shape's result (only the summation order differs)
      if (first) expect(maxAbsErr(got.out, await read64(first.out))).toBeLessThanOrEqual(2e-6 * Math.max(1, maxAbs(got.out)));
      first ??= r;
    }
  });

  it('[4, 16] and [8, 8] give the same na2d result in bfloat16 (within its rounding)', async () => {
    const c = CASES[8]!;
    const e = await expected(c, 8, 'bfloat16');
    const a = na2d(e.q, e.k, e.v, { ...options(c, e), tileShape: [4, 16] });
    const b = na2d(e.q, e.k, e.v, { ...options(c, e), tileShape: [8, 8] });
    expect(maxAbsErr(await read64(a.lse), await read64(b.lse))).toBeLessThanOrEqual(1e-5);
    // one bfloat16 ulp of the largest output at most
    expect(maxAbsErr(await read64(a.out), await read64(b.out))).toBeLessThanOrEqual(2 ** -7 * maxAbs(e.ref.out!));
  });
});

describe('determinism', () => {
  it('backward gives bit-identical dq, dk, dv (and additional-key gradients) run after run', async () => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      // 2-D with several tiles, GQA, dilation, additional keys
      const size = [24, 21];
      const B = 1, H = 4, Hkv = 2, D = 40, Dv = 24, M = 4;
      const q = randn([B, ...size, H, D], { seed: 1, dtype });
      const k = randn([B, ...size, Hkv, D], { seed: 2, dtype });
      const v = randn([B, ...size, Hkv, Dv], { seed: 3, dtype });
      const addK = randn([B, M, Hkv, D], { seed: 4, dtype });
      const addV = randn([B, M, Hkv, Dv], { seed: 5, dtype });
      const dOut = randn([B, ...size, H, Dv], { seed: 6, dtype });
      const dLse = randn([B, ...size, H], { seed: 7 });
      for (const extra of [{}, { additionalKeys: addK, additionalValues: addV }]) {
        const opts: NeighborhoodOptions = { kernelSize: [7, 5], stride: [1, 2], dilation: [2, 1], causal: [false, true], ...extra };
        const r = na2d(q, k, v, opts);
        const runs = [r.backward(dOut, dLse), r.backward(dOut, dLse), na2dBackward(q, k, v, r.out, r.lse, dOut, { ...opts, dLse })];
        for (const g of runs.slice(1))
          for (const x of ['dq', 'dk', 'dv', 'dAdditionalKeys', 'dAdditionalValues'] as const)
            if (g[x]) await expectBitEqual(g[x]!, runs[0]![x]!, `${dtype} ${x}`);
        const r2 = na2d(q, k, v, opts);
        await expectBitEqual(r2.out, r.out, `${dtype} out`);
        await expectBitEqual(r2.lse, r.lse, `${dtype} lse`);
      }
    }
  });
});

// ------------------------------------------------------------------ errors

describe('errors', () => {
  const q2 = randn([1, 6, 7, 2, 8]);
  const k2 = randn([1, 6, 7, 1, 8]);
  const v2 = randn([1, 6, 7, 1, 4]);

  function thrown(f: () => unknown): AttnkitError {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(AttnkitError);
      return e as AttnkitError;
    }
    throw new Error('expected an AttnkitError, nothing was thrown');
  }

  it.each([
    ["kernelSize 1 on one axis", { kernelSize: [3, 1] }, 'ERR_ATTNKIT_ARGUMENT', 'kernelSize', "na2d: expected 'kernelSize' to be > 1 on axis 1, received 1"],
    ['kernelSize 0', { kernelSize: 0 }, 'ERR_ATTNKIT_ARGUMENT', 'kernelSize', "na2d: expected 'kernelSize' to be a positive integer on axis 0, received 0"],
    ['kernelSize 2.5', { kernelSize: [3, 2.5] }, 'ERR_ATTNKIT_ARGUMENT', 'kernelSize', "na2d: expected 'kernelSize' to be a positive integer on axis 1, received 2.5"],
    ['stride > kernel', { kernelSize: 3, stride: [4, 1] }, 'ERR_ATTNKIT_ARGUMENT', 'stride', "na2d: expected 'stride' to be <= the kernel size 3 on axis 0, received 4"],
    ['stride 0', { kernelSize: 3, stride: [1, 0] }, 'ERR_ATTNKIT_ARGUMENT', 'stride', "na2d: expected 'stride' to be a positive integer on axis 1, received 0"],
    [
      'kernel x dilation > input',
      { kernelSize: [3, 4], dilation: [2, 2] },
      'ERR_ATTNKIT_SHAPE',
      'kernelSize',
      "na2d: expected 'kernelSize' times 'dilation' to be <= the input size 7 on axis 1, received 4 x 2 = 8",
    ],
    ['kernel > input', { kernelSize: [7, 3] }, 'ERR_ATTNKIT_SHAPE', 'kernelSize', "na2d: expected 'kernelSize' times 'dilation' to be <= the input size 6 on axis 0, received 7 x 1 = 7"],
    ['dilation 0', { kernelSize: 3, dilation: [0, 1] }, 'ERR_ATTNKIT_ARGUMENT', 'dilation', "na2d: expected 'dilation' to be a positive integer on axis 0, received 0"],
    [
      'per-axis tuple of the wrong length',
      { kernelSize: [3, 3, 3] },
      'ERR_ATTNKIT_ARGUMENT',
      'kernelSize',
      "na2d: expected 'kernelSize' to be a positive integer or 2 of them (one per axis), received [3,3,3]",
    ],
    ['causal tuple of the wrong length', { kernelSize: 3, causal: [true] }, 'ERR_ATTNKIT_ARGUMENT', 'causal', "na2d: expected 'causal' to be a boolean or 2 of them (one per axis), received [true]"],
    ['causal not a boolean', { kernelSize: 3, causal: [true, 1] }, 'ERR_ATTNKIT_ARGUMENT', 'causal', "na2d: expected 'causal' to be a boolean on axis 1, received 1"],
    ['tileShape product != 64', { kernelSize: 3, tileShape: [4, 8] }, 'ERR_ATTNKIT_ARGUMENT', 'tileShape', "na2d: expected 'tileShape' to hold 64 tokens (the product of its entries), received [4,8]"],
    [
      'tileShape of the wrong length',
      { kernelSize: 3, tileShape: [64] },
      'ERR_ATTNKIT_ARGUMENT',
      'tileShape',
      "na2d: expected 'tileShape' to be a positive integer or 2 of them (one per axis), received [64]",
    ],
    ['scale 0', { kernelSize: 3, scale: 0 }, 'ERR_ATTNKIT_ARGUMENT', 'scale', "na2d: expected 'scale' to be a finite number > 0, received 0"],
    [
      'unknown option',
      { kernelSize: 3, window: [1, 1] },
      'ERR_ATTNKIT_ARGUMENT',
      'window',
      "na2d: unknown option 'window' (known options: kernelSize, stride, dilation, causal, scale, additionalKeys, additionalValues, tileShape, stream)",
    ],
    ['missing kernelSize', { stride: 1 }, 'ERR_ATTNKIT_ARGUMENT', 'kernelSize', "na2d: missing option 'kernelSize'"],
  ] as const)('%s', (_what, opts, code, argument, message) => {
    const e = thrown(() => na2d(q2, k2, v2, opts as unknown as NeighborhoodOptions));
    expect(e.code).toBe(code);
    expect(e.op).toBe('na2d');
    expect(e.argument).toBe(argument);
    expect(e.message).toBe(message);
  });

  it('options missing altogether', () => {
    const e = thrown(() => (na2d as (...a: unknown[]) => unknown)(q2, k2, v2));
    expect(e.code).toBe('ERR_ATTNKIT_ARGUMENT');
    expect(e.message).toBe("na2d: expected 'options' to be an object with at least 'kernelSize', received undefined");
  });

  it('wrong rank: na2d given 1-D and 3-D layouts, na1d given 2-D', () => {
    const q1 = randn([1, 9, 2, 8]);
    let e = thrown(() => na2d(q1, q1, q1, { kernelSize: 3 }));
    expect(e.code).toBe('ERR_ATTNKIT_SHAPE');
    expect(e.argument).toBe('q');
    expect(e.message).toBe("na2d: expected 'q' to have rank 5 ([B, X, Y, H, D]), received rank 4 [1, 9, 2, 8]");
    e = thrown(() => na1d(q2, k2, v2, { kernelSize: 3 }));
    expect(e.message).toBe("na1d: expected 'q' to have rank 4 ([B, X, H, D]), received rank 5 [1, 6, 7, 2, 8]");
    const q3 = randn([1, 4, 4, 4, 1, 8]);
    e = thrown(() => na3d(q3, q3, randn([1, 4, 4, 1, 8]), { kernelSize: 2 }));
    expect(e.argument).toBe('v');
    expect(e.message).toBe("na3d: expected 'v' to have rank 6 ([B, X, Y, Z, Hkv, Dv]), received rank 5 [1, 4, 4, 1, 8]");
  });

  it('k and v must share the spatial shape of q; heads must divide', () => {
    let e = thrown(() => na2d(q2, randn([1, 6, 6, 1, 8]), v2, { kernelSize: 3 }));
    expect(e.code).toBe('ERR_ATTNKIT_SHAPE');
    expect(e.message).toBe("na2d: expected 'k' to have shape [1, 6, 7, 1, 8], received [1, 6, 6, 1, 8]");
    e = thrown(() => na2d(randn([1, 6, 7, 3, 8]), randn([1, 6, 7, 2, 8]), randn([1, 6, 7, 2, 8]), { kernelSize: 3 }));
    expect(e.code).toBe('ERR_ATTNKIT_SHAPE');
    expect(e.argument).toBe('k');
    expect(e.message).toBe("na2d: expected 'k' to have a head count that divides q's 3 heads (GQA/MQA), received 2");
  });

  it('additional keys without values (and the reverse), or of the wrong shape', () => {
    const addK = randn([1, 3, 1, 8]);
    const addV = randn([1, 3, 1, 4]);
    let e = thrown(() => na2d(q2, k2, v2, { kernelSize: 3, additionalKeys: addK }));
    expect(e.code).toBe('ERR_ATTNKIT_ARGUMENT');
    expect(e.argument).toBe('additionalValues');
    expect(e.message).toBe("na2d: 'additionalKeys' and 'additionalValues' must be given together");
    e = thrown(() => na2d(q2, k2, v2, { kernelSize: 3, additionalValues: addV }));
    expect(e.argument).toBe('additionalKeys');
    e = thrown(() => na2d(q2, k2, v2, { kernelSize: 3, additionalKeys: addK, additionalValues: randn([1, 2, 1, 4]) }));
    expect(e.code).toBe('ERR_ATTNKIT_SHAPE');
    expect(e.message).toBe("na2d: expected 'additionalValues' to have shape [1, 3, 1, 4], received [1, 2, 1, 4]");
    e = thrown(() => na2d(q2, k2, v2, { kernelSize: 3, additionalKeys: randn([1, 3, 1, 8], { dtype: 'bfloat16' }), additionalValues: addV }));
    expect(e.code).toBe('ERR_ATTNKIT_DTYPE');
    expect(e.argument).toBe('additionalKeys');
  });

  it('dtype mismatch between q, k and v', () => {
    const e = thrown(() => na2d(q2, k2.to('float16'), v2, { kernelSize: 3 }));
    expect(e.code).toBe('ERR_ATTNKIT_DTYPE');
    expect(e.message).toBe("na2d: expected 'k' to have the dtype of 'q' ('float32'), received 'float16'");
  });

  it('backward: dOut and dLse are checked (op na2dBackward)', () => {
    const r = na2d(q2, k2, v2, { kernelSize: 3 });
    let e = thrown(() => r.backward(randn([1, 6, 7, 2, 8])));
    expect(e.code).toBe('ERR_ATTNKIT_SHAPE');
    expect(e.op).toBe('na2dBackward');
    expect(e.message).toBe("na2dBackward: expected 'dOut' to have shape [1, 6, 7, 2, 4], received [1, 6, 7, 2, 8]");
    e = thrown(() => r.backward(randn([1, 6, 7, 2, 4]), randn([1, 6, 7, 2], { dtype: 'bfloat16' })));
    expect(e.code).toBe('ERR_ATTNKIT_DTYPE');
    expect(e.message).toBe("na2dBackward: expected 'dLse' to have dtype 'float32', received 'bfloat16'");
    e = thrown(() => na2dBackward(q2, k2, v2, r.out, r.lse, randn([1, 6, 7, 2, 4]), { kernelSize: [3, 9] }));
    expect(e.op).toBe('na2dBackward');
    expect(e.message).toBe("na2dBackward: expected 'kernelSize' times 'dilation' to be <= the input size 7 on axis 1, received 9 x 1 = 9");
  });
});
