/**
 * The float64 references behind the block-sparse tests, checked on their own:
 *  - referenceBlockSparseBackward against central finite differences of
 *    L = <dOut, out> + <dLse, lse> (per-(b, h) masks with partial blocks, an empty row, GQA);
 *  - referenceBlockSparse agrees with the dense reference for causal/window masks, broadcasts mask
 *    B/H of 1, gives out 0 / lse -Infinity / zero gradients for empty rows;
 *  - the selection references (src/reference/selection.ts) on hand-computed examples.
 */
import { describe, expect, it } from 'vitest';
import { BlockMask } from '../src/index.ts';
import { referenceAttention, referenceAttentionBackward, type RefProblem } from '../src/reference/attention.ts';
import { referenceBlockSparse, referenceBlockSparseBackward, type RefDenseMask } from '../src/reference/block-sparse.ts';
import { mobaVisibility, referenceMobaSelect, referenceXattentionSelect, xattentionVisibility } from '../src/reference/selection.ts';
import { gaussian, maxAbsErr } from './helpers.ts';

function problem(s: { B: number; Nq: number; Nk: number; H: number; Hkv: number; D: number; Dv: number }, seed: number): RefProblem {
  return {
    ...s,
    q: gaussian(s.B * s.Nq * s.H * s.D, seed),
    k: gaussian(s.B * s.Nk * s.Hkv * s.D, seed + 1),
    v: gaussian(s.B * s.Nk * s.Hkv * s.Dv, seed + 2),
  };
}

describe('referenceBlockSparseBackward vs finite differences', () => {
  const s = { B: 2, Nq: 7, Nk: 9, H: 2, Hkv: 1, D: 3, Dv: 2 };
  // per-(b, h) element pattern with partial blocks and one empty row (b 1, h 0, query 3)
  const pattern = (b: number, h: number, i: number, j: number) => !(b === 1 && h === 0 && i === 3) && ((i * 3 + j * (h + 1) + b) % 4 !== 0 || j === i);

  it('per-(b, h) mask with an empty row, GQA, dLse', async () => {
    const m = BlockMask.fromPredicate(pattern, { B: 2, H: 2, Nq: s.Nq, Nk: s.Nk, blockQ: 16, blockK: 16 });
    const mask: RefDenseMask = { data: await m.toDense(), B: 2, H: 2 };
    const p = problem(s, 11);
    const dOut = gaussian(s.B * s.Nq * s.H * s.Dv, 20);
    const dLse = gaussian(s.B * s.Nq * s.H, 21);
    const scale = 0.7;
    const fwd = referenceBlockSparse(p, mask, scale);
    const empty = [...fwd.lse.keys()].filter((i) => fwd.lse[i] === -Infinity);
    expect(empty).toEqual([(1 * s.Nq + 3) * s.H + 0]);
    for (const li of empty) dLse[li] = 0; // -Infinity * 0 would poison the loss; the row has no gradient anyway
    const loss = (pp: RefProblem) => {
      const f = referenceBlockSparse(pp, mask, scale);
      let L = 0;
      for (let i = 0; i < f.out.length; i++) L += dOut[i]! * f.out[i]!;
      for (let i = 0; i < f.lse.length; i++) if (f.lse[i] !== -Infinity) L += dLse[i]! * f.lse[i]!;
      return L;
    };
    const g = referenceBlockSparseBackward(p, mask, dOut, dLse, scale);
    const eps = 1e-6;
    for (const name of ['q', 'k', 'v'] as const) {
      const base = p[name] as Float64Array;
      const want = name === 'q' ? g.dq : name === 'k' ? g.dk : g.dv;
      const fd = new Float64Array(base.length);
      for (let i = 0; i < base.length; i++) {
        const plus = Float64Array.from(base);
        const minus = Float64Array.from(base);
        plus[i]! += eps;
        minus[i]! -= eps;
        fd[i] = (loss({ ...p, [name]: plus }) - loss({ ...p, [name]: minus })) / (2 * eps);
      }
      expect(maxAbsErr(want, fd), `d${name}`).toBeLessThan(1e-6);
    }
    // the empty row: exactly zero output and dq
    const li = empty[0]!;
    for (let e = 0; e < s.Dv; e++) expect(fwd.out[li * s.Dv + e]).toBe(0);
    for (let d = 0; d < s.D; d++) expect(g.dq[li * s.D + d]).toBe(0);
  });
});

describe('referenceBlockSparse', () => {
  const s = { B: 2, Nq: 40, Nk: 70, H: 2, Hkv: 2, D: 8, Dv: 8 };
  const p = problem(s, 31);

  it('a causal BlockMask gives the dense causal reference exactly; a window too', async () => {
    const c = BlockMask.causal(40, 70, { blockQ: 16, blockK: 32 });
    const rc = referenceBlockSparse(p, { data: await c.toDense(), B: 1, H: 1 });
    const dc = referenceAttention(p, { causal: true });
    expect(Array.from(rc.out)).toEqual(Array.from(dc.out));
    expect(Array.from(rc.lse)).toEqual(Array.from(dc.lse));
    const w = BlockMask.slidingWindow(40, 70, 5, 3, { blockQ: 32, blockK: 16 });
    const rw = referenceBlockSparse(p, { data: await w.toDense(), B: 1, H: 1 });
    const dw = referenceAttention(p, { window: [5, 3] });
    expect(Array.from(rw.out)).toEqual(Array.from(dw.out));
    const dO = gaussian(s.B * s.Nq * s.H * s.Dv, 3);
    const gw = referenceBlockSparseBackward(p, { data: await w.toDense(), B: 1, H: 1 }, dO);
    const gd = referenceAttentionBackward(p, dO, undefined, { window: [5, 3] });
    expect(Array.from(gw.dk)).toEqual(Array.from(gd.dk));
  });

  it('mask B or H of 1 broadcasts; per-(b, h) entries are read at (b, h)', async () => {
    const perHead = BlockMask.fromPredicate((_b, h, i, j) => (h === 0 ? j <= i : j > i), { H: 2, Nq: 40, Nk: 70, blockQ: 16, blockK: 16 });
    const r = referenceBlockSparse(p, { data: await perHead.toDense(), B: 1, H: 2 });
    const causal = referenceAttention(p, { allows: (i, j) => j <= i });
    const anti = referenceAttention(p, { allows: (i, j) => j > i });
    for (let b = 0; b < 2; b++)
      for (let i = 0; i < 40; i++) {
        const l0 = (b * 40 + i) * 2;
        expect(r.lse[l0]).toBe(causal.lse[l0]);
        expect(r.lse[l0 + 1]).toBe(anti.lse[l0 + 1]);
      }
  });

  it('an empty mask: out 0, lse -Infinity, gradients 0', () => {
    const none: RefDenseMask = { data: new Uint8Array(40 * 70), B: 1, H: 1 };
    const f = referenceBlockSparse(p, none);
    expect(f.out.every((x) => x === 0)).toBe(true);
    expect(f.lse.every((x) => x === -Infinity)).toBe(true);
    const g = referenceBlockSparseBackward(p, none, gaussian(s.B * s.Nq * s.H * s.Dv, 4), gaussian(s.B * s.Nq * s.H, 5));
    for (const t of [g.dq, g.dk, g.dv]) expect(t.every((x) => x === 0)).toBe(true);
  });
});

describe('referenceMobaSelect on hand-computed examples', () => {
  // D = 1, C = 2: k = [1, 1, 3, 3, 2, 2] -> block means [1, 3, 2]; q = 1 -> scores [1, 3, 2]
  const dims = { B: 1, Nq: 6, Nk: 6, H: 1, Hkv: 1, D: 1 };
  const q = [1, 1, 1, 1, 1, 1];
  const k = [1, 1, 3, 3, 2, 2];

  it('causal: own block first, complete past blocks by score', () => {
    const r = referenceMobaSelect(q, k, dims, { blockSize: 2, topK: 2 });
    expect(r.nBlocks).toBe(3);
    expect(Array.from(r.scores.subarray(0, 3))).toEqual([1, 3, 2]);
    expect(Array.from(r.selected)).toEqual([0, -1, 0, -1, 1, 0, 1, 0, 2, 1, 2, 1]);
    // token 4 sees block 1 and itself (block 2 is token-causal); token 5 sees blocks 1 and 2
    expect(Array.from(r.visible.subarray(4 * 6, 5 * 6))).toEqual([0, 0, 1, 1, 1, 0]);
    expect(Array.from(r.visible.subarray(5 * 6, 6 * 6))).toEqual([0, 0, 1, 1, 1, 1]);
    expect(Array.from(r.visible.subarray(0, 6))).toEqual([1, 0, 0, 0, 0, 0]);
  });

  it('non-causal: plain top-K, no forcing; margin is the smallest decisive gap', () => {
    const r = referenceMobaSelect(q, k, dims, { blockSize: 2, topK: 2, causal: false });
    for (let t = 0; t < 6; t++) expect(Array.from(r.selected.subarray(t * 2, t * 2 + 2))).toEqual([1, 2]);
    expect(r.margin[0]).toBeCloseTo(1 / 3, 12);
    expect(Array.from(r.visible.subarray(0, 6))).toEqual([0, 0, 1, 1, 1, 1]);
  });

  it('ties to the lower index; a partial tail block averaged over its length', () => {
    const t = referenceMobaSelect([1], [2, 2, 2, 2, 1, 1], { ...dims, Nq: 1 }, { blockSize: 2, topK: 1, causal: false });
    expect(Array.from(t.selected)).toEqual([0]);
    expect(t.margin[0]).toBe(0);
    const tail = referenceMobaSelect([1], [1, 1, 1, 1, 4], { ...dims, Nq: 1, Nk: 5 }, { blockSize: 2, topK: 3, causal: false });
    expect(Array.from(tail.scores)).toEqual([1, 1, 4]);
    expect(Array.from(tail.selected)).toEqual([2, 0, 1]);
  });

  it('Nq != Nk: bottom-right alignment; queries before every key select nothing', () => {
    const r = referenceMobaSelect([1, 1], k, { ...dims, Nq: 2 }, { blockSize: 2, topK: 2 });
    expect(Array.from(r.selected)).toEqual([2, 1, 2, 1]); // positions 4 and 5
    const before = referenceMobaSelect([1, 1, 1, 1], [1, 1], { ...dims, Nq: 4, Nk: 2 }, { blockSize: 2, topK: 2 });
    expect(Array.from(before.selected)).toEqual([-1, -1, -1, -1, 0, -1, 0, -1]);
    expect(Array.from(mobaVisibility(before.selected, { B: 1, Nq: 4, Nk: 2, H: 1 }, { blockSize: 2, topK: 2 }))).toEqual([0, 0, 0, 0, 1, 0, 1, 1]);
  });

  it('GQA: head h reads kv head h / (H / Hkv); given scores replace the computed ones', () => {
    // 2 query heads, 1 kv head: same scores for both
    const r = referenceMobaSelect([1, -1], k, { B: 1, Nq: 1, Nk: 6, H: 2, Hkv: 1, D: 1 }, { blockSize: 2, topK: 1, causal: false });
    expect(Array.from(r.selected)).toEqual([1, 0]);
    const o = referenceMobaSelect([1, -1], k, { B: 1, Nq: 1, Nk: 6, H: 2, Hkv: 1, D: 1 }, { blockSize: 2, topK: 1, causal: false, scores: [0, 0, 5, 9, 0, 0] });
    expect(Array.from(o.selected)).toEqual([2, 0]);
  });
});

describe('referenceXattentionSelect on hand-computed examples', () => {
  it('S = 1, non-causal, uniform attention: equal blocks, threshold cut with the crossing block, ties to the lower index', () => {
    const dims = { B: 1, Nq: 4, Nk: 4, H: 1, Hkv: 1, D: 1 };
    const r = referenceXattentionSelect([0, 0, 0, 0], [1, 2, 3, 4], dims, { stride: 1, threshold: 0.5, blockSize: 2, causal: false });
    expect(Array.from(r.scores)).toEqual([1, 1, 1, 1]);
    expect(Array.from(r.selected)).toEqual([1, 0, 1, 0]); // 1 >= 0.5 * 2 after the first block
    expect(r.margin[0]).toBe(0); // the sum lands exactly on the requirement
    const more = referenceXattentionSelect([0, 0, 0, 0], [1, 2, 3, 4], dims, { stride: 1, threshold: 0.51, blockSize: 2, causal: false });
    expect(Array.from(more.selected)).toEqual([1, 1, 1, 1]);
    const none = referenceXattentionSelect([0, 0, 0, 0], [1, 2, 3, 4], dims, { stride: 1, threshold: 0, blockSize: 2, causal: false });
    expect(Array.from(none.selected)).toEqual([0, 0, 0, 0]);
  });

  it('S = 1, causal: the masked softmax, forced sink and diagonal', () => {
    const dims = { B: 1, Nq: 4, Nk: 4, H: 1, Hkv: 1, D: 1 };
    const r = referenceXattentionSelect([0, 0, 0, 0], [1, 2, 3, 4], dims, { stride: 1, threshold: 0, blockSize: 2 });
    // rows: t0 [1], t1 [1/2, 1/2], t2 thirds, t3 quarters
    const want = [2, 0, 2 / 3 + 1 / 2, 1 / 3 + 1 / 2];
    for (let i = 0; i < 4; i++) expect(r.scores[i]).toBeCloseTo(want[i]!, 14);
    expect(Array.from(r.selected)).toEqual([1, 0, 1, 1]);
    expect(Array.from(r.visible)).toEqual([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
  });

  it('the antidiagonal: A[t, u] = sum_i q[tS + S-1-i] k[uS + i] / (sqrt(D) S), tokens past the end zero', () => {
    // D = 1, S = 2, Nq = 3 (rows t = 0, 1; q[3] is past the end), Nk = 4 (columns u = 0, 1), one block
    const q = [1, 2, 5];
    const k = [1, 0, 0, 1];
    const r = referenceXattentionSelect(q, k, { B: 1, Nq: 3, Nk: 4, H: 1, Hkv: 1, D: 1 }, { stride: 2, threshold: 1, blockSize: 2, causal: false });
    // row 0: A = [(2*1 + 1*0)/2, (2*0 + 1*1)/2] = [1, 0.5]; row 1: [(0*1 + 5*0)/2, (0*0 + 5*1)/2] = [0, 2.5]
    const sm = (a: number, b: number) => [Math.exp(a) / (Math.exp(a) + Math.exp(b)), Math.exp(b) / (Math.exp(a) + Math.exp(b))];
    const r0 = sm(1, 0.5);
    const r1 = sm(0, 2.5);
    // blocks of 2 tokens = 1 reshaped row/column each: Qb = 2, Kb = 2
    const want = [r0[0]!, r0[1]!, r1[0]!, r1[1]!];
    for (let i = 0; i < 4; i++) expect(r.scores[i]).toBeCloseTo(want[i]!, 14);
  });

  it('rows with no key (Nq > Nk, causal) carry no mass; forced blocks stay selected; visibility is token-causal', () => {
    const dims = { B: 1, Nq: 8, Nk: 4, H: 1, Hkv: 1, D: 1 };
    const r = referenceXattentionSelect([1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1], dims, { stride: 2, threshold: 0.9, blockSize: 4 });
    expect(Array.from(r.scores)).toEqual([0, 2]);
    expect(Array.from(r.selected)).toEqual([1, 1]);
    const vis = xattentionVisibility(r.selected, dims, { blockSize: 4 });
    expect(Array.from(vis.subarray(0, 16)).every((x) => x === 0)).toBe(true); // queries 0..3 precede every key
    expect(Array.from(vis.subarray(4 * 4, 5 * 4))).toEqual([1, 0, 0, 0]);
  });
});
