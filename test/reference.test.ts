/**
 * The float64 references checked on their own: finite differences of
 * L = <dOut, out> + <dLse, lse> against the analytic gradients, an independent naive softmax, hand-
 * computed values, and the merge identity (attention over key halves merged = attention over all).
 * Also checks the test helpers' dtype rounding against the library's conversions.
 */
import { describe, expect, it } from 'vitest';
import { tensor } from '../src/index.ts';
import {
  attentionAllows,
  referenceAttention,
  referenceAttentionBackward,
  referenceMerge,
  referenceMergeBackward,
  type RefMaskOptions,
  type RefProblem,
} from '../src/reference/attention.ts';
import { gaussian, maxAbsErr, roundBf16, roundF16, sliceSeq, worst, type Shape } from './helpers.ts';

interface FdCase extends Shape {
  name: string;
  opts: RefMaskOptions;
  dLse: boolean;
  /** rows (b, i, h) that must be fully masked */
  emptyRows?: number;
}

function problem(c: FdCase, seed: number): RefProblem {
  return {
    B: c.B,
    Nq: c.Nq,
    Nk: c.Nk,
    H: c.H,
    Hkv: c.Hkv,
    D: c.D,
    Dv: c.Dv,
    q: gaussian(c.B * c.Nq * c.H * c.D, seed),
    k: gaussian(c.B * c.Nk * c.Hkv * c.D, seed + 1),
    v: gaussian(c.B * c.Nk * c.Hkv * c.Dv, seed + 2),
  };
}

/** L = <dOut, out> + <dLse, lse>, with the -Infinity LSE of empty rows contributing nothing. */
function loss(p: RefProblem, opts: RefMaskOptions, dOut: Float64Array, dLse: Float64Array | undefined): number {
  const { out, lse } = referenceAttention(p, opts);
  let L = 0;
  for (let i = 0; i < out.length; i++) L += dOut[i]! * out[i]!;
  if (dLse) for (let i = 0; i < lse.length; i++) if (Number.isFinite(lse[i]!)) L += dLse[i]! * lse[i]!;
  return L;
}

const FD_CASES: FdCase[] = [
  { name: 'full, no dLse', B: 1, Nq: 4, Nk: 5, H: 1, Hkv: 1, D: 3, Dv: 2, opts: {}, dLse: false },
  { name: 'full, dLse, custom scale', B: 2, Nq: 3, Nk: 4, H: 2, Hkv: 2, D: 3, Dv: 4, opts: { scale: 0.7 }, dLse: true },
  { name: 'causal Nq < Nk, GQA', B: 1, Nq: 3, Nk: 6, H: 4, Hkv: 2, D: 3, Dv: 2, opts: { causal: true }, dLse: true },
  { name: 'window [1, 2], MQA', B: 1, Nq: 6, Nk: 6, H: 3, Hkv: 1, D: 2, Dv: 3, opts: { window: [1, 2] }, dLse: true },
  { name: 'window [0, -1], Nq > Nk', B: 1, Nq: 7, Nk: 4, H: 2, Hkv: 1, D: 3, Dv: 2, opts: { window: [0, -1] }, dLse: true },
  // Nq > Nk with bottom-right causal alignment: queries 0..2 see no key (fully masked rows)
  { name: 'causal Nq > Nk (fully masked rows)', B: 2, Nq: 6, Nk: 3, H: 2, Hkv: 2, D: 3, Dv: 3, opts: { causal: true }, dLse: true, emptyRows: 2 * 3 * 2 },
];

describe('referenceAttentionBackward vs central finite differences', () => {
  it.each(FD_CASES)('$name', (c) => {
    const p = problem(c, 1000 + c.Nq * 31 + c.Nk);
    const dOut = gaussian(c.B * c.Nq * c.H * c.Dv, 77);
    const dLse = c.dLse ? gaussian(c.B * c.Nq * c.H, 78) : undefined;
    const g = referenceAttentionBackward(p, dOut, dLse, c.opts);
    const { lse } = referenceAttention(p, c.opts);
    const empty = Array.from(lse).filter((x) => x === -Infinity).length;
    expect(empty).toBe(c.emptyRows ?? 0);

    const h = 1e-6;
    let checked = 0;
    const check = (name: 'q' | 'k' | 'v', grad: Float64Array) => {
      const x = p[name] as Float64Array;
      expect(grad.length).toBe(x.length);
      // every element (these problems are tiny): sampled would do, exhaustive is cheaper to trust
      const fd = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i]!;
        x[i] = x0 + h;
        const lp = loss(p, c.opts, dOut, dLse);
        x[i] = x0 - h;
        const lm = loss(p, c.opts, dOut, dLse);
        x[i] = x0;
        fd[i] = (lp - lm) / (2 * h);
        checked++;
      }
      for (let i = 0; i < x.length; i++)
        expect(Math.abs(grad[i]! - fd[i]!), `d${name}[${i}] analytic ${grad[i]} vs fd ${fd[i]}`).toBeLessThanOrEqual(
          1e-6 * (1 + Math.abs(fd[i]!)),
        );
      // the gradient is not trivially zero
      expect(Math.max(...Array.from(fd, Math.abs))).toBeGreaterThan(1e-3);
    };
    check('q', g.dq);
    check('k', g.dk);
    check('v', g.dv);
    expect(checked).toBe(p.q.length + p.k.length + p.v.length);

    // fully masked rows: zero dq exactly, out 0, lse -Infinity
    const { out } = referenceAttention(p, c.opts);
    for (let li = 0; li < lse.length; li++) {
      if (lse[li] !== -Infinity) continue;
      for (let d = 0; d < c.D; d++) expect(g.dq[li * c.D + d]).toBe(0);
      for (let e = 0; e < c.Dv; e++) expect(out[li * c.Dv + e]).toBe(0);
    }
  });

  it('the dLse term is the softmax-weighted sum of scaled keys: dLse alone gives dq = scale * sum_j P_ij k_j', () => {
    const c = FD_CASES[1]!;
    const p = problem(c, 5);
    const zeros = new Float64Array(c.B * c.Nq * c.H * c.Dv);
    const dLse = gaussian(c.B * c.Nq * c.H, 6);
    const g = referenceAttentionBackward(p, zeros, dLse, c.opts);
    // dv must be 0 (out does not enter L)
    expect(Math.max(...Array.from(g.dv, Math.abs))).toBe(0);
    // d lse_i / d q_i = scale * sum_j P_ij k_j, with P computed here directly
    const scale = c.opts.scale!;
    for (let b = 0; b < c.B; b++)
      for (let i = 0; i < c.Nq; i++)
        for (let h = 0; h < c.H; h++) {
          const li = (b * c.Nq + i) * c.H + h;
          const s: number[] = [];
          for (let j = 0; j < c.Nk; j++) {
            let dot = 0;
            for (let d = 0; d < c.D; d++) dot += p.q[li * c.D + d]! * p.k[((b * c.Nk + j) * c.Hkv + h) * c.D + d]!;
            s.push(scale * dot);
          }
          const z = s.reduce((a, x) => a + Math.exp(x), 0);
          for (let d = 0; d < c.D; d++) {
            let want = 0;
            for (let j = 0; j < c.Nk; j++) want += (Math.exp(s[j]!) / z) * scale * p.k[((b * c.Nk + j) * c.Hkv + h) * c.D + d]!;
            expect(g.dq[li * c.D + d]).toBeCloseTo(dLse[li]! * want, 12);
          }
        }
  });
});

describe('attentionAllows', () => {
  it('matches hand-written tables (bottom-right alignment)', () => {
    const table = (Nq: number, Nk: number, o: RefMaskOptions) =>
      Array.from({ length: Nq }, (_, i) => Array.from({ length: Nk }, (_, j) => (attentionAllows(i, j, Nq, Nk, o) ? 1 : 0)).join(''));
    expect(table(2, 4, { causal: true })).toEqual(['1110', '1111']);
    expect(table(4, 2, { causal: true })).toEqual(['00', '00', '10', '11']);
    expect(table(4, 4, { window: [1, 0] })).toEqual(['1000', '1100', '0110', '0011']);
    expect(table(3, 5, { window: [0, 1] })).toEqual(['00110', '00011', '00001']);
    expect(table(3, 3, { window: [-1, 1] })).toEqual(['110', '111', '111']);
    expect(table(3, 3, { window: [1, -1], causal: true })).toEqual(['100', '110', '011']);
    expect(table(3, 3, { window: [1, 1], causal: true })).toEqual(['100', '110', '011']);
    expect(table(2, 3, {})).toEqual(['111', '111']);
  });
});

describe('referenceAttention vs an independently written softmax', () => {
  it('hand-computed 2x2, D = 1', () => {
    // q = [1, 2], k = [1, -1], v = [[10, 0], [0, 10]], scale 1
    const p: RefProblem = { B: 1, Nq: 2, Nk: 2, H: 1, Hkv: 1, D: 1, Dv: 2, q: [1, 2], k: [1, -1], v: [10, 0, 0, 10] };
    const { out, lse } = referenceAttention(p, { scale: 1 });
    // row 0: s = [1, -1]; row 1: s = [2, -2]
    const w0 = 1 / (1 + Math.exp(-2));
    const w1 = 1 / (1 + Math.exp(-4));
    expect(Array.from(out)).toEqual([
      expect.closeTo(10 * w0, 13),
      expect.closeTo(10 * (1 - w0), 13),
      expect.closeTo(10 * w1, 13),
      expect.closeTo(10 * (1 - w1), 13),
    ]);
    expect(lse[0]).toBeCloseTo(Math.log(Math.E + 1 / Math.E), 13);
    expect(lse[1]).toBeCloseTo(Math.log(Math.exp(2) + Math.exp(-2)), 13);
    // causal, Nq = Nk: row 0 sees key 0 only -> out = v_0, lse = s_00
    const c = referenceAttention(p, { scale: 1, causal: true });
    expect(Array.from(c.out.slice(0, 2))).toEqual([10, 0]);
    expect(c.lse[0]).toBe(1);
  });

  it.each([
    { name: 'full', opts: {} as RefMaskOptions, Nq: 5, Nk: 7 },
    { name: 'causal, Nq < Nk', opts: { causal: true }, Nq: 3, Nk: 7 },
    { name: 'causal, Nq > Nk', opts: { causal: true }, Nq: 7, Nk: 3 },
    { name: 'window [2, 1]', opts: { window: [2, 1] as const }, Nq: 6, Nk: 6 },
    { name: 'causal + window [1, 3], scale 0.3', opts: { causal: true, window: [1, 3] as const, scale: 0.3 }, Nq: 6, Nk: 8 },
  ])('$name', ({ opts, Nq, Nk }) => {
    const B = 2, H = 4, Hkv = 2, D = 3, Dv = 2;
    const p: RefProblem = {
      B, Nq, Nk, H, Hkv, D, Dv,
      q: gaussian(B * Nq * H * D, 11),
      k: gaussian(B * Nk * Hkv * D, 12),
      v: gaussian(B * Nk * Hkv * Dv, 13),
    };
    const ref = referenceAttention(p, opts);
    // Independent: mask from the spec written inline; softmax as exp(s) / sum exp(s) without the
    // max shift; GQA as an explicit head map table; layout indexing by strides.
    const scale = opts.scale ?? 1 / Math.sqrt(D);
    const [left, right] = opts.window ?? [-1, -1];
    const kvHead = [0, 0, 1, 1];
    let checkedRows = 0;
    for (let b = 0; b < B; b++)
      for (let i = 0; i < Nq; i++)
        for (let h = 0; h < H; h++) {
          const a = i + (Nk - Nq);
          const vis: number[] = [];
          for (let j = 0; j < Nk; j++) {
            const ok = (!opts.causal || j <= a) && (left < 0 || a - j <= left) && (right < 0 || j - a <= right);
            if (ok) vis.push(j);
          }
          const row = (b * Nq + i) * H + h;
          if (vis.length === 0) {
            expect(ref.lse[row]).toBe(-Infinity);
            for (let e = 0; e < Dv; e++) expect(ref.out[row * Dv + e]).toBe(0);
            continue;
          }
          const ex = vis.map((j) => {
            let s = 0;
            for (let d = 0; d < D; d++) s += p.q[[b, i, h, d].reduce((acc, x, t) => acc * [B, Nq, H, D][t]! + x, 0)]! * p.k[((b * Nk + j) * Hkv + kvHead[h]!) * D + d]!;
            return Math.exp(scale * s);
          });
          const z = ex.reduce((s, x) => s + x, 0);
          expect(ref.lse[row]).toBeCloseTo(Math.log(z), 12);
          for (let e = 0; e < Dv; e++) {
            const want = vis.reduce((s, j, t) => s + (ex[t]! / z) * p.v[((b * Nk + j) * Hkv + kvHead[h]!) * Dv + e]!, 0);
            expect(ref.out[row * Dv + e]).toBeCloseTo(want, 12);
          }
          checkedRows++;
        }
    expect(checkedRows).toBeGreaterThan(0);
  });
});

describe('referenceMerge', () => {
  it('merging attention over key halves equals attention over all keys (out and lse)', () => {
    const B = 2, Nq = 5, Nk = 10, H = 4, Hkv = 2, D = 3, Dv = 4;
    const q = gaussian(B * Nq * H * D, 21);
    const k = gaussian(B * Nk * Hkv * D, 22);
    const v = gaussian(B * Nk * Hkv * Dv, 23);
    const full = referenceAttention({ B, Nq, Nk, H, Hkv, D, Dv, q, k, v });
    const half = (n0: number, n1: number) =>
      referenceAttention({
        B, Nq, Nk: n1 - n0, H, Hkv, D, Dv, q,
        k: sliceSeq(k, B, Nk, Hkv * D, n0, n1),
        v: sliceSeq(v, B, Nk, Hkv * Dv, n0, n1),
      });
    const a = half(0, Nk / 2);
    const b = half(Nk / 2, Nk);
    const m = referenceMerge([a, b], B * Nq * H, Dv);
    expect(maxAbsErr(m.out, full.out), worst(m.out, full.out)).toBeLessThan(1e-13);
    expect(maxAbsErr(m.lse, full.lse), worst(m.lse, full.lse)).toBeLessThan(1e-13);
    // the halves differ from the whole (the test is not vacuous)
    expect(maxAbsErr(a.out, full.out)).toBeGreaterThan(1e-2);
  });

  it('hand values, -Infinity parts and all -Infinity rows', () => {
    const parts = [
      { out: [1, 2, 5, 6, 9, 9], lse: [0, -Infinity, -Infinity] },
      { out: [3, 4, 7, 8, 9, 9], lse: [Math.log(3), 2, -Infinity] },
    ];
    const m = referenceMerge(parts, 3, 2);
    // row 0: weights 1/4, 3/4
    expect(m.out[0]).toBeCloseTo(0.25 * 1 + 0.75 * 3, 14);
    expect(m.out[1]).toBeCloseTo(0.25 * 2 + 0.75 * 4, 14);
    expect(m.lse[0]).toBeCloseTo(Math.log(4), 14);
    // row 1: only part 1
    expect(Array.from(m.out.slice(2, 4))).toEqual([7, 8]);
    expect(m.lse[1]).toBe(2);
    // row 2: nothing
    expect(Array.from(m.out.slice(4, 6))).toEqual([0, 0]);
    expect(m.lse[2]).toBe(-Infinity);
  });
});

describe('referenceMergeBackward vs central finite differences', () => {
  it.each([{ dLse: false }, { dLse: true }])('3 parts, -Infinity entries, dLse: $dLse', ({ dLse: useDLse }) => {
    const rows = 6, dv = 3, P = 3;
    const parts = Array.from({ length: P }, (_, i) => ({
      out: gaussian(rows * dv, 40 + i),
      lse: Float64Array.from(gaussian(rows, 50 + i), (x) => 2 * x),
    }));
    parts[0]!.lse[1] = -Infinity; // one part empty in row 1
    parts[1]!.lse[1] = -Infinity;
    for (const p of parts) p.lse[4] = -Infinity; // row 4 empty in every part
    const dOut = gaussian(rows * dv, 60);
    const dLse = useDLse ? gaussian(rows, 61) : undefined;
    const g = referenceMergeBackward(parts, rows, dv, dOut, dLse);
    const L = () => {
      const m = referenceMerge(parts, rows, dv);
      let s = 0;
      for (let i = 0; i < m.out.length; i++) s += dOut[i]! * m.out[i]!;
      if (dLse) for (let r = 0; r < rows; r++) if (Number.isFinite(m.lse[r]!)) s += dLse[r]! * m.lse[r]!;
      return s;
    };
    const h = 1e-6;
    for (let pi = 0; pi < P; pi++) {
      for (const [name, x, grad] of [
        ['out', parts[pi]!.out, g[pi]!.dout],
        ['lse', parts[pi]!.lse, g[pi]!.dlse],
      ] as const) {
        for (let i = 0; i < x.length; i++) {
          const x0 = x[i]!;
          if (x0 === -Infinity) {
            expect(grad[i], `part ${pi} d${name}[${i}] of an empty part`).toBe(0);
            continue;
          }
          x[i] = x0 + h;
          const lp = L();
          x[i] = x0 - h;
          const lm = L();
          x[i] = x0;
          const fd = (lp - lm) / (2 * h);
          expect(Math.abs(grad[i]! - fd), `part ${pi} d${name}[${i}]: ${grad[i]} vs fd ${fd}`).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(fd)));
        }
      }
      // rows where every part is empty: zero gradients
      for (let e = 0; e < dv; e++) expect(g[pi]!.dout[4 * dv + e]).toBe(0);
      expect(g[pi]!.dlse[4]).toBe(0);
    }
    // non-trivial: the lse gradients are not all zero
    expect(Math.max(...g.flatMap((x) => Array.from(x.dlse, Math.abs)))).toBeGreaterThan(1e-3);
  });
});

describe('test helpers: dtype rounding agrees with the library conversion', () => {
  it.each(['float16', 'bfloat16'] as const)('%s', async (dtype) => {
    const n = 4096;
    const g = gaussian(n, 99);
    // a spread of magnitudes, including float16 subnormals and overflow, and exact ties
    const x = Float32Array.from(g, (v, i) => v * 2 ** ((i % 48) - 30));
    x[0] = 65519;
    x[1] = 65520;
    x[2] = 1 + 2 ** -11; // float16 tie -> 1
    x[3] = 1 + 3 * 2 ** -11; // float16 tie -> 1 + 2^-9
    x[4] = 1 + 2 ** -8; // bfloat16 tie -> 1
    x[5] = 2 ** -25;
    const t = tensor(x, [n], { dtype });
    const got = await t.toArray();
    const round = dtype === 'float16' ? roundF16 : roundBf16;
    let mismatches = 0;
    for (let i = 0; i < n; i++) if (!Object.is(round(x[i]!), got[i]!)) mismatches++;
    expect(mismatches, `first: ${worst(Array.from(x, round), got)}`).toBe(0);
  });
});
