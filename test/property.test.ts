/**
 * Property tests (fast-check): the kernel agrees with the float64 reference on random small problems
 * (any shape, GQA ratio, head dims, causal, window, scale), and invariants that hold whatever the
 * reference says: permutation invariance over keys, outputs are convex combinations of values, and
 * the LSE bounds the visible scores.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attention, cpu, info, type AttentionOptions } from '../src/index.ts';
import {
  attentionAllows,
  referenceAttention,
  referenceAttentionBackward,
  type RefMaskOptions,
} from '../src/reference/attention.ts';
import { fromF64, gaussian, makeInputs, maxAbs, maxAbsErr, randT, read64, rng, worst, type Shape } from './helpers.ts';

// Reproducible by default; ATTNKIT_FC_SEED overrides (fast-check prints the seed and path on failure).
const SEED = process.env.ATTNKIT_FC_SEED ? Number(process.env.ATTNKIT_FC_SEED) : 0x5eed;
const RUNS = 25;

interface Problem extends Shape {
  causal: boolean;
  window?: [number, number];
  scale?: number;
  seed: number;
}

const divisors = (h: number) => Array.from({ length: h }, (_, i) => i + 1).filter((d) => h % d === 0);

const problemArb: fc.Arbitrary<Problem> = fc
  .record({
    B: fc.integer({ min: 1, max: 2 }),
    Nq: fc.integer({ min: 1, max: 40 }),
    Nk: fc.integer({ min: 1, max: 40 }),
    H: fc.integer({ min: 1, max: 4 }),
    hkvPick: fc.nat(),
    D: fc.integer({ min: 1, max: 40 }),
    Dv: fc.integer({ min: 1, max: 40 }),
    causal: fc.boolean(),
    window: fc.option(fc.tuple(fc.integer({ min: -1, max: 12 }), fc.integer({ min: -1, max: 12 })), { nil: undefined }),
    scale: fc.option(fc.double({ min: 0.05, max: 2, noNaN: true }), { nil: undefined }),
    seed: fc.integer({ min: 0, max: 1_000_000 }),
  })
  .map(({ hkvPick, ...r }) => {
    const ds = divisors(r.H);
    return { ...r, Hkv: ds[hkvPick % ds.length]! };
  });

function opts(p: Problem): AttentionOptions & RefMaskOptions {
  const o: AttentionOptions & RefMaskOptions = { causal: p.causal };
  if (p.window) o.window = p.window;
  if (p.scale !== undefined) o.scale = p.scale;
  return o;
}

const detected = info().cpu.detectedIsa;
type Level = (typeof cpu.levels)[number];
const runnable = (l: string) => cpu.levels.indexOf(l as Level) <= cpu.levels.indexOf(detected as Level);
const defaultIsa = cpu.isa() as Level;

describe.each(cpu.levels.map((l) => [l]))('kernel vs reference on random small problems (float32), level %s', (level) => {
  beforeAll(() => {
    if (runnable(level)) expect(cpu.setIsa(level)).toBe(true);
  });
  afterAll(() => {
    cpu.setIsa(defaultIsa);
  });
  it.skipIf(!runnable(level))('forward and backward (with dLse)', async () => {
    expect(cpu.isa()).toBe(level);
    let checked = 0;
    await fc.assert(
      fc.asyncProperty(problemArb, async (p) => {
        const o = opts(p);
        const inp = await makeInputs(p, { seed: p.seed });
        const dOut = await randT([p.B, p.Nq, p.H, p.Dv], { seed: p.seed + 10 });
        const dLse = await randT([p.B, p.Nq, p.H], { seed: p.seed + 11 });
        const r = attention(inp.q, inp.k, inp.v, o);
        const g = r.backward(dOut.t, dLse.t);
        const ref = { ...referenceAttention(inp.p, o), ...referenceAttentionBackward(inp.p, dOut.a, dLse.a, o) };
        const got = {
          out: await read64(r.out),
          lse: await read64(r.lse),
          dq: await read64(g.dq),
          dk: await read64(g.dk),
          dv: await read64(g.dv),
        };
        for (const x of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
          const tol = (x === 'out' || x === 'lse' ? 1e-5 : 2e-5) * Math.max(1, maxAbs(ref[x]));
          const err = maxAbsErr(got[x], ref[x]);
          if (!(err <= tol)) throw new Error(`${x}: error ${err} > ${tol} (${worst(got[x], ref[x])}) for ${JSON.stringify(p)}`);
        }
        checked++;
      }),
      { numRuns: RUNS, seed: SEED },
    );
    expect(checked).toBe(RUNS);
  });
});

describe('invariants (default level)', () => {
  it('permuting keys together with values leaves non-causal, unwindowed attention unchanged', async () => {
    await fc.assert(
      fc.asyncProperty(problemArb, fc.integer({ min: 0, max: 1 << 30 }), async (p, permSeed) => {
        const o = p.scale !== undefined ? { scale: p.scale } : {};
        const inp = await makeInputs(p, { seed: p.seed });
        // a random permutation of the keys (Fisher-Yates)
        const perm = Array.from({ length: p.Nk }, (_, i) => i);
        const r = rng(permSeed);
        for (let i = p.Nk - 1; i > 0; i--) {
          const j = Math.floor(r() * (i + 1));
          [perm[i], perm[j]] = [perm[j]!, perm[i]!];
        }
        const permute = (a: Float64Array, row: number) => {
          const out = new Float64Array(a.length);
          for (let b = 0; b < p.B; b++)
            for (let j = 0; j < p.Nk; j++)
              for (let x = 0; x < row; x++) out[(b * p.Nk + j) * row + x] = a[(b * p.Nk + perm[j]!) * row + x]!;
          return out;
        };
        const kp = await fromF64(permute(inp.p.k, p.Hkv * p.D), [p.B, p.Nk, p.Hkv, p.D]);
        const vp = await fromF64(permute(inp.p.v, p.Hkv * p.Dv), [p.B, p.Nk, p.Hkv, p.Dv]);
        const a = attention(inp.q, inp.k, inp.v, o);
        const b = attention(inp.q, kp.t, vp.t, o);
        const [ao, bo, al, bl] = await Promise.all([a.out, b.out, a.lse, b.lse].map(read64));
        const tolO = 1e-5 * Math.max(1, maxAbs(ao!));
        const tolL = 1e-5 * Math.max(1, maxAbs(al!));
        if (!(maxAbsErr(bo!, ao!) <= tolO)) throw new Error(`out changed: ${worst(bo!, ao!)}`);
        if (!(maxAbsErr(bl!, al!) <= tolL)) throw new Error(`lse changed: ${worst(bl!, al!)}`);
      }),
      { numRuns: RUNS, seed: SEED + 1 },
    );
  });

  it('outputs are convex combinations of the visible values (v >= 0: within [min v, max v] per column)', async () => {
    await fc.assert(
      fc.asyncProperty(problemArb, async (p) => {
        const o = opts(p);
        const inp = await makeInputs(p, { seed: p.seed });
        const vAbs = await fromF64(
          Float64Array.from(gaussian(p.B * p.Nk * p.Hkv * p.Dv, p.seed + 5), (x) => Math.abs(x)),
          [p.B, p.Nk, p.Hkv, p.Dv],
        );
        const r = attention(inp.q, inp.k, vAbs.t, o);
        const out = await read64(r.out);
        const lse = await read64(r.lse);
        const group = p.H / p.Hkv;
        for (let b = 0; b < p.B; b++)
          for (let i = 0; i < p.Nq; i++)
            for (let h = 0; h < p.H; h++) {
              const li = (b * p.Nq + i) * p.H + h;
              const hk = Math.floor(h / group);
              const vis: number[] = [];
              for (let j = 0; j < p.Nk; j++) if (attentionAllows(i, j, p.Nq, p.Nk, o)) vis.push(j);
              for (let e = 0; e < p.Dv; e++) {
                const x = out[li * p.Dv + e]!;
                if (vis.length === 0) {
                  if (x !== 0 || lse[li] !== -Infinity) throw new Error(`empty row ${li}: out ${x}, lse ${lse[li]}`);
                  continue;
                }
                const col = vis.map((j) => vAbs.a[((b * p.Nk + j) * p.Hkv + hk) * p.Dv + e]!);
                const lo = Math.min(...col);
                const hi = Math.max(...col);
                const slack = 1e-6 * Math.max(1, hi);
                if (!(x >= lo - slack && x <= hi + slack))
                  throw new Error(`row ${li} col ${e}: ${x} outside [${lo}, ${hi}] of ${vis.length} visible values`);
              }
            }
      }),
      { numRuns: RUNS, seed: SEED + 2 },
    );
  });

  it('lse >= max visible scaled score, and lse <= max + log(#visible)', async () => {
    await fc.assert(
      fc.asyncProperty(problemArb, async (p) => {
        const o = opts(p);
        const scale = p.scale ?? 1 / Math.sqrt(p.D);
        const inp = await makeInputs(p, { seed: p.seed });
        const r = attention(inp.q, inp.k, inp.v, o);
        const lse = await read64(r.lse);
        const group = p.H / p.Hkv;
        for (let b = 0; b < p.B; b++)
          for (let i = 0; i < p.Nq; i++)
            for (let h = 0; h < p.H; h++) {
              const li = (b * p.Nq + i) * p.H + h;
              const hk = Math.floor(h / group);
              let mx = -Infinity;
              let n = 0;
              for (let j = 0; j < p.Nk; j++) {
                if (!attentionAllows(i, j, p.Nq, p.Nk, o)) continue;
                let s = 0;
                for (let d = 0; d < p.D; d++) s += inp.p.q[li * p.D + d]! * inp.p.k[((b * p.Nk + j) * p.Hkv + hk) * p.D + d]!;
                mx = Math.max(mx, scale * s);
                n++;
              }
              if (n === 0) {
                if (lse[li] !== -Infinity) throw new Error(`empty row ${li}: lse ${lse[li]}`);
                continue;
              }
              const slack = 1e-5 * Math.max(1, Math.abs(mx));
              if (!(lse[li]! >= mx - slack)) throw new Error(`row ${li}: lse ${lse[li]} < max score ${mx}`);
              if (!(lse[li]! <= mx + Math.log(n) + slack)) throw new Error(`row ${li}: lse ${lse[li]} > max ${mx} + log ${n}`);
            }
      }),
      { numRuns: RUNS, seed: SEED + 3 },
    );
  });
});
