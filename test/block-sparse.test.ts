/**
 * Conformance of block-sparse attention (forward, backward, dLse path, functional backward) against
 * the float64 reference on every SIMD level this CPU has: random block masks at densities 0, 3%,
 * 30% and 100%, random element masks with partial blocks, every builder, non-square blocks, tails,
 * GQA/MQA, Nq != Nk, per-(b, h) masks, empty rows. Tolerance rule as for dense attention (test/
 * attention.test.ts): at most 2x (out, lse) / 3x (gradients) the error of a naive implementation in
 * the same dtype (the same masking, test/helpers.ts `naiveMasked`), plus a tiny floor; float32 also gets
 * 1e-5 of the quantity's scale. Then: tiny random masks from explicit lists for every block-size
 * combination (the kernel's tile plan and row masks against toDense), error paths.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AttnkitError,
  BlockMask,
  attention,
  blockSparseAttention,
  blockSparseAttentionBackward,
  cpu,
  randn,
  tensor,
  type BlockMaskData,
  type FloatDType,
  type Tensor,
} from '../src/index.ts';
import type { RefProblem } from '../src/reference/attention.ts';
import { referenceBlockSparse, referenceBlockSparseBackward } from '../src/reference/block-sparse.ts';
import { makeInputs, maxAbs, maxAbsErr, naiveMasked, randT, read64, rng, worst, type Allows, type Inputs, type Shape } from './helpers.ts';
import { eachIsaLevel, RatioLog, perCaseAndDtype } from './isa-levels.ts';

type Quantity = 'out' | 'lse' | 'dq' | 'dk' | 'dv';
const QUANTITIES: Quantity[] = ['out', 'lse', 'dq', 'dk', 'dv'];
const DTYPES: FloatDType[] = ['float32', 'float16', 'bfloat16'];

/** Random block grid [B, H, Qb, Kb] with exactly round(density * size) listed blocks. */
function randomBlocks(seed: number, shape: [number, number, number, number], density: number): Uint8Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const r = rng(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const grid = new Uint8Array(n);
  for (let i = 0; i < Math.round(density * n); i++) grid[order[i]!] = 1;
  return grid;
}

function blocksMask(seed: number, B: number, H: number, Nq: number, Nk: number, bq: number, bk: number, density: number): BlockMask {
  const shape: [number, number, number, number] = [B, H, Math.ceil(Nq / bq), Math.ceil(Nk / bk)];
  return BlockMask.fromBlocks(randomBlocks(seed, shape, density), shape, { Nq, Nk, blockQ: bq, blockK: bk });
}

/** Random element mask: each block absent, full or partial with probability ~1/3, partial elements at `p`. */
function elementMask(seed: number, B: number, H: number, Nq: number, Nk: number, bq: number, bk: number, p = 0.4): BlockMask {
  const r = rng(seed);
  const Qb = Math.ceil(Nq / bq);
  const Kb = Math.ceil(Nk / bk);
  const kind = Array.from({ length: B * H * Qb * Kb }, () => Math.floor(r() * 3));
  const bits = new Uint8Array(B * H * Nq * Nk);
  for (let i = 0; i < bits.length; i++) bits[i] = r() < p ? 1 : 0;
  return BlockMask.fromPredicate(
    (b, h, q, k) => {
      const c = kind[((b * H + h) * Qb + Math.floor(q / bq)) * Kb + Math.floor(k / bk)]!;
      return c === 1 || (c === 2 && bits[((b * H + h) * Nq + q) * Nk + k] === 1);
    },
    { B, H, Nq, Nk, blockQ: bq, blockK: bk },
  );
}

interface Case extends Shape {
  name: string;
  mask: () => BlockMask;
  scale?: number;
  dLse: boolean;
  /** expected block density (listed / all), when the case is about it */
  blockDensity?: number;
  /** at least this many (b, i, h) rows see no key */
  minEmpty?: number;
}

const CASES: Case[] = [
  {
    name: 'density 0 (all rows empty) blocks 64x64',
    ...{ B: 1, Nq: 150, Nk: 150, H: 2, Hkv: 2, D: 32, Dv: 32 },
    mask: () => blocksMask(1, 1, 1, 150, 150, 64, 64, 0),
    dLse: true,
    blockDensity: 0,
    minEmpty: 300,
  },
  {
    name: 'density 3% per-(b,h) B=2 H=2 blocks 16x16',
    ...{ B: 2, Nq: 320, Nk: 320, H: 2, Hkv: 2, D: 32, Dv: 32 },
    mask: () => blocksMask(2, 2, 2, 320, 320, 16, 16, 0.03),
    dLse: true,
    blockDensity: 0.03,
    minEmpty: 1,
  },
  {
    name: 'density 30% per-head GQA Nq=200<Nk=333 blocks 32x64',
    ...{ B: 1, Nq: 200, Nk: 333, H: 4, Hkv: 2, D: 64, Dv: 48 },
    mask: () => blocksMask(3, 1, 4, 200, 333, 32, 64, 0.3),
    dLse: false,
    blockDensity: 0.3,
  },
  {
    name: 'density 100% Nq=97>Nk=77 MQA blocks 128x16',
    ...{ B: 2, Nq: 97, Nk: 77, H: 3, Hkv: 1, D: 40, Dv: 24 },
    mask: () => blocksMask(4, 1, 1, 97, 77, 128, 16, 1),
    dLse: true,
    blockDensity: 1,
  },
  {
    name: 'random partial blocks per-(b,h) B=2 H=2 tails blocks 16x128',
    ...{ B: 2, Nq: 130, Nk: 260, H: 2, Hkv: 1, D: 64, Dv: 64 },
    mask: () => elementMask(5, 2, 2, 130, 260, 16, 128),
    dLse: true,
  },
  {
    name: 'random partial blocks and causal, blocks 128x16',
    ...{ B: 1, Nq: 140, Nk: 140, H: 2, Hkv: 2, D: 16, Dv: 16 },
    mask: () => elementMask(6, 1, 2, 140, 140, 128, 16, 0.5).and(BlockMask.causal(140, 140, { blockQ: 128, blockK: 16 })),
    dLse: false,
  },
  {
    name: 'causal Nq=100<Nk=300 blocks 64x32',
    ...{ B: 1, Nq: 100, Nk: 300, H: 2, Hkv: 1, D: 64, Dv: 64 },
    mask: () => BlockMask.causal(100, 300, { blockQ: 64, blockK: 32 }),
    dLse: true,
  },
  {
    name: 'causal Nq=300>Nk=100 (empty rows) blocks 32x32',
    ...{ B: 1, Nq: 300, Nk: 100, H: 2, Hkv: 2, D: 32, Dv: 32 },
    mask: () => BlockMask.causal(300, 100, { blockQ: 32, blockK: 32 }),
    dLse: true,
    minEmpty: 200 * 2,
  },
  {
    name: 'slidingWindow(20, 5) N=200 blocks 16x64 scale 0.3',
    ...{ B: 1, Nq: 200, Nk: 200, H: 2, Hkv: 2, D: 32, Dv: 40 },
    mask: () => BlockMask.slidingWindow(200, 200, 20, 5, { blockQ: 16, blockK: 64 }),
    scale: 0.3,
    dLse: false,
  },
  {
    name: 'slidingWindow(33, 0, causal) Nq=90<Nk=250 blocks 32x128',
    ...{ B: 2, Nq: 90, Nk: 250, H: 2, Hkv: 2, D: 48, Dv: 48 },
    mask: () => BlockMask.slidingWindow(90, 250, 33, 0, { blockQ: 32, blockK: 128, causal: true }),
    dLse: true,
  },
  {
    name: 'documents [1, 0, 37, 0, 64, 1, 90] causal blocks 32x16',
    ...{ B: 1, Nq: 193, Nk: 193, H: 2, Hkv: 1, D: 32, Dv: 32 },
    mask: () => BlockMask.documents([1, 0, 37, 0, 64, 1, 90], { blockQ: 32, blockK: 16, causal: true }),
    dLse: true,
  },
  {
    name: 'documents [100, 0, 1, 92] blocks 64x64',
    ...{ B: 1, Nq: 193, Nk: 193, H: 2, Hkv: 2, D: 64, Dv: 64 },
    mask: () => BlockMask.documents([100, 0, 1, 92], { blockQ: 64, blockK: 64 }),
    dLse: false,
  },
  {
    name: 'neighborhood 2-D 12x13 kernel 5x3 blocks 16x32',
    ...{ B: 1, Nq: 156, Nk: 156, H: 2, Hkv: 2, D: 32, Dv: 32 },
    mask: () => BlockMask.neighborhood({ size: [12, 13], kernelSize: [5, 3], dilation: [1, 2] }, { blockQ: 16, blockK: 32 }),
    dLse: true,
  },
  {
    name: 'fromPredicate per-(b,h) B=2 H=2 with empty rows, Nq=77 Nk=91 blocks 16x16',
    ...{ B: 2, Nq: 77, Nk: 91, H: 2, Hkv: 2, D: 16, Dv: 8 },
    mask: () =>
      BlockMask.fromPredicate((b, h, q, k) => q % 5 !== 3 && (((b + 1) * (h + 2) * (q + 3) + k * 7) % 4 === 0 || k === q + b + h), {
        B: 2,
        H: 2,
        Nq: 77,
        Nk: 91,
        blockQ: 16,
        blockK: 16,
      }),
    dLse: true,
    minEmpty: 15 * 4,
  },
  {
    name: 'causal.or(window) per-head B=1 H=4 GQA blocks 64x128, D=128',
    ...{ B: 1, Nq: 200, Nk: 200, H: 4, Hkv: 2, D: 128, Dv: 64 },
    mask: () =>
      BlockMask.fromPredicate((_b, h, q, k) => k <= q - 50 * h, { H: 4, Nq: 200, Nk: 200, blockQ: 64, blockK: 128 }).or(
        BlockMask.slidingWindow(200, 200, 0, 10, { blockQ: 64, blockK: 128 }),
      ),
    dLse: false,
  },
];

interface Expected {
  inp: Inputs;
  mask: BlockMask;
  dense: Uint8Array;
  dOut: Tensor;
  dLse?: Tensor;
  ref: Record<Quantity, Float64Array>;
  naiveErr: Record<Quantity, number>;
  emptyRows: number[];
  unseenKeys: number[];
}

const masks = new Map<number, Promise<{ mask: BlockMask; dense: Uint8Array }>>();
function maskOf(ci: number) {
  let m = masks.get(ci);
  if (!m) {
    m = (async () => {
      const mask = CASES[ci]!.mask();
      return { mask, dense: await mask.toDense() };
    })();
    masks.set(ci, m);
  }
  return m;
}

const expected = perCaseAndDtype(async (c: Case, ci: number, dtype: FloatDType): Promise<Expected> => {
  const { mask, dense } = await maskOf(ci);
  const seed = 5000 + 100 * ci;
  const inp = await makeInputs(c, { seed, dtype });
  const dO = await randT([c.B, c.Nq, c.H, c.Dv], { seed: seed + 3, dtype });
  const dL = c.dLse ? await randT([c.B, c.Nq, c.H], { seed: seed + 4, dtype: 'float32' }) : undefined;
  const rm = { data: dense, B: mask.B, H: mask.H };
  const fwd = referenceBlockSparse(inp.p, rm, c.scale);
  const bwd = referenceBlockSparseBackward(inp.p, rm, dO.a, dL?.a, c.scale);
  const ref = { ...fwd, ...bwd };
  const allows: Allows = (i, j, b, h) => dense[(((b % mask.B) * mask.H + (h % mask.H)) * c.Nq + i) * c.Nk + j] === 1;
  const naive = naiveMasked(inp.p, allows, c.scale ?? 1 / Math.sqrt(c.D), dtype, { dOut: dO.a, dLse: dL?.a });
  const naiveErr = Object.fromEntries(QUANTITIES.map((qn) => [qn, maxAbsErr(naive[qn], ref[qn])])) as Record<Quantity, number>;
  const emptyRows: number[] = [];
  for (let li = 0; li < fwd.lse.length; li++) if (fwd.lse[li] === -Infinity) emptyRows.push(li);
  const unseenKeys: number[] = [];
  const group = c.H / c.Hkv;
  for (let b = 0; b < c.B; b++)
    for (let j = 0; j < c.Nk; j++)
      for (let hk = 0; hk < c.Hkv; hk++) {
        let seen = false;
        for (let h = hk * group; h < (hk + 1) * group && !seen; h++) for (let i = 0; i < c.Nq && !seen; i++) seen = allows(i, j, b, h);
        if (!seen) unseenKeys.push((b * c.Nk + j) * c.Hkv + hk);
      }
  return { inp, mask, dense, dOut: dO.t, dLse: dL?.t, ref, naiveErr, emptyRows, unseenKeys };
});

const ratios = new RatioLog('error ratios (block-sparse)');

it('the cases are what they claim (densities, empty rows)', async () => {
  for (const [ci, c] of CASES.entries()) {
    const { mask } = await maskOf(ci);
    expect([mask.Nq, mask.Nk], c.name).toEqual([c.Nq, c.Nk]);
    if (c.blockDensity !== undefined) expect(await mask.blockDensity(), c.name).toBeCloseTo(c.blockDensity, 2);
    const e = await expected(c, ci, 'float32');
    expect(e.emptyRows.length, c.name).toBeGreaterThanOrEqual(c.minEmpty ?? 0);
  }
});

eachIsaLevel((test, level) => {

  for (const [ci, c] of CASES.entries())
    for (const dtype of DTYPES)
      test(`${c.name} ${dtype}`, async () => {
        expect(cpu.isa()).toBe(level);
        const e = await expected(c, ci, dtype);
        const { q, k, v } = e.inp;
        const opts = c.scale === undefined ? {} : { scale: c.scale };
        const r = blockSparseAttention(q, k, v, e.mask, opts);
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
        // Rows that see no key: out exactly 0, lse exactly -Infinity,
        // dq exactly 0; keys no query of their kv head sees: dk, dv exactly 0.
        const bad: string[] = [];
        const zeroRow = (qn: Quantity, row: number, n: number) => {
          for (let x = 0; x < n; x++) if (got[qn][row * n + x] !== 0) bad.push(`${qn} row ${row}: ${got[qn][row * n + x]}`);
        };
        for (const li of e.emptyRows) {
          if (got.lse[li] !== -Infinity) bad.push(`lse row ${li}: ${got.lse[li]}`);
          zeroRow('out', li, c.Dv);
          zeroRow('dq', li, c.D);
        }
        for (const kj of e.unseenKeys) {
          zeroRow('dk', kj, c.D);
          zeroRow('dv', kj, c.Dv);
        }
        expect(bad.slice(0, 5), `${bad.length} non-zero entries in empty rows / unseen keys`).toEqual([]);
        for (const qn of QUANTITIES) {
          const err = maxAbsErr(got[qn], e.ref[qn]);
          const scale = Math.max(1, maxAbs(e.ref[qn]));
          const factor = qn === 'out' || qn === 'lse' ? 2 : 3;
          const floor = 2e-6 * scale;
          const naive = e.naiveErr[qn];
          ratios.note(`${dtype} ${qn}`, err, naive, `${level} / ${c.name}`);
          expect(err, `${qn}: kernel error ${err} vs naive ${dtype} error ${naive} (${worst(got[qn], e.ref[qn])})`).toBeLessThanOrEqual(
            factor * naive + floor,
          );
          if (dtype === 'float32') expect(err, `${qn}: float32 error ${err} (${worst(got[qn], e.ref[qn])})`).toBeLessThanOrEqual(1e-5 * scale);
        }
        for (const t of [r.out, r.lse, g.dq, g.dk, g.dv]) t.dispose();
      });

  test('functional backward equals the closure; backward is deterministic', async () => {
    const ci = CASES.findIndex((c) => c.name.startsWith('random partial blocks per-(b,h)'));
    const c = CASES[ci]!;
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const e = await expected(c, ci, dtype);
      const { q, k, v } = e.inp;
      const r = blockSparseAttention(q, k, v, e.mask);
      const g1 = r.backward(e.dOut, e.dLse);
      const g2 = blockSparseAttentionBackward(q, k, v, e.mask, r.out, r.lse, e.dOut, { dLse: e.dLse });
      const g3 = blockSparseAttentionBackward(q, k, v, e.mask, r.out, r.lse, e.dOut, { dLse: e.dLse });
      for (const qn of ['dq', 'dk', 'dv'] as const) {
        const a = await read64(g1[qn]);
        expect(Array.from(await read64(g2[qn])), `${dtype} ${qn}`).toEqual(Array.from(a));
        expect(Array.from(await read64(g3[qn])), `${dtype} ${qn}`).toEqual(Array.from(a));
      }
    }
  });
});

describe('agreement with toDense on tiny random masks, every block-size combination (float32)', () => {
  // Explicit lists (fromData) so every class occurs: absent, full, partial with random bits, and the
  // degenerate partial blocks (all bits set, no bit set) that builders never produce.
  const SIZES = [16, 32, 64, 128];
  function randomData(seed: number, Nq: number, Nk: number, bq: number, bk: number, B: number, H: number): BlockMask {
    const r = rng(seed);
    const Qb = Math.ceil(Nq / bq);
    const Kb = Math.ceil(Nk / bk);
    const W = Math.ceil(bk / 32);
    const fo = [0];
    const fi: number[] = [];
    const po = [0];
    const pi: number[] = [];
    const bits: number[] = [];
    const density = r();
    for (let row = 0; row < B * H * Qb; row++) {
      for (let kb = 0; kb < Kb; kb++) {
        const u = r();
        if (u > density) continue;
        const kind = r();
        if (kind < 0.35) fi.push(kb);
        else {
          pi.push(kb);
          const mode = kind < 0.45 ? 'ones' : kind < 0.5 ? 'zeros' : 'random';
          const pb = r() * 0.8 + 0.1;
          for (let x = 0; x < bq * W; x++) {
            let w = 0;
            for (let j = 0; j < 32; j++) if (mode === 'ones' || (mode === 'random' && r() < pb)) w |= 1 << j;
            bits.push(w >>> 0);
          }
        }
      }
      fo.push(fi.length);
      po.push(pi.length);
    }
    return BlockMask.fromData(
      { B, H, Nq, Nk, blockQ: bq, blockK: bk },
      {
        fullOffsets: Int32Array.from(fo),
        fullIndices: Int32Array.from(fi),
        partialOffsets: Int32Array.from(po),
        partialIndices: Int32Array.from(pi),
        partialBits: Uint32Array.from(bits),
      },
    );
  }

  for (const bq of SIZES)
    for (const bk of SIZES)
      it(`blocks ${bq}x${bk}`, async () => {
        const r = rng(bq * 7 + bk);
        for (let trial = 0; trial < 3; trial++) {
          const Nq = 1 + Math.floor(r() * 200);
          const Nk = 1 + Math.floor(r() * 200);
          const B = 1 + (trial % 2);
          const H = 2;
          const mB = trial === 2 ? 1 : B;
          const mH = trial === 1 ? 1 : H;
          const mask = randomData(bq * 1000 + bk * 10 + trial, Nq, Nk, bq, bk, mB, mH);
          const s: Shape = { B, Nq, Nk, H, Hkv: 1 + (trial % 2), D: 16, Dv: 8 };
          const inp = await makeInputs(s, { seed: 100 + trial });
          const dO = await randT([B, Nq, H, 8], { seed: 200 + trial });
          const dense = await mask.toDense();
          const rm = { data: dense, B: mB, H: mH };
          const ref = { ...referenceBlockSparse(inp.p, rm), ...referenceBlockSparseBackward(inp.p, rm, dO.a) };
          const res = blockSparseAttention(inp.q, inp.k, inp.v, mask);
          const g = res.backward(dO.t);
          const got: Record<Quantity, Float64Array> = {
            out: await read64(res.out),
            lse: await read64(res.lse),
            dq: await read64(g.dq),
            dk: await read64(g.dk),
            dv: await read64(g.dv),
          };
          for (const qn of QUANTITIES) {
            const err = maxAbsErr(got[qn], ref[qn]);
            expect(err, `trial ${trial} Nq ${Nq} Nk ${Nk} ${qn} (${worst(got[qn], ref[qn])})`).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(ref[qn])));
          }
        }
      });
});

it('a density-100% mask gives dense attention', async () => {
  const s: Shape = { B: 1, Nq: 150, Nk: 170, H: 2, Hkv: 1, D: 32, Dv: 32 };
  const inp = await makeInputs(s, { seed: 77 });
  const m = blocksMask(0, 1, 1, 150, 170, 64, 64, 1);
  const a = blockSparseAttention(inp.q, inp.k, inp.v, m);
  const d = attention(inp.q, inp.k, inp.v);
  expect(maxAbsErr(await read64(a.out), await read64(d.out))).toBeLessThan(2e-6);
  expect(maxAbsErr(await read64(a.lse), await read64(d.lse))).toBeLessThan(2e-6);
  // and a causal BlockMask gives causal attention (bottom-right alignment in both)
  const c = BlockMask.causal(150, 170, { blockQ: 32, blockK: 16 });
  const ac = blockSparseAttention(inp.q, inp.k, inp.v, c);
  const dc = attention(inp.q, inp.k, inp.v, { causal: true });
  expect(maxAbsErr(await read64(ac.out), await read64(dc.out))).toBeLessThan(2e-6);
});

describe('errors', () => {
  const s: Shape = { B: 2, Nq: 40, Nk: 50, H: 4, Hkv: 2, D: 16, Dv: 16 };
  let inp: Inputs;
  beforeAll(async () => {
    inp = await makeInputs(s, { seed: 9 });
  });
  const expectThrow = (fn: () => unknown, code: string, message: string) => {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err, 'expected a throw').toBeInstanceOf(AttnkitError);
    expect((err as AttnkitError).code).toBe(code);
    expect((err as AttnkitError).message).toBe(message);
  };
  const op = 'blockSparseAttention';

  it('mask covering other token counts', () => {
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, BlockMask.causal(50, 50)),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'mask' to cover Nq = 40 and Nk = 50 tokens, received Nq = 50, Nk = 50`,
    );
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, BlockMask.causal(40, 40)),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'mask' to cover Nq = 40 and Nk = 50 tokens, received Nq = 40, Nk = 40`,
    );
  });

  it('mask with other B or H', () => {
    const m3 = BlockMask.fromPredicate(() => true, { B: 3, Nq: 40, Nk: 50 });
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, m3),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'mask' to have B = 1 or 2 and H = 1 or 4 (query heads), received B = 3, H = 1`,
    );
    // H of the mask counts query heads, not kv heads
    const mh = BlockMask.fromPredicate(() => true, { H: 2, Nq: 40, Nk: 50 });
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, mh),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'mask' to have B = 1 or 2 and H = 1 or 4 (query heads), received B = 1, H = 2`,
    );
  });

  it('not a BlockMask', () => {
    for (const [m, what] of [
      [null, 'null'],
      [{}, 'object'],
      [new Uint8Array(4), 'object'],
      [undefined, 'undefined'],
    ] as const)
      expectThrow(
        () => blockSparseAttention(inp.q, inp.k, inp.v, m as unknown as BlockMask),
        'ERR_ATTNKIT_ARGUMENT',
        `${op}: expected 'mask' to be a BlockMask, received ${what}`,
      );
  });

  it('unknown option', () => {
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, BlockMask.causal(40, 50), { causal: true } as never),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: unknown option 'causal' (known options: scale, stream)`,
    );
    const r = blockSparseAttention(inp.q, inp.k, inp.v, BlockMask.causal(40, 50));
    expectThrow(
      () => blockSparseAttentionBackward(inp.q, inp.k, inp.v, BlockMask.causal(40, 50), r.out, r.lse, r.out, { window: 1 } as never),
      'ERR_ATTNKIT_ARGUMENT',
      `blockSparseAttentionBackward: unknown option 'window' (known options: scale, stream, dLse)`,
    );
  });

  it('mask on another device', () => {
    const c = BlockMask.causal(40, 50);
    const onCuda = new BlockMask(c.geometry, c._host('test'), null, 'cuda');
    expectThrow(
      () => blockSparseAttention(inp.q, inp.k, inp.v, onCuda),
      'ERR_ATTNKIT_DEVICE',
      `${op}: expected 'mask' to be on the device of 'q' (cpu), received cuda`,
    );
  });

  it('backward argument checks', () => {
    const m = BlockMask.causal(40, 50);
    const r = blockSparseAttention(inp.q, inp.k, inp.v, m);
    const bad = randn([2, 40, 4], { seed: 1 });
    const err = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as AttnkitError;
      }
      return null;
    };
    const e1 = err(() => blockSparseAttentionBackward(inp.q, inp.k, inp.v, m, r.out, bad.reshape([2, 40, 4, 1]), r.out));
    expect(e1?.code).toBe('ERR_ATTNKIT_SHAPE');
    const e2 = err(() => r.backward(r.out, randn([2, 40, 4], { seed: 2, dtype: 'bfloat16' })));
    expect(e2?.code).toBe('ERR_ATTNKIT_DTYPE');
    const e3 = err(() => r.backward(r.out, randn([2, 40, 3], { seed: 2 })));
    expect(e3?.code).toBe('ERR_ATTNKIT_SHAPE');
    const e4 = err(() => blockSparseAttentionBackward(inp.q, inp.k, inp.v, BlockMask.causal(41, 50), r.out, r.lse, r.out));
    expect(e4?.code).toBe('ERR_ATTNKIT_SHAPE');
  });

  it('the binding re-validates the lists (masks built around fromData, as enqueued selection ops produce them)', async () => {
    // The internal constructor skips fromData's checks, as masks from enqueued work do; the binding
    // must refuse lists it cannot index with.
    const g = { B: 1, H: 1, Nq: 40, Nk: 50, blockQ: 16, blockK: 16 }; // 3 query blocks, 4 key blocks
    const lists = (o: Partial<BlockMaskData>): BlockMaskData => ({
      fullOffsets: Int32Array.from([0, 1, 2, 3]),
      fullIndices: Int32Array.from([0, 1, 2]),
      partialOffsets: Int32Array.from([0, 0, 0, 0]),
      partialIndices: new Int32Array(0),
      partialBits: new Uint32Array(0),
      ...o,
    });
    const bad: [string, BlockMaskData][] = [
      ['offsets running backwards', lists({ fullOffsets: Int32Array.from([0, 3, 1, 3]) })],
      ['an index out of range', lists({ fullIndices: Int32Array.from([0, 4, 2]) })],
      ['a negative index', lists({ fullIndices: Int32Array.from([0, -1, 2]) })],
      ['offsets past the end of the index list', lists({ fullOffsets: Int32Array.from([0, 1, 2, 4]) })],
      ['offsets not starting at 0', lists({ fullOffsets: Int32Array.from([1, 1, 2, 3]) })],
      ['bitmaps of the wrong size', lists({ partialOffsets: Int32Array.from([0, 1, 1, 1]), partialIndices: Int32Array.from([3]), partialBits: new Uint32Array(15) })],
      ['indices not increasing', lists({ fullOffsets: Int32Array.from([0, 2, 2, 3]), fullIndices: Int32Array.from([1, 1, 2]) })],
    ];
    for (const [what, d] of bad) {
      let err: unknown = null;
      try {
        const m = new BlockMask(g, d, null);
        const r = blockSparseAttention(inp.q, inp.k, inp.v, m);
        await r.out.toArray();
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(AttnkitError);
      expect(['ERR_ATTNKIT_ARGUMENT', 'ERR_ATTNKIT_SHAPE'], what).toContain((err as AttnkitError).code);
    }
    // the valid lists run, also with spare capacity past the last offset (as selection ops allocate)
    const ok = blockSparseAttention(inp.q, inp.k, inp.v, new BlockMask(g, lists({}), null));
    const spare = blockSparseAttention(inp.q, inp.k, inp.v, new BlockMask(g, lists({ fullOffsets: Int32Array.from([0, 1, 2, 2]) }), null));
    const a = await read64(ok.out);
    const b = await read64(spare.out);
    expect(a.length).toBe(2 * 40 * 4 * 16);
    // the spare entry is unused: query block 2 sees nothing
    for (let bb = 0; bb < 2; bb++)
      for (let i = 0; i < 40; i++)
        for (let x = 0; x < 4 * 16; x++) {
          const at = (bb * 40 + i) * 64 + x;
          if (i < 32 && b[at] !== a[at]) throw new Error(`query ${i}: spare capacity changed the output`);
          if (i >= 32 && b[at] !== 0) throw new Error(`query ${i}: expected an empty row`);
        }
  });

  it('q/k/v checks are the dense op’s (dtype mix, GQA divisibility)', () => {
    const kb = tensor(new Float32Array(2 * 50 * 2 * 16), [2, 50, 2, 16], { dtype: 'bfloat16' });
    let e: unknown;
    try {
      blockSparseAttention(inp.q, kb, inp.v, BlockMask.causal(40, 50));
    } catch (x) {
      e = x;
    }
    expect((e as AttnkitError).code).toBe('ERR_ATTNKIT_DTYPE');
    const k3 = randn([2, 50, 3, 16], { seed: 3 });
    const v3 = randn([2, 50, 3, 16], { seed: 4 });
    expectThrow(
      () => blockSparseAttention(inp.q, k3, v3, BlockMask.causal(40, 50)),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'k' to have a head count that divides q's 4 heads (GQA/MQA), received 3`,
    );
  });
});
