/**
 * mergeAttention: against the float64 reference (forward and backward, -Infinity parts and rows),
 * and end to end: attention over key blocks merged by LSE equals attention over all keys, and
 * gradients chained through the merge into each block's attention backward (its dLse path) equal
 * the full attention's gradients.
 */
import { describe, expect, it } from 'vitest';
import {
  attention,
  mergeAttention,
  mergeAttentionBackward,
  type AttentionOptions,
  type FloatDType,
  type Tensor,
} from '../src/index.ts';
import {
  referenceAttention,
  referenceAttentionBackward,
  referenceMerge,
  referenceMergeBackward,
} from '../src/reference/attention.ts';
import { concatSeq, fromF64, gaussian, makeInputs, maxAbs, maxAbsErr, randT, read64, rng, sliceSeq, worst, type SeqShape } from './helpers.ts';

interface Part {
  out: Tensor;
  lse: Tensor;
  a: { out: Float64Array; lse: Float64Array };
}

/** Random parts over [B, N, H, Dv]; lse ~ 3 N(0,1) with -Infinity entries at `holes[part]` rows. */
async function makeParts(
  n: number,
  lead: number[],
  dv: number,
  seed: number,
  holes: number[][] = [],
  dtype: FloatDType = 'float32',
): Promise<Part[]> {
  const rows = lead.reduce((a, b) => a * b, 1);
  const parts: Part[] = [];
  for (let i = 0; i < n; i++) {
    const out = await fromF64(gaussian(rows * dv, seed + 2 * i), [...lead, dv], dtype);
    const l = Float64Array.from(gaussian(rows, seed + 2 * i + 1), (x) => 3 * x);
    for (const r of holes[i] ?? []) l[r] = -Infinity;
    const lse = await fromF64(l, lead, 'float32');
    parts.push({ out: out.t, lse: lse.t, a: { out: out.a, lse: lse.a } });
  }
  return parts;
}

describe('mergeAttention vs referenceMerge', () => {
  const lead = [2, 5, 3]; // [B, N, H]
  const rows = 30;
  const dv = 7;

  it.each([2, 3])('%i parts, with -Infinity entries and all -Infinity rows', async (n) => {
    // row 4: one part empty; row 9: all but the last part empty; rows 0 and 17: every part empty
    const holes = Array.from({ length: n }, (_, i) => [0, 17, ...(i === 0 ? [4] : []), ...(i < n - 1 ? [9] : [])]);
    const parts = await makeParts(n, lead, dv, 100 * n, holes);
    const m = mergeAttention(parts);
    expect(m.out.shape).toEqual([...lead, dv]);
    expect(m.lse.shape).toEqual(lead);
    expect(m.lse.dtype).toBe('float32');
    const ref = referenceMerge(parts.map((p) => p.a), rows, dv);
    const out = await read64(m.out);
    const lse = await read64(m.lse);
    expect(maxAbsErr(out, ref.out), worst(out, ref.out)).toBeLessThanOrEqual(2e-6 * maxAbs(ref.out));
    expect(maxAbsErr(lse, ref.lse), worst(lse, ref.lse)).toBeLessThanOrEqual(2e-6 * maxAbs(ref.lse));
    for (const r of [0, 17]) {
      expect(lse[r]).toBe(-Infinity);
      for (let e = 0; e < dv; e++) expect(out[r * dv + e] === 0, `row ${r}: ${out[r * dv + e]}`).toBe(true);
    }
    // row 9 is exactly the last part's row
    const last = parts[n - 1]!.a;
    expect(lse[9]).toBe(last.lse[9]);
    for (let e = 0; e < dv; e++) expect(out[9 * dv + e]).toBeCloseTo(last.out[9 * dv + e]!, 6);
  });

  it('a single part merges to itself', async () => {
    const [p] = await makeParts(1, lead, dv, 7, [[3]]);
    const m = mergeAttention([p!]);
    const out = await read64(m.out);
    const lse = await read64(m.lse);
    expect(maxAbsErr(lse, p!.a.lse)).toBe(0);
    const expectedOut = Float64Array.from(p!.a.out, (x, i) => (Math.floor(i / dv) === 3 ? 0 : x));
    expect(maxAbsErr(out, expectedOut)).toBeLessThanOrEqual(1e-6 * maxAbs(expectedOut));
  });

  it('large lse differences do not overflow (weights are relative)', async () => {
    const o1 = await fromF64([1, 2], [1, 2]);
    const o2 = await fromF64([3, 4], [1, 2]);
    const l1 = await fromF64([1000], [1]);
    const l2 = await fromF64([1000 + Math.log(3)], [1]);
    const m = mergeAttention([
      { out: o1.t, lse: l1.t },
      { out: o2.t, lse: l2.t },
    ]);
    const out = await read64(m.out);
    expect(out[0]).toBeCloseTo(2.5, 4);
    expect(out[1]).toBeCloseTo(3.5, 4);
    expect((await read64(m.lse))[0]).toBeCloseTo(1000 + Math.log(4), 3);
  });

  it.each(['float16', 'bfloat16'] as const)('%s outputs: within one rounding of the reference', async (dtype) => {
    const parts = await makeParts(3, lead, dv, 55, [[2], [2, 5]], dtype);
    const m = mergeAttention(parts);
    expect(m.out.dtype).toBe(dtype);
    const ref = referenceMerge(parts.map((p) => p.a), rows, dv);
    const out = await read64(m.out);
    const eps = dtype === 'float16' ? 2 ** -11 : 2 ** -8;
    // per element: |err| <= half an ulp of the result (rounding) + float32 accumulation slack
    for (let i = 0; i < out.length; i++)
      expect(Math.abs(out[i]! - ref.out[i]!), `element ${i}: ${out[i]} vs ${ref.out[i]}`).toBeLessThanOrEqual(
        eps * Math.abs(ref.out[i]!) + 1e-6 * maxAbs(ref.out),
      );
    const lse = await read64(m.lse);
    expect(maxAbsErr(lse, ref.lse)).toBeLessThanOrEqual(2e-6 * maxAbs(ref.lse));
  });

  it.each([false, true])('backward vs referenceMergeBackward (dLse: %s)', async (useDLse) => {
    const n = 3;
    const holes = [[0, 4, 17], [0, 9, 17], [0, 17]];
    const parts = await makeParts(n, lead, dv, 300, holes);
    const m = mergeAttention(parts);
    const dOut = await randT([...lead, dv], { seed: 310 });
    const dLse = useDLse ? await randT(lead, { seed: 311 }) : undefined;
    const grads = m.backward(dOut.t, dLse?.t);
    expect(grads).toHaveLength(n);
    const functional = mergeAttentionBackward(parts, m.out, m.lse, dOut.t, dLse ? { dLse: dLse.t } : {});
    const ref = referenceMergeBackward(parts.map((p) => p.a), rows, dv, dOut.a, dLse?.a);
    for (let i = 0; i < n; i++) {
      const dout = await read64(grads[i]!.dout);
      const dlse = await read64(grads[i]!.dlse);
      expect(grads[i]!.dout.shape).toEqual([...lead, dv]);
      expect(grads[i]!.dlse.shape).toEqual(lead);
      expect(maxAbsErr(dout, ref[i]!.dout), `part ${i} dout ${worst(dout, ref[i]!.dout)}`).toBeLessThanOrEqual(2e-6 * maxAbs(ref[i]!.dout));
      expect(maxAbsErr(dlse, ref[i]!.dlse), `part ${i} dlse ${worst(dlse, ref[i]!.dlse)}`).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(ref[i]!.dlse)));
      // -Infinity entries get exactly zero gradients
      for (const r of holes[i]!) {
        expect(dlse[r] === 0, `part ${i} dlse row ${r}: ${dlse[r]}`).toBe(true);
        for (let e = 0; e < dv; e++) expect(dout[r * dv + e] === 0, `part ${i} dout row ${r}: ${dout[r * dv + e]}`).toBe(true);
      }
      expect(await read64(functional[i]!.dout)).toEqual(dout);
      expect(await read64(functional[i]!.dlse)).toEqual(dlse);
    }
    // dLse matters
    if (useDLse) {
      const noDl = referenceMergeBackward(parts.map((p) => p.a), rows, dv, dOut.a);
      expect(maxAbsErr(noDl[0]!.dlse, ref[0]!.dlse)).toBeGreaterThan(1e-2);
    }
  });
});

// ------------------------------------------------------------------ end to end with the kernel

interface Split extends SeqShape {
  name: string;
  full: AttentionOptions;
  /** key blocks [k0, k1) and the options that make each block's attention the full one restricted to it */
  blocks: { k0: number; k1: number; opts: AttentionOptions }[];
  /** some block has rows that see none of its keys */
  emptyRows: boolean;
}

const SPLITS: Split[] = [
  {
    name: 'non-causal, halves, GQA',
    B: 2, N: 40, H: 4, Hkv: 2, D: 16, Dv: 12,
    full: {},
    blocks: [
      { k0: 0, k1: 20, opts: {} },
      { k0: 20, k1: 40, opts: {} },
    ],
    emptyRows: false,
  },
  {
    name: 'non-causal, three uneven blocks spanning kernel tiles, MQA',
    B: 1, N: 150, H: 2, Hkv: 1, D: 24, Dv: 20,
    full: { scale: 0.3 },
    blocks: [
      { k0: 0, k1: 70, opts: { scale: 0.3 } },
      { k0: 70, k1: 71, opts: { scale: 0.3 } },
      { k0: 71, k1: 150, opts: { scale: 0.3 } },
    ],
    emptyRows: false,
  },
  {
    // Full causal over N keys, split in halves: query i sees key j <= i. In the first half (Nq = N,
    // Nk = N/2, aligned at i - N/2) that is j <= a + N/2: window [-1, N/2]. In the second half
    // (local j' = j - N/2, aligned at a = i - N/2) it is j' <= a: causal, and queries i < N/2 see
    // nothing there (lse -Infinity rows in the merge, zero gradients through the dLse path).
    name: 'causal, halves (second half has empty rows)',
    B: 2, N: 36, H: 2, Hkv: 2, D: 16, Dv: 16,
    full: { causal: true },
    blocks: [
      { k0: 0, k1: 18, opts: { window: [-1, 18] } },
      { k0: 18, k1: 36, opts: { causal: true } },
    ],
    emptyRows: true,
  },
];

describe('end to end: attention over key blocks merged by LSE = attention over all keys', () => {
  it.each(SPLITS)('$name', async (s) => {
    const { B, N, H, Hkv, D, Dv } = s;
    const inp = await makeInputs({ B, Nq: N, Nk: N, H, Hkv, D, Dv }, { seed: 500 + N });
    const full = attention(inp.q, inp.k, inp.v, s.full);
    const blockInputs = await Promise.all(
      s.blocks.map(async (bl) => ({
        k: (await fromF64(sliceSeq(inp.p.k, B, N, Hkv * D, bl.k0, bl.k1), [B, bl.k1 - bl.k0, Hkv, D])).t,
        v: (await fromF64(sliceSeq(inp.p.v, B, N, Hkv * Dv, bl.k0, bl.k1), [B, bl.k1 - bl.k0, Hkv, Dv])).t,
      })),
    );
    const parts = s.blocks.map((bl, i) => attention(inp.q, blockInputs[i]!.k, blockInputs[i]!.v, bl.opts));
    const merged = mergeAttention(parts);

    const refFull = referenceAttention(inp.p, s.full);
    const fullOut = await read64(full.out);
    const fullLse = await read64(full.lse);
    const mOut = await read64(merged.out);
    const mLse = await read64(merged.lse);
    const tolOut = 1e-5 * Math.max(1, maxAbs(refFull.out));
    const tolLse = 1e-5 * Math.max(1, maxAbs(refFull.lse));
    expect(maxAbsErr(mOut, fullOut), worst(mOut, fullOut)).toBeLessThanOrEqual(tolOut);
    expect(maxAbsErr(mLse, fullLse), worst(mLse, fullLse)).toBeLessThanOrEqual(tolLse);
    expect(maxAbsErr(mOut, refFull.out), worst(mOut, refFull.out)).toBeLessThanOrEqual(tolOut);
    expect(maxAbsErr(mLse, refFull.lse), worst(mLse, refFull.lse)).toBeLessThanOrEqual(tolLse);
    // the blocks really are partial (the test is not vacuous), and empty rows are where expected
    const lse1 = await read64(parts[parts.length - 1]!.lse);
    expect(lse1.some((x) => x === -Infinity)).toBe(s.emptyRows);
    expect(maxAbsErr(await read64(parts[0]!.out), refFull.out)).toBeGreaterThan(1e-2);

    // ---- backward, chained: L = <dOut, out> + <dLse, lse> of the merged result
    const dOut = await randT([B, N, H, Dv], { seed: 600 });
    const dLse = await randT([B, N, H], { seed: 601 });
    const mg = merged.backward(dOut.t, dLse.t);
    const blockGrads = parts.map((p, i) => p.backward(mg[i]!.dout, mg[i]!.dlse));
    const fullGrads = full.backward(dOut.t, dLse.t);
    const refGrads = referenceAttentionBackward(inp.p, dOut.a, dLse.a, s.full);

    // dq: summed over the blocks
    const dq = new Float64Array(B * N * H * D);
    for (const g of blockGrads) {
      const a = await read64(g.dq);
      for (let i = 0; i < dq.length; i++) dq[i]! += a[i]!;
    }
    // dk, dv: each block's keys
    const dk = concatSeq(await Promise.all(blockGrads.map(async (g, i) => ({ a: await read64(g.dk), N: s.blocks[i]!.k1 - s.blocks[i]!.k0 }))), B, Hkv * D);
    const dv = concatSeq(await Promise.all(blockGrads.map(async (g, i) => ({ a: await read64(g.dv), N: s.blocks[i]!.k1 - s.blocks[i]!.k0 }))), B, Hkv * Dv);
    const got = { dq, dk, dv };
    for (const x of ['dq', 'dk', 'dv'] as const) {
      const kernelFull = await read64(fullGrads[x]);
      const tol = 2e-5 * Math.max(1, maxAbs(refGrads[x]));
      expect(maxAbsErr(got[x], kernelFull), `${x} chained vs full kernel: ${worst(got[x], kernelFull)}`).toBeLessThanOrEqual(tol);
      expect(maxAbsErr(got[x], refGrads[x]), `${x} chained vs reference: ${worst(got[x], refGrads[x])}`).toBeLessThanOrEqual(tol);
    }
    // the dLse path carries real weight: without the merge's dlse, dq would be wrong
    const noDl = parts.map((p, i) => p.backward(mg[i]!.dout));
    const dqNoDl = new Float64Array(dq.length);
    for (const g of noDl) {
      const a = await read64(g.dq);
      for (let i = 0; i < dq.length; i++) dqNoDl[i]! += a[i]!;
    }
    expect(maxAbsErr(dqNoDl, refGrads.dq)).toBeGreaterThan(1e-2);
  });

  it('random splits into 2-4 blocks (non-causal, with window [-1,-1])', async () => {
    const r = rng(4242);
    for (let trial = 0; trial < 4; trial++) {
      const N = 10 + Math.floor(r() * 60);
      const nb = 2 + Math.floor(r() * 3);
      const cuts = new Set<number>();
      while (cuts.size < nb - 1) cuts.add(1 + Math.floor(r() * (N - 1)));
      const edges = [0, ...[...cuts].sort((a, b) => a - b), N];
      const B = 1, H = 2, Hkv = 1, D = 9, Dv = 5;
      const inp = await makeInputs({ B, Nq: 7, Nk: N, H, Hkv, D, Dv }, { seed: 900 + trial });
      const parts = [];
      for (let i = 0; i + 1 < edges.length; i++) {
        const k = await fromF64(sliceSeq(inp.p.k, B, N, Hkv * D, edges[i]!, edges[i + 1]!), [B, edges[i + 1]! - edges[i]!, Hkv, D]);
        const v = await fromF64(sliceSeq(inp.p.v, B, N, Hkv * Dv, edges[i]!, edges[i + 1]!), [B, edges[i + 1]! - edges[i]!, Hkv, Dv]);
        parts.push(attention(inp.q, k.t, v.t, { window: [-1, -1] }));
      }
      const m = mergeAttention(parts);
      const ref = referenceAttention(inp.p);
      const out = await read64(m.out);
      const lse = await read64(m.lse);
      expect(maxAbsErr(out, ref.out), `trial ${trial} edges ${edges}: ${worst(out, ref.out)}`).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(ref.out)));
      expect(maxAbsErr(lse, ref.lse), `trial ${trial} edges ${edges}`).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(ref.lse)));
    }
  });
});
