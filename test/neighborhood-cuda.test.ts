/**
 * Neighborhood attention on CUDA through the public API (the kernels of native/cuda/neighborhood/,
 * docs/cuda-kernels.md "Neighborhood attention"), and the CUDA side of the tile-shape planner.
 *
 * Without a device (always): the CUDA tile choice is one of the compiled shapes (the family's
 * tileShapes), it visits no more tile pairs than the CPU's choice on the problems (2-D 56²
 * kernel 7, 3-D 16×32×32 kernel (3, 7, 7)), a stride equal to the tile shape visits only Full tiles,
 * and `attnkit sim --json` reports the CUDA tile next to the CPU's.
 *
 * On cuda:0 (a GPU, or the fake-CUDA addon of test/cuda-fake-device.test.ts, whose nested run
 * includes this file; skipped visibly otherwise): na1d / na2d / na3d and their backward, float16 and
 * bfloat16, over an option grid (odd extents, tile and dilation tails, stride > 1, causal on some
 * axes, GQA, dLse, additional keys), against the float64 reference within the FlashAttention-2 rule
 * (at most 2x, gradients 3x, the error of a naive implementation in the same dtype, plus 1e-3 of the
 * largest reference value) and against the CPU backend; the backward is bitwise repeatable; explicit
 * tile shapes are honoured.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { simCommand } from '../src/cli/sim.ts';
import {
  chooseTileShape,
  cuda,
  na1d,
  na2d,
  na3d,
  neighborhoodPlan,
  randn,
  synchronize,
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
} from '../src/reference/neighborhood.ts';
import { concatSeq, maxAbs, maxAbsErr, naiveMasked, randT, read64, worst } from './helpers.ts';

const root = join(import.meta.dirname, '..');
const OPS = { 1: na1d, 2: na2d, 3: na3d } as const;
type Rank = 1 | 2 | 3;

const compiled = (JSON.parse(readFileSync(join(root, 'native', 'cuda', 'instantiations.json'), 'utf8')) as {
  families: { family: string; tileShapes?: Record<string, number[][]> }[];
}).families.find((f) => f.family === 'neighborhood')!.tileShapes!;

// ------------------------------------------------------------------ the planner (no device)

describe('the CUDA tile choice (chooseTileShape(…, "cuda"), attnkit sim)', () => {
  const problem = (size: number[], kernel: number[], stride = size.map(() => 1)) => ({
    rank: size.length, size, kernel, stride, dilation: size.map(() => 1), causal: size.map(() => false),
  });
  const visited = (p: ReturnType<typeof problem>, tile: number[]) => {
    const plan = neighborhoodPlan({ ...p, tile });
    return plan.fullPairs + plan.partialPairs;
  };

  it('is a compiled tile shape, for every rank', () => {
    for (const p of [problem([37], [5]), problem([13, 17], [3, 5]), problem([5, 9, 11], [3, 3, 5])]) {
      const t = chooseTileShape(p, 'cuda');
      expect(compiled[`na${p.rank}`]!.map((x) => x.join())).toContain(t.join());
    }
  });

  it("visits no more tile pairs than the CPU's choice on 2-D 56² k7 and 3-D 16×32×32 k(3,7,7)", () => {
    for (const p of [problem([56, 56], [7, 7]), problem([16, 32, 32], [3, 7, 7])]) {
      const c = chooseTileShape(p, 'cuda');
      expect(visited(p, c), `${p.size} tile ${c}`).toBeLessThanOrEqual(visited(p, chooseTileShape(p)));
    }
  });

  it('with stride equal to the tile shape, visits only Full tiles', () => {
    for (const [size, kernel] of [[[56, 56], [8, 8]], [[16, 32, 32], [4, 4, 4]]] as const) {
      const p = problem([...size], [...kernel], [...kernel]);
      const plan = neighborhoodPlan({ ...p, tile: [...kernel] });
      expect(compiled[`na${p.rank}`]!.map((x) => x.join())).toContain(kernel.join());
      expect(plan.partialPairs, `${size} stride ${kernel}`).toBe(0);
      expect(plan.fullPairs).toBeGreaterThan(0);
    }
  });

  it('attnkit sim reports the CUDA tile and its statistics next to the CPU choice', async () => {
    const printed: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((m: string) => void printed.push(m));
    try {
      const opts = { op: 'na3d', input: [16, 32, 32], kernel: [3, 7, 7] };
      await simCommand({ ...opts, json: true });
      await simCommand(opts);
    } finally {
      log.mockRestore();
    }
    type Sel = { tile: number[]; fullPairs: number; partialPairs: number };
    const s = JSON.parse(printed[0]!) as { selected: Sel; cuda: Sel };
    expect(s.cuda.tile).toEqual(chooseTileShape(problem([16, 32, 32], [3, 7, 7]), 'cuda'));
    expect(s.cuda.fullPairs + s.cuda.partialPairs).toBeLessThanOrEqual(s.selected.fullPairs + s.selected.partialPairs);
    expect(printed[1]).toContain(`CUDA tile ${s.cuda.tile.join('x')}`);
  });
});

// ------------------------------------------------------------------ on cuda:0

interface Case {
  name: string;
  size: number[];
  opts: Omit<NeighborhoodOptions, 'stream'>;
  B: number;
  H: number;
  Hkv: number;
  D: number;
  /** additional keys (0: none) */
  M: number;
  dLse: boolean;
}

const CASES: Case[] = [
  { name: '1-D 37, k5 stride 2 dilation 2 (37 % 2 = 1), GQA', size: [37], opts: { kernelSize: 5, stride: 2, dilation: 2 }, B: 1, H: 2, Hkv: 1, D: 32, M: 0, dLse: true },
  { name: '1-D 70 causal k9, 3 additional keys', size: [70], opts: { kernelSize: 9, causal: true }, B: 2, H: 2, Hkv: 2, D: 64, M: 3, dLse: false },
  { name: '2-D 13x17 k(3,5) s(1,2), causal on Y, 4 additional keys, GQA', size: [13, 17], opts: { kernelSize: [3, 5], stride: [1, 2], causal: [false, true] }, B: 1, H: 2, Hkv: 1, D: 32, M: 4, dLse: true },
  { name: '2-D 9x10 dilation (2,3), causal on X, tile 4x16', size: [9, 10], opts: { kernelSize: 3, dilation: [2, 3], causal: [true, false], tileShape: [4, 16] }, B: 1, H: 1, Hkv: 1, D: 64, M: 0, dLse: false },
  { name: '3-D 5x7x9 k(3,3,5), causal in time, dilation 2 on Z', size: [5, 7, 9], opts: { kernelSize: [3, 3, 3], dilation: [1, 1, 2], causal: [true, false, false] }, B: 1, H: 2, Hkv: 2, D: 64, M: 2, dLse: true },
];
const DTYPES: FloatDType[] = ['float16', 'bfloat16'];
const on = cuda.available();

const owned: Tensor[] = [];
afterAll(async () => {
  await synchronize();
  owned.forEach((t) => t.dispose());
});

async function run(c: Case, dtype: FloatDType, device: 'cpu' | 'cuda:0', seed: number) {
  const R = c.size.length as Rank;
  const shape = (heads: number) => [c.B, ...c.size, heads, c.D];
  const inputs = await Promise.all([shape(c.H), shape(c.Hkv), shape(c.Hkv), shape(c.H)].map((s, i) => randT(s, { seed: seed + i, dtype })));
  const add = c.M ? await Promise.all([0, 1].map((i) => randT([c.B, c.M, c.Hkv, c.D], { seed: seed + 10 + i, dtype }))) : [];
  const lseShape = [c.B, ...c.size, c.H];
  const dLse = c.dLse ? await randT(lseShape, { seed: seed + 20, dtype: 'float32' }) : undefined;
  const to = (t: Tensor) => (device === 'cpu' ? t : (owned.push(t.to(device)), owned.at(-1)!));
  const [q, k, v, dO] = inputs.map((x) => to(x.t)) as [Tensor, Tensor, Tensor, Tensor];
  const opts: NeighborhoodOptions = { ...c.opts, ...(c.M ? { additionalKeys: to(add[0]!.t), additionalValues: to(add[1]!.t) } : {}) };
  const r: NeighborhoodResult = OPS[R](q, k, v, opts);
  const g = r.backward(dO, dLse ? to(dLse.t) : undefined);
  const got = {
    out: await read64(r.out), lse: await read64(r.lse), dq: await read64(g.dq), dk: await read64(g.dk), dv: await read64(g.dv),
    ...(c.M ? { dAddK: await read64(g.dAdditionalKeys!), dAddV: await read64(g.dAdditionalValues!) } : {}),
  } as Record<string, Float64Array>;
  return { got, inputs: inputs.map((x) => x.a), add: add.map((x) => x.a), dLse: dLse?.a };
}

function expected(c: Case, dtype: FloatDType, x: Awaited<ReturnType<typeof run>>) {
  const R = c.size.length;
  const ones = (v: number | boolean | readonly (number | boolean)[] | undefined, d: number | boolean) =>
    Array.isArray(v) ? [...v] : new Array(R).fill(v ?? d);
  const p: RefNaParams = {
    size: c.size, kernelSize: ones(c.opts.kernelSize, 0) as number[], stride: ones(c.opts.stride, 1) as number[],
    dilation: ones(c.opts.dilation, 1) as number[], causal: ones(c.opts.causal, false) as boolean[],
  };
  const [q, k, v, dO] = x.inputs as [Float64Array, Float64Array, Float64Array, Float64Array];
  const N = c.size.reduce((a, b) => a * b, 1);
  const prob = { B: c.B, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.D, q, k, v, ...(c.M ? { addK: x.add[0], addV: x.add[1], M: c.M } : {}) };
  const f = referenceNeighborhood(prob, p);
  const b = referenceNeighborhoodBackward(prob, p, dO, x.dLse);
  const ref: Record<string, Float64Array> = { out: f.out, lse: f.lse, dq: b.dq, dk: b.dk, dv: b.dv, ...(c.M ? { dAddK: b.dAddK!, dAddV: b.dAddV! } : {}) };
  // naive over the tokens followed by the additional keys (as test/neighborhood.test.ts)
  const nb = Array.from({ length: N }, (_, i) => new Set(neighborhoodOf(i, p)));
  const dp: RefProblem = {
    B: c.B, Nq: N, Nk: N + c.M, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.D, q,
    k: c.M ? concatSeq([{ a: k, N }, { a: x.add[0]!, N: c.M }], c.B, c.Hkv * c.D) : k,
    v: c.M ? concatSeq([{ a: v, N }, { a: x.add[1]!, N: c.M }], c.B, c.Hkv * c.D) : v,
  };
  const nv = naiveMasked(dp, (i, j) => j >= N || nb[i]!.has(j), 1 / Math.sqrt(c.D), dtype, { dOut: dO, dLse: x.dLse });
  // split the naive key gradients into the tokens' and the additional keys'
  const split = (a: Float64Array): [Float64Array, Float64Array] => {
    const row = c.Hkv * c.D, per = (N + c.M) * row;
    const tok = new Float64Array(c.B * N * row), extra = new Float64Array(c.B * c.M * row);
    for (let bb = 0; bb < c.B; bb++) {
      tok.set(a.subarray(bb * per, bb * per + N * row), bb * N * row);
      extra.set(a.subarray(bb * per + N * row, (bb + 1) * per), bb * c.M * row);
    }
    return [tok, extra];
  };
  const [ndk, ndAddK] = split(nv.dk);
  const [ndv, ndAddV] = split(nv.dv);
  const naive: Record<string, Float64Array> = { out: nv.out, lse: nv.lse, dq: nv.dq, dk: ndk, dv: ndv, ...(c.M ? { dAddK: ndAddK, dAddV: ndAddV } : {}) };
  return { ref, naive };
}

describe.skipIf(!on)(`neighborhood attention on cuda:0${on ? '' : ' (skipped: no CUDA device)'}`, () => {
  for (const c of CASES)
    for (const dtype of DTYPES)
      it(`${c.name}, ${dtype}: forward and backward vs float64 (FlashAttention-2 rule) and the CPU backend`, { timeout: 600_000 }, async () => {
        const dev = await run(c, dtype, 'cuda:0', 100);
        const host = await run(c, dtype, 'cpu', 100);
        const { ref, naive } = expected(c, dtype, dev);
        for (const [name, want] of Object.entries(ref)) {
          const grad = name !== 'out' && name !== 'lse';
          const bound = (grad ? 3 : 2) * maxAbsErr(naive[name]!, want) + 1e-3 * Math.max(1, maxAbs(want));
          expect(maxAbsErr(dev.got[name]!, want), `${name}: ${worst(dev.got[name]!, want)} (bound ${bound.toExponential(2)})`).toBeLessThanOrEqual(bound);
          expect(maxAbsErr(dev.got[name]!, host.got[name]!), `${name} vs the CPU backend`).toBeLessThanOrEqual(2 * bound);
        }
      });

  it('D = 128: the forward runs; the backward is refused before anything runs, naming the compiled head dims', { timeout: 600_000 }, async () => {
    const x = randn([1, 9, 10, 1, 128], { seed: 5, dtype: 'float16' });
    owned.push(x);
    const q = x.to('cuda:0');
    owned.push(q);
    const r = na2d(q, q, q, { kernelSize: 3 });
    const cpuOut = await read64(na2d(x, x, x, { kernelSize: 3 }).out);
    expect(maxAbsErr(await read64(r.out), cpuOut)).toBeLessThan(4e-3);
    expect(() => r.backward(q)).toThrow(/na2dBackward: head dim 128 is not supported on CUDA .*\(32 or 64\)/);
  });

  it('the backward is bitwise repeatable (dq, dk, dv, and the additional keys and values)', { timeout: 600_000 }, async () => {
    const c = CASES[2]!;
    const a = await run(c, 'bfloat16', 'cuda:0', 7);
    const b = await run(c, 'bfloat16', 'cuda:0', 7);
    for (const name of ['dq', 'dk', 'dv', 'dAddK', 'dAddV']) expect(Array.from(a.got[name]!), name).toEqual(Array.from(b.got[name]!));
  });

  it('an explicit tile shape is honoured: every compiled 2-D shape gives the same result within rounding', { timeout: 600_000 }, async () => {
    const c: Case = { ...CASES[3]!, opts: { kernelSize: 3, dilation: [2, 3] }, D: 32 };
    const base = await run({ ...c, opts: { ...c.opts, tileShape: [8, 8] } }, 'float16', 'cuda:0', 3);
    for (const tileShape of [[2, 32], [16, 4]]) {
      const other = await run({ ...c, opts: { ...c.opts, tileShape } }, 'float16', 'cuda:0', 3);
      expect(maxAbsErr(other.got.out!, base.got.out!), `tile ${tileShape}`).toBeLessThan(2e-3);
    }
  });
});
