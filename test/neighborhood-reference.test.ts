/**
 * The float64 neighborhood-attention reference (src/reference/neighborhood.ts) checked against facts
 * that do not depend on its formulas:
 *   - kernel = input size, non-causal (any stride) is dense attention;
 *   - stride = kernel is blocked (window) attention: each query sees exactly its block, the last
 *     block of an axis whose length is not a multiple of k being the last k tokens;
 *   - dilation is neighborhood attention on each dilation sub-grid, gathered and run undilated;
 *   - causal with kernel = input size is causal attention (1-D);
 *   - NATTEN's per-axis properties (anchor docs §2) for all L <= 20, 2 <= k <= L, 1 <= s <= k:
 *     exact window size, stride groups, monotone windows, NATTEN's second form of the window start,
 *     the inverse-neighborhood formulas of its backward kernels, the group length formula;
 *   - the gradients (with additional keys and dLse) against central finite differences.
 */
import { describe, expect, it } from 'vitest';
import { referenceAttention, type RefProblem } from '../src/reference/attention.ts';
import {
  neighbors1d,
  neighborhoodMatrix,
  neighborhoodOf,
  referenceNeighborhood,
  referenceNeighborhoodBackward,
  type RefNaParams,
  type RefNaProblem,
} from '../src/reference/neighborhood.ts';
import { concatSeq, gaussian, maxAbs, maxAbsErr, worst } from './helpers.ts';

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/** Row-major coordinates of token t in a grid. */
function coordsOf(t: number, size: readonly number[]): number[] {
  const c = new Array<number>(size.length);
  for (let a = size.length - 1; a >= 0; a--) {
    c[a] = t % size[a]!;
    t = Math.floor(t / size[a]!);
  }
  return c;
}
const tokenOf = (c: readonly number[], size: readonly number[]) => c.reduce((idx, x, a) => idx * size[a]! + x, 0);

function params(size: number[], kernel: number[], o: { stride?: number[]; dilation?: number[]; causal?: boolean[] } = {}): RefNaParams {
  const R = size.length;
  return {
    size,
    kernelSize: kernel,
    stride: o.stride ?? new Array(R).fill(1),
    dilation: o.dilation ?? new Array(R).fill(1),
    causal: o.causal ?? new Array(R).fill(false),
  };
}

function problem(N: number, s: { B: number; H: number; Hkv: number; D: number; Dv: number; M?: number }, seed: number): RefNaProblem {
  const M = s.M ?? 0;
  return {
    ...s,
    q: gaussian(s.B * N * s.H * s.D, seed),
    k: gaussian(s.B * N * s.Hkv * s.D, seed + 1),
    v: gaussian(s.B * N * s.Hkv * s.Dv, seed + 2),
    ...(M > 0 ? { addK: gaussian(s.B * M * s.Hkv * s.D, seed + 3), addV: gaussian(s.B * M * s.Hkv * s.Dv, seed + 4), M } : {}),
  };
}

/** The same tokens as a dense problem (Nq = N, Nk = N [+ M additional keys appended]). */
function dense(pr: RefNaProblem, N: number): RefProblem {
  const M = pr.M ?? 0;
  const k = M ? concatSeq([{ a: pr.k, N }, { a: pr.addK!, N: M }], pr.B, pr.Hkv * pr.D) : pr.k;
  const v = M ? concatSeq([{ a: pr.v, N }, { a: pr.addV!, N: M }], pr.B, pr.Hkv * pr.Dv) : pr.v;
  return { B: pr.B, Nq: N, Nk: N + M, H: pr.H, Hkv: pr.Hkv, D: pr.D, Dv: pr.Dv, q: pr.q, k, v };
}

const SHAPE = { B: 2, H: 4, Hkv: 2, D: 5, Dv: 3 };

describe('kernel = input size, non-causal: dense attention', () => {
  it.each([
    { size: [9], stride: [1] },
    { size: [9], stride: [4] },
    { size: [8], stride: [8] },
    { size: [4, 5], stride: [1, 1] },
    { size: [4, 5], stride: [3, 5] },
    { size: [3, 3, 4], stride: [1, 2, 4] },
  ])('size $size stride $stride', ({ size, stride }) => {
    const N = prod(size);
    const p = params(size, size, { stride });
    for (let q = 0; q < N; q++) expect(neighborhoodOf(q, p)).toEqual(Array.from({ length: N }, (_, i) => i));
    for (const M of [0, 3]) {
      const pr = problem(N, { ...SHAPE, M }, 100 + N + M);
      const got = referenceNeighborhood(pr, p, 0.6);
      const want = referenceAttention(dense(pr, N), { scale: 0.6 });
      expect(maxAbsErr(got.out, want.out), worst(got.out, want.out)).toBeLessThanOrEqual(1e-12);
      expect(maxAbsErr(got.lse, want.lse)).toBeLessThanOrEqual(1e-12);
    }
  });

  it('the default scale is 1/sqrt(D)', () => {
    const pr = problem(6, SHAPE, 7);
    const a = referenceNeighborhood(pr, params([6], [6]));
    const b = referenceNeighborhood(pr, params([6], [6]), 1 / Math.sqrt(SHAPE.D));
    expect(Array.from(a.out)).toEqual(Array.from(b.out));
  });
});

describe('stride = kernel: blocked (window) attention', () => {
  /** Block of coordinate x on an axis of length L with block size k: the last k tokens for the tail. */
  const block = (x: number, L: number, k: number) => {
    const start = Math.min(Math.floor(x / k) * k, L - k);
    return Array.from({ length: k }, (_, j) => start + j);
  };

  it('1-D: every L <= 24, k <= L: each query sees exactly its block', () => {
    for (let L = 2; L <= 24; L++)
      for (let k = 2; k <= L; k++)
        for (let x = 0; x < L; x++) expect(neighbors1d(x, L, k, k, 1, false), `L=${L} k=${k} x=${x}`).toEqual(block(x, L, k));
  });

  it('blocks partition the axis when k divides L: queries of a block see each other only', () => {
    for (const [L, k] of [[12, 3], [12, 4], [12, 6], [20, 5], [16, 2]] as const)
      for (let x = 0; x < L; x++) {
        const nb = neighbors1d(x, L, k, k, 1, false);
        for (let y = 0; y < L; y++) expect(nb.includes(y)).toBe(Math.floor(x / k) === Math.floor(y / k));
      }
  });

  it.each([
    { size: [12], kernel: [4] },
    { size: [10], kernel: [4] },
    { size: [6, 8], kernel: [3, 4] },
    { size: [7, 5], kernel: [2, 3] },
    { size: [4, 6, 4], kernel: [2, 3, 4] },
  ])('numerically: $size kernel = stride = $kernel equals dense attention with a block mask', ({ size, kernel }) => {
    const N = prod(size);
    const p = params(size, kernel, { stride: kernel });
    // key j is visible to query i iff on every axis j's coordinate lies in i's block
    const allows = (i: number, j: number) => {
      const kc = coordsOf(j, size);
      return coordsOf(i, size).every((x, a) => block(x, size[a]!, kernel[a]!).includes(kc[a]!));
    };
    const pr = problem(N, SHAPE, 200 + N);
    const got = referenceNeighborhood(pr, p);
    const want = referenceAttention(dense(pr, N), { allows });
    expect(maxAbsErr(got.out, want.out), worst(got.out, want.out)).toBeLessThanOrEqual(1e-12);
    expect(maxAbsErr(got.lse, want.lse)).toBeLessThanOrEqual(1e-12);
  });
});

describe('dilation: neighborhood attention on each dilation sub-grid', () => {
  it.each([
    { size: [13], kernel: [3], dilation: [4], stride: [1], causal: [false] },
    { size: [13], kernel: [4], dilation: [3], stride: [2], causal: [true] },
    { size: [9, 11], kernel: [3, 2], dilation: [3, 2], stride: [1, 2], causal: [false, true] },
    { size: [7, 10], kernel: [2, 5], dilation: [2, 2], stride: [2, 3], causal: [true, false] },
    { size: [5, 6, 7], kernel: [2, 3, 3], dilation: [2, 2, 2], stride: [1, 3, 2], causal: [false, false, true] },
  ])('size $size kernel $kernel dilation $dilation stride $stride causal $causal', ({ size, kernel, dilation, stride, causal }) => {
    const N = prod(size);
    const R = size.length;
    const pd = params(size, kernel, { dilation, stride, causal });
    const pr = problem(N, { B: 1, H: 2, Hkv: 1, D: 4, Dv: 3 }, 300 + N);
    const whole = referenceNeighborhood(pr, pd);
    let covered = 0;
    // Every group g (per-axis offsets): gather its sub-grid, run it undilated, compare.
    for (let g = 0; g < prod(dilation); g++) {
      const off = coordsOf(g, dilation);
      const sub = size.map((L, a) => Math.ceil((L - off[a]!) / dilation[a]!));
      const Ns = prod(sub);
      const toks = Array.from({ length: Ns }, (_, t) => tokenOf(coordsOf(t, sub).map((c, a) => off[a]! + dilation[a]! * c), size));
      const gather = (x: ArrayLike<number>, width: number) => {
        const o = new Float64Array(Ns * width);
        toks.forEach((t, i) => {
          for (let e = 0; e < width; e++) o[i * width + e] = x[t * width + e]!;
        });
        return o;
      };
      const ps = params(sub, kernel, { stride, causal });
      // visibility: the dilated neighborhood of a gathered token is the gathered undilated one
      for (let i = 0; i < Ns; i++) expect(neighborhoodOf(toks[i]!, pd)).toEqual(neighborhoodOf(i, ps).map((j) => toks[j]!).sort((a, b) => a - b));
      const sp: RefNaProblem = { B: 1, H: 2, Hkv: 1, D: 4, Dv: 3, q: gather(pr.q, 2 * 4), k: gather(pr.k, 4), v: gather(pr.v, 3) };
      const r = referenceNeighborhood(sp, ps);
      expect(maxAbsErr(r.out, gather(whole.out, 2 * 3))).toBeLessThanOrEqual(1e-12);
      expect(maxAbsErr(r.lse, gather(whole.lse, 2))).toBeLessThanOrEqual(1e-12);
      covered += Ns;
    }
    expect(covered).toBe(N);
    expect(R).toBe(size.length);
  });
});

describe('causal with kernel = input size: causal attention', () => {
  it.each([
    { L: 9, stride: 1 },
    { L: 9, stride: 4 },
    { L: 12, stride: 12 },
  ])('L=$L stride $stride', ({ L, stride }) => {
    const p = params([L], [L], { stride: [stride], causal: [true] });
    for (let x = 0; x < L; x++) expect(neighborhoodOf(x, p)).toEqual(Array.from({ length: x + 1 }, (_, j) => j));
    const pr = problem(L, SHAPE, 400 + L);
    const got = referenceNeighborhood(pr, p);
    const want = referenceAttention(dense(pr, L), { causal: true });
    expect(maxAbsErr(got.out, want.out), worst(got.out, want.out)).toBeLessThanOrEqual(1e-12);
    expect(maxAbsErr(got.lse, want.lse)).toBeLessThanOrEqual(1e-12);
  });

  it('with additional keys: causal attention over the tokens merged with full attention over the extra keys', () => {
    const L = 7;
    const M = 2;
    const p = params([L], [L], { causal: [true] });
    const pr = problem(L, { ...SHAPE, M }, 450);
    const got = referenceNeighborhood(pr, p);
    // Extra keys are appended after the L tokens: query i sees keys 0..i and L..L+M-1.
    const want = referenceAttention(dense(pr, L), { allows: (i, j) => j <= i || j >= L });
    expect(maxAbsErr(got.out, want.out)).toBeLessThanOrEqual(1e-12);
    expect(maxAbsErr(got.lse, want.lse)).toBeLessThanOrEqual(1e-12);
  });
});

describe("NATTEN's per-axis properties, all L <= 20, 2 <= k <= L, 1 <= s <= k", () => {
  type Visit = (L: number, k: number, s: number) => void;
  const every = (f: Visit) => {
    let n = 0;
    for (let L = 2; L <= 20; L++)
      for (let k = 2; k <= L; k++)
        for (let s = 1; s <= k; s++) {
          f(L, k, s);
          n++;
        }
    return n;
  };
  const left = (k: number) => Math.floor(k / 2);
  const right = (k: number) => Math.floor(k / 2) + (k % 2) - 1;

  it('non-causal: exactly k contiguous keys inside the axis (shifted, not truncated), the query among them', () => {
    const n = every((L, k, s) => {
      for (let x = 0; x < L; x++) {
        const nb = neighbors1d(x, L, k, s, 1, false);
        expect(nb.length).toBe(k);
        expect(nb[0]! >= 0 && nb[k - 1]! < L).toBe(true);
        for (let j = 1; j < k; j++) expect(nb[j]).toBe(nb[0]! + j);
        expect(nb.includes(x), `L=${L} k=${k} s=${s} x=${x}: [${nb}]`).toBe(true);
      }
    });
    expect(n).toBe(1520);
  });

  it('non-causal, s = 1: centered away from the borders; odd k is mirror-symmetric', () => {
    every((L, k, s) => {
      if (s !== 1) return;
      for (let x = 0; x < L; x++) {
        const nb = neighbors1d(x, L, k, 1, 1, false);
        if (x - left(k) >= 0 && x + right(k) < L) expect(nb[0]).toBe(x - left(k));
        if (x < left(k)) expect(nb[0]).toBe(0);
        if (x + right(k) >= L) expect(nb[k - 1]).toBe(L - 1);
        if (k % 2 === 1) expect(neighbors1d(L - 1 - x, L, k, 1, 1, false).map((y) => L - 1 - y).reverse()).toEqual(nb);
      }
    });
  });

  it("non-causal: queries of a stride group share one window, their leader's", () => {
    every((L, k, s) => {
      for (let x = 0; x < L; x++) {
        const leader = Math.min(Math.floor(x / s) * s + Math.floor(s / 2), L - 1);
        expect(neighbors1d(x, L, k, s, 1, false)).toEqual(neighbors1d(leader, L, k, s, 1, false));
        expect(neighbors1d(x, L, k, s, 1, false)).toEqual(neighbors1d(Math.floor(x / s) * s, L, k, s, 1, false));
      }
    });
  });

  it("non-causal: NATTEN's second form of the window start agrees (max(..) + border correction)", () => {
    every((L, k, s) => {
      for (let x = 0; x < L; x++) {
        const leader = Math.min(Math.floor(x / s) * s + Math.floor(s / 2), L - 1);
        const start = Math.max(leader - left(k), 0) + (leader + right(k) >= L ? 1 : 0) * (L - right(k) - leader - 1);
        expect(neighbors1d(x, L, k, s, 1, false)[0]).toBe(start);
      }
    });
  });

  it('causal: keys from the stride group start up to the query itself, never the future, at most k', () => {
    every((L, k, s) => {
      for (let x = 0; x < L; x++) {
        const nb = neighbors1d(x, L, k, s, 1, true);
        expect(nb[nb.length - 1]).toBe(x);
        for (let j = 1; j < nb.length; j++) expect(nb[j]).toBe(nb[0]! + j);
        expect(nb.length).toBeLessThanOrEqual(k);
        expect(nb[0]).toBeGreaterThanOrEqual(0);
        // stride-group members share the start (the last member's window start)
        const first = Math.floor(x / s) * s;
        expect(nb[0]).toBe(neighbors1d(first, L, k, s, 1, true)[0]);
        const last = Math.min(first + s - 1, L - 1);
        expect(nb[0]).toBe(Math.max(last - k + 1, 0));
        if (s === 1) expect(nb.length).toBe(Math.min(x + 1, k));
      }
    });
  });

  it('window start and end never decrease with the query (what the tile ranges rely on)', () => {
    every((L, k, s) => {
      for (const c of [false, true]) {
        let prev = [-1, -1];
        for (let x = 0; x < L; x++) {
          const nb = neighbors1d(x, L, k, s, 1, c);
          const cur = [nb[0]!, nb[nb.length - 1]!];
          expect(cur[0]).toBeGreaterThanOrEqual(prev[0]!);
          expect(cur[1]).toBeGreaterThanOrEqual(prev[1]!);
          prev = cur;
        }
      }
    });
  });

  it("the inverse neighborhood (queries that see key j) is NATTEN's backward interval, exactly", () => {
    every((L, k, s) => {
      const off = s - Math.floor(s / 2) - 1;
      for (const c of [false, true]) {
        const seers: number[][] = Array.from({ length: L }, () => []);
        for (let x = 0; x < L; x++) for (const j of neighbors1d(x, L, k, s, 1, c)) seers[j]!.push(x);
        for (let j = 0; j < L; j++) {
          let qs: number;
          let qe: number;
          if (c) {
            qs = j;
            qe = Math.min(s * (Math.floor((j + k) / s) + (j + k >= L ? 1 : 0)), L);
          } else {
            qs = Math.floor(((j >= k ? 1 : 0) * (j - right(k) + off)) / s) * s;
            qe = j >= L - k ? L : Math.floor((j + left(k) + off + 1) / s) * s;
          }
          const want = Array.from({ length: Math.max(0, qe - qs) }, (_, i) => qs + i);
          expect(seers[j], `L=${L} k=${k} s=${s} causal=${c} key ${j}`).toEqual(want);
        }
      }
    });
  });

  it('dilation d: k keys of the query group, the undilated window of the in-group index on the group', () => {
    for (let L = 2; L <= 20; L++)
      for (let d = 2; d <= 5; d++)
        for (let k = 2; k * d <= L; k++)
          for (let s = 1; s <= k; s++)
            for (const c of [false, true])
              for (let x = 0; x < L; x++) {
                const g = x % d;
                // NATTEN's group length formula equals the number of tokens of the group
                const Lg = Math.floor(L / d) + (1 - Math.floor((g + (d - (L % d))) / d));
                expect(Lg).toBe(Array.from({ length: L }, (_, y) => y).filter((y) => y % d === g).length);
                const nb = neighbors1d(x, L, k, s, d, c);
                expect(nb).toEqual(neighbors1d(Math.floor(x / d), Lg, k, s, 1, c).map((j) => g + d * j));
                if (!c) expect(nb.length).toBe(k);
              }
  });

  it('N-d: a key is visible iff it is visible on every axis (neighborhoodMatrix = neighborhoodOf)', () => {
    const p = params([5, 4, 6], [3, 2, 4], { stride: [1, 2, 3], dilation: [1, 2, 1], causal: [false, true, false] });
    const m = neighborhoodMatrix(p);
    const N = 120;
    for (let q = 0; q < N; q++) {
      const qc = coordsOf(q, p.size);
      for (let kk = 0; kk < N; kk++) {
        const kc = coordsOf(kk, p.size);
        const vis = qc.every((x, a) =>
          neighbors1d(x, p.size[a]!, p.kernelSize[a]!, p.stride[a]!, p.dilation[a]!, p.causal[a]!).includes(kc[a]!),
        );
        expect(m[q * N + kk]).toBe(vis ? 1 : 0);
      }
      expect(neighborhoodOf(q, p).length).toBe(m.subarray(q * N, (q + 1) * N).reduce((a, b) => a + b, 0));
    }
  });
});

describe('referenceNeighborhoodBackward vs central finite differences', () => {
  interface FdCase {
    name: string;
    size: number[];
    p: RefNaParams;
    shape: { B: number; H: number; Hkv: number; D: number; Dv: number; M?: number };
    dLse: boolean;
    scale?: number;
  }
  const CASES: FdCase[] = [
    { name: '1-D k=3 s=2 causal, dLse', size: [7], p: params([7], [3], { stride: [2], causal: [true] }), shape: { B: 1, H: 2, Hkv: 1, D: 3, Dv: 2 }, dLse: true },
    {
      name: '2-D 4x5 k=(3,2) d=(1,2), GQA, no dLse',
      size: [4, 5],
      p: params([4, 5], [3, 2], { dilation: [1, 2] }),
      shape: { B: 1, H: 2, Hkv: 1, D: 2, Dv: 3 },
      dLse: false,
    },
    {
      name: '2-D 3x4 k=(2,3) s=(2,1) causal=(F,T), 3 additional keys, dLse, scale 0.8',
      size: [3, 4],
      p: params([3, 4], [2, 3], { stride: [2, 1], causal: [false, true] }),
      shape: { B: 2, H: 2, Hkv: 2, D: 3, Dv: 2, M: 3 },
      dLse: true,
      scale: 0.8,
    },
    {
      name: '3-D 2x3x4 k=(2,2,3), 2 additional keys, MQA, dLse',
      size: [2, 3, 4],
      p: params([2, 3, 4], [2, 2, 3], { stride: [1, 2, 1], causal: [true, false, false] }),
      shape: { B: 1, H: 3, Hkv: 1, D: 2, Dv: 2, M: 2 },
      dLse: true,
    },
  ];

  it.each(CASES)('$name', (c) => {
    const N = prod(c.size);
    const pr = problem(N, c.shape, 500 + N);
    const dOut = gaussian(c.shape.B * N * c.shape.H * c.shape.Dv, 91);
    const dLse = c.dLse ? gaussian(c.shape.B * N * c.shape.H, 92) : undefined;
    const g = referenceNeighborhoodBackward(pr, c.p, dOut, dLse, c.scale);
    const loss = () => {
      const { out, lse } = referenceNeighborhood(pr, c.p, c.scale);
      let L = 0;
      for (let i = 0; i < out.length; i++) L += dOut[i]! * out[i]!;
      if (dLse) for (let i = 0; i < lse.length; i++) L += dLse[i]! * lse[i]!;
      return L;
    };
    const h = 1e-6;
    const check = (name: string, x: Float64Array, grad: Float64Array | undefined) => {
      expect(grad, name).toBeInstanceOf(Float64Array);
      expect(grad!.length).toBe(x.length);
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i]!;
        x[i] = x0 + h;
        const lp = loss();
        x[i] = x0 - h;
        const lm = loss();
        x[i] = x0;
        const fd = (lp - lm) / (2 * h);
        expect(Math.abs(grad![i]! - fd), `d${name}[${i}] analytic ${grad![i]} vs fd ${fd}`).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(fd)));
      }
      expect(maxAbs(grad!)).toBeGreaterThan(1e-3);
    };
    check('q', pr.q as Float64Array, g.dq);
    check('k', pr.k as Float64Array, g.dk);
    check('v', pr.v as Float64Array, g.dv);
    if (c.shape.M) {
      check('addK', pr.addK as Float64Array, g.dAddK);
      check('addV', pr.addV as Float64Array, g.dAddV);
    } else {
      expect(g.dAddK).toBeUndefined();
    }
  });
});
