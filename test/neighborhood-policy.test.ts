/**
 * The neighborhood tile policy (native/include/attnkit/mask_neighborhood.h) against the float64
 * reference's visibility (src/reference/neighborhood.ts), exhaustively on small shapes, through the
 * naMaskProbe test hook. For every dilation group the probe returns the position -> token map, the
 * row mask of every (query position, key tile), the class of every tile pair and the key-tile list
 * of every query tile (forward, dQ) and query-tile list of every key tile (dK/dV). Checked:
 *   - every token appears exactly once over all groups' positions (the token permutation is a
 *     permutation; the rest is padding, -1);
 *   - row masks equal the reference visibility bit for bit (padding never visible), and the bits of
 *     a query over its group sum to the size of its reference neighborhood (so nothing visible lies
 *     in another group);
 *   - classes are exact: Skip <=> nothing visible; Full <=> every key position of the tile is a real
 *     token that every real query of the tile sees; Partial otherwise;
 *   - kvLists[qt] holds every key tile with a visible element, qLists[kt] every query tile with one,
 *     without duplicates (a duplicate would be accumulated twice by the kernels).
 * Expected masks are built from the reference neighborhoods through the inverse of the token map,
 * as two 32-bit words per mask, so each problem costs O(positions x tiles + tokens x window).
 */
import { describe, expect, it } from 'vitest';
import { native, type NaParams as ProbeParams } from '../src/native.ts';
import { neighborhoodOf, type RefNaParams } from '../src/reference/neighborhood.ts';
import { rng } from './helpers.ts';

const probe = (p: ProbeParams) => native.naMaskProbe(p);

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);
const SKIP = 0;
const FULL = 1;
const PARTIAL = 2;
const TILE = 64;

interface Tally {
  problems: number;
  groups: number;
  masks: number;
  byClass: [number, number, number];
  /** tile pairs listed in kvLists that turn out Skip (work the kernel looks at, then drops) */
  listedSkips: number;
  listed: number;
}
const newTally = (): Tally => ({ problems: 0, groups: 0, masks: 0, byClass: [0, 0, 0], listedSkips: 0, listed: 0 });

const describeParams = (p: ProbeParams) =>
  `size=[${p.size}] kernel=[${p.kernel}] stride=[${p.stride}] dilation=[${p.dilation}] causal=[${p.causal}] tile=[${p.tile}]`;

/** Every disagreement between the probe and the reference for one problem (first few kept). */
function check(p: ProbeParams, tally: Tally): string[] {
  const bad: string[] = [];
  const note = (s: string) => {
    if (bad.length < 8) bad.push(`${describeParams(p)}: ${s}`);
  };
  const ref: RefNaParams = { size: p.size, kernelSize: p.kernel, stride: p.stride, dilation: p.dilation, causal: p.causal };
  const N = p.size.reduce((a, b) => a * b, 1);
  const groups = probe(p);
  tally.problems++;
  const G = p.dilation.reduce((a, b) => a * b, 1);
  if (groups.length !== G) return [`${describeParams(p)}: ${groups.length} groups, expected ${G}`];

  // Token -> (group, position); every token exactly once.
  const groupOf = new Int32Array(N).fill(-1);
  const posOf = new Int32Array(N).fill(-1);
  groups.forEach((gr, g) => {
    if (gr.tokens.length !== gr.qTiles * TILE) note(`group ${g}: ${gr.tokens.length} positions for ${gr.qTiles} tiles`);
    if (gr.kTiles !== gr.qTiles) note(`group ${g}: ${gr.kTiles} key tiles != ${gr.qTiles} query tiles`);
    for (let pos = 0; pos < gr.tokens.length; pos++) {
      const t = gr.tokens[pos]!;
      if (t === -1) continue;
      if (t < 0 || t >= N) note(`group ${g} position ${pos}: token ${t} out of range`);
      else if (groupOf[t] !== -1) note(`token ${t} at group ${groupOf[t]} position ${posOf[t]} and again at group ${g} position ${pos}`);
      else {
        groupOf[t] = g;
        posOf[t] = pos;
      }
    }
  });
  for (let t = 0; t < N; t++) if (groupOf[t] === -1) note(`token ${t} appears at no position`);
  if (bad.length) return bad;

  groups.forEach((gr, g) => {
    tally.groups++;
    const P = gr.tokens.length;
    const nk = gr.kTiles;
    const nq = gr.qTiles;
    // Expected masks as [position][key tile][lo, hi] 32-bit words.
    const want = new Uint32Array(P * nk * 2);
    for (let pos = 0; pos < P; pos++) {
      const tq = gr.tokens[pos]!;
      if (tq < 0) continue;
      for (const tk of neighborhoodOf(tq, ref)) {
        if (groupOf[tk] !== g) {
          note(`query token ${tq} (group ${g}) sees key token ${tk} of group ${groupOf[tk]}`);
          continue;
        }
        const kp = posOf[tk]!;
        const kt = Math.floor(kp / TILE);
        const j = kp % TILE;
        want[(pos * nk + kt) * 2 + (j >> 5)]! |= (1 << (j & 31)) >>> 0;
      }
    }
    const got = new Uint32Array(gr.rowMasks.buffer, gr.rowMasks.byteOffset, gr.rowMasks.length * 2);
    if (gr.rowMasks.length !== P * nk) {
      note(`group ${g}: ${gr.rowMasks.length} row masks, expected ${P * nk}`);
      return;
    }
    // Little-endian: word 0 of a uint64 holds bits 0..31.
    for (let x = 0; x < want.length; x++) {
      tally.masks += x & 1;
      if (got[x] !== want[x]) {
        const m = x >> 1;
        const pos = Math.floor(m / nk);
        note(
          `group ${g}: row mask (position ${pos} = token ${gr.tokens[pos]}, key tile ${m % nk}) word ${x & 1} = ` +
            `${got[x]!.toString(2)}, reference ${want[x]!.toString(2)}`,
        );
      }
    }
    // Classes and the tiles that must be listed, from the expected masks.
    const needKv: Set<number>[] = Array.from({ length: nq }, () => new Set());
    const needQ: Set<number>[] = Array.from({ length: nk }, () => new Set());
    for (let qt = 0; qt < nq; qt++)
      for (let kt = 0; kt < nk; kt++) {
        let any = false;
        let all = true;
        for (let r = 0; r < TILE; r++) {
          const pos = qt * TILE + r;
          if (gr.tokens[pos]! < 0) continue;
          const lo = want[(pos * nk + kt) * 2]!;
          const hi = want[(pos * nk + kt) * 2 + 1]!;
          if (lo || hi) any = true;
          if (lo !== 0xffffffff || hi !== 0xffffffff) all = false;
        }
        const expected = !any ? SKIP : all ? FULL : PARTIAL;
        tally.byClass[expected]++;
        const cls = gr.classes[qt * nk + kt];
        if (cls !== expected) note(`group ${g}: tile pair (q ${qt}, k ${kt}) classified ${cls}, expected ${expected}`);
        if (any) {
          needKv[qt]!.add(kt);
          needQ[kt]!.add(qt);
        }
      }
    const lists = (name: string, have: Int32Array[], need: Set<number>[], range: number) => {
      if (have.length !== need.length) {
        note(`group ${g}: ${have.length} ${name}, expected ${need.length}`);
        return;
      }
      have.forEach((l, t) => {
        const s = new Set(l);
        if (s.size !== l.length) note(`group ${g}: ${name}[${t}] = [${Array.from(l)}] has duplicates`);
        for (const x of l) if (x < 0 || x >= range) note(`group ${g}: ${name}[${t}] holds ${x}, out of [0, ${range})`);
        for (const x of need[t]!) if (!s.has(x)) note(`group ${g}: ${name}[${t}] = [${Array.from(l)}] misses tile ${x}`);
      });
    };
    lists('kvLists', gr.kvLists, needKv, nk);
    lists('qLists', gr.qLists, needQ, nq);
    gr.kvLists.forEach((l, qt) => {
      tally.listed += l.length;
      for (const kt of l) if (gr.classes[qt * nk + kt] === SKIP) tally.listedSkips++;
    });
  });
  return bad;
}

/** Per-axis (kernel, stride, dilation, causal) choices with k * d <= L. */
function axisChoices(L: number, kernels: readonly number[], strides: (k: number) => number[], dilations: readonly number[]) {
  const out: { k: number; s: number; d: number; c: boolean }[] = [];
  for (const k of kernels)
    for (const d of dilations) {
      if (k * d > L) continue;
      for (const s of new Set(strides(k).filter((s) => s >= 1 && s <= k)))
        for (const c of [false, true]) out.push({ k, s, d, c });
    }
  return out;
}

/** Cartesian product of per-axis choices. */
function product<T>(axes: T[][]): T[][] {
  let combos: T[][] = [[]];
  for (const a of axes) combos = combos.flatMap((c) => a.map((x) => [...c, x]));
  return combos;
}

/** Up to `n` items drawn without replacement by a seeded generator (all of them when fewer). */
function sample<T>(xs: T[], n: number, seed: number): T[] {
  if (xs.length <= n) return xs;
  const r = rng(seed);
  const a = [...xs];
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(r() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, n);
}

function runAll(problems: ProbeParams[], tally: Tally): string[] {
  const bad: string[] = [];
  for (const p of problems) {
    bad.push(...check(p, tally));
    if (bad.length >= 20) break;
  }
  return bad;
}

describe('neighborhood policy agrees with the reference (exhaustive on small shapes)', () => {
  const totals = newTally();
  const add = (t: Tally) => {
    for (const k of ['problems', 'groups', 'masks', 'listedSkips', 'listed'] as const) totals[k] += t[k];
    for (const c of [0, 1, 2] as const) totals.byClass[c] += t.byClass[c];
  };

  // 1-D: every L <= 40, every 2 <= k, k * d <= L, every 1 <= s <= k, both causal modes, d <= 4.
  // Only [64] is a legal 1-D tile.
  for (const d of [1, 2, 3, 4])
    it(`1-D, L <= 40, every kernel, stride and causal mode, dilation ${d}`, () => {
      const tally = newTally();
      const problems: ProbeParams[] = [];
      for (let L = 2; L <= 40; L++)
        for (let k = 2; k * d <= L; k++)
          for (let s = 1; s <= k; s++)
            for (const c of [false, true])
              problems.push({ rank: 1, size: [L], kernel: [k], stride: [s], dilation: [d], causal: [c], tile: [64] });
      expect(runAll(problems, tally)).toEqual([]);
      expect(tally.problems).toBe(problems.length);
      // One tile per group with padding keys (L < 64): every visited pair is Partial.
      expect(tally.byClass[PARTIAL]).toBeGreaterThan(0);
      expect(tally.byClass[FULL] + tally.byClass[SKIP]).toBe(0);
      add(tally);
    });

  it('1-D longer axes: several tiles per group (L up to 300, kernels up to 70)', () => {
    const tally = newTally();
    const problems: ProbeParams[] = [];
    for (const L of [64, 65, 127, 128, 129, 200, 300])
      for (const k of [2, 7, 16, 31, 64, 65, 70])
        for (const s of [1, 2, 5, 16, k])
          for (const d of [1, 2, 3])
            for (const c of [false, true]) {
              if (k * d > L || s > k) continue;
              problems.push({ rank: 1, size: [L], kernel: [k], stride: [s], dilation: [d], causal: [c], tile: [64] });
            }
    expect(runAll(problems, tally)).toEqual([]);
    expect(tally.byClass.every((n) => n > 0)).toBe(true);
    add(tally);
  });

  // Offset classes: a classification off by one shows only when a window edge crosses a tile at the
  // residue next to the Full/Skip boundary. With k = 2..129 the edges of a query's window relative to
  // the query, k - 1 - floor(k / 2) and floor(k / 2) (centred), k - 1 (causal), and the clamped end
  // L - k, each run through every residue modulo the 64-position tile.
  it('1-D, every residue of the window edges modulo the tile (k = 2..129, L = 200 and 263)', () => {
    const tally = newTally();
    const problems: ProbeParams[] = [];
    const residues = { centre: new Set<number>(), causal: new Set<number>(), end: new Set<number>() };
    for (const L of [200, 263])
      for (let k = 2; k <= 129; k++)
        for (const d of [1, 2])
          for (const c of [false, true]) {
            if (k * d > L) continue;
            problems.push({ rank: 1, size: [L], kernel: [k], stride: [1], dilation: [d], causal: [c], tile: [TILE] });
            if (d === 1) {
              residues.centre.add(Math.floor(k / 2) % TILE).add((k - 1 - Math.floor(k / 2)) % TILE);
              residues.causal.add((k - 1) % TILE);
              residues.end.add((L - k) % TILE);
            }
          }
    expect(runAll(problems, tally)).toEqual([]);
    for (const set of Object.values(residues)) expect(set.size).toBe(TILE);
    expect(tally.byClass.every((n) => n > 0)).toBe(true);
    add(tally);
  });

  // 2-D: shapes up to 12 x 12, four tile shapes; per axis kernels 2..5, strides 1, 2, k, dilation
  // 1..3, both causal modes. All combinations are ~10^4 per shape: a fixed sample per shape and tile.
  const SIZES_2D: [number, number][] = [
    [12, 12],
    [5, 7],
    [9, 11],
    [3, 12],
    [12, 4],
    [8, 8],
  ];
  const TILES_2D: [number, number][] = [
    [8, 8],
    [4, 16],
    [16, 4],
    [2, 32],
  ];
  for (const size of SIZES_2D)
    it(`2-D ${size.join('x')}, tiles ${TILES_2D.map((t) => t.join('x')).join(', ')}`, () => {
      const tally = newTally();
      const axes = size.map((L) => axisChoices(L, [2, 3, 4, 5], (k) => [1, 2, k], [1, 2, 3]));
      const all = product(axes);
      const problems: ProbeParams[] = [];
      for (const [ti, tile] of TILES_2D.entries())
        for (const combo of sample(all, 350, 17 * size[0] + size[1] + 1000 * ti))
          problems.push({
            rank: 2,
            size,
            kernel: combo.map((a) => a.k),
            stride: combo.map((a) => a.s),
            dilation: combo.map((a) => a.d),
            causal: combo.map((a) => a.c),
            tile,
          });
      expect(runAll(problems, tally)).toEqual([]);
      expect(tally.byClass[SKIP]).toBeGreaterThan(0);
      expect(tally.byClass[PARTIAL]).toBeGreaterThan(0);
      add(tally);
    });

  // 3-D: shapes up to 6 x 7 x 5, three tile shapes; kernels 2..4, strides 1 and k, dilation 1..2.
  const SIZES_3D: [number, number, number][] = [
    [6, 7, 5],
    [4, 4, 4],
    [5, 6, 7],
    [2, 8, 9],
  ];
  const TILES_3D: [number, number, number][] = [
    [4, 4, 4],
    [2, 4, 8],
    [1, 8, 8],
  ];
  for (const size of SIZES_3D)
    it(`3-D ${size.join('x')}, tiles ${TILES_3D.map((t) => t.join('x')).join(', ')}`, () => {
      const tally = newTally();
      const axes = size.map((L) => axisChoices(L, [2, 3, 4], (k) => [1, 2, k], [1, 2]));
      const all = product(axes);
      const problems: ProbeParams[] = [];
      for (const [ti, tile] of TILES_3D.entries())
        for (const combo of sample(all, 150, 31 * size[0] + 7 * size[1] + size[2] + 1000 * ti))
          problems.push({
            rank: 3,
            size,
            kernel: combo.map((a) => a.k),
            stride: combo.map((a) => a.s),
            dilation: combo.map((a) => a.d),
            causal: combo.map((a) => a.c),
            tile,
          });
      expect(runAll(problems, tally)).toEqual([]);
      expect(tally.byClass[PARTIAL]).toBeGreaterThan(0);
      add(tally);
    });

  it('fully block-sparse configurations have Full tiles only (tiles aligned to the blocks)', () => {
    // stride = kernel = a multiple of the tile on every axis: blocked attention in whole tiles.
    const tally = newTally();
    const cases: ProbeParams[] = [
      { rank: 1, size: [256], kernel: [64], stride: [64], dilation: [1], causal: [false], tile: [64] },
      { rank: 1, size: [512], kernel: [128], stride: [128], dilation: [2], causal: [false], tile: [64] },
      { rank: 2, size: [16, 16], kernel: [8, 8], stride: [8, 8], dilation: [1, 1], causal: [false, false], tile: [8, 8] },
      { rank: 2, size: [8, 32], kernel: [4, 16], stride: [4, 16], dilation: [1, 1], causal: [false, false], tile: [4, 16] },
      { rank: 3, size: [8, 8, 8], kernel: [4, 4, 4], stride: [4, 4, 4], dilation: [1, 1, 1], causal: [false, false, false], tile: [4, 4, 4] },
    ];
    expect(runAll(cases, tally)).toEqual([]);
    expect(tally.byClass[PARTIAL]).toBe(0);
    expect(tally.byClass[FULL]).toBeGreaterThan(0);
    add(tally);
  });

  it('covered every class; the key-tile lists are exact (no Skip pair listed)', () => {
    expect(totals.byClass.every((n) => n > 0)).toBe(true);
    expect(totals.problems).toBeGreaterThan(10_000);
    // Not required for correctness (the kernels drop Skip pairs), but each listed Skip pair is a
    // wasted classify + loop step: the per-axis boxes are exact for separable windows.
    expect(totals.listedSkips).toBe(0);
    expect(totals.listed).toBe(totals.byClass[FULL] + totals.byClass[PARTIAL]);
    if (process.env.ATTNKIT_TEST_VERBOSE)
      // eslint-disable-next-line no-console
      console.log(
        `${totals.problems} problems, ${totals.groups} groups, ${totals.masks} row masks; classes ` +
          `skip/full/partial ${totals.byClass.join('/')}; listed key tiles ${totals.listed}, of which Skip ${totals.listedSkips}`,
      );
  });
});

describe('naPlan (what `attnkit sim` and the tile choice use) counts what the probe shows', () => {
  const plan = (p: ProbeParams) => native.naPlan(p);
  it.each([
    { rank: 1, size: [300], kernel: [31], stride: [4], dilation: [2], causal: [false], tile: [64] },
    { rank: 1, size: [257], kernel: [64], stride: [64], dilation: [1], causal: [true], tile: [64] },
    { rank: 2, size: [23, 30], kernel: [7, 5], stride: [1, 5], dilation: [2, 1], causal: [false, true], tile: [8, 8] },
    { rank: 2, size: [23, 30], kernel: [7, 5], stride: [1, 5], dilation: [2, 1], causal: [false, true], tile: [2, 32] },
    { rank: 2, size: [16, 16], kernel: [8, 8], stride: [8, 8], dilation: [1, 1], causal: [false, false], tile: [8, 8] },
    { rank: 3, size: [6, 10, 9], kernel: [3, 3, 4], stride: [1, 2, 1], dilation: [1, 2, 1], causal: [true, false, false], tile: [2, 4, 8] },
  ] as ProbeParams[])('size $size kernel $kernel stride $stride dilation $dilation causal $causal tile $tile', (p) => {
    const pl = plan(p);
    const N = prod(p.size);
    expect(pl.densePairs).toBe(Math.ceil(N / TILE) ** 2);
    const ref: RefNaParams = { size: p.size, kernelSize: p.kernel, stride: p.stride, dilation: p.dilation, causal: p.causal };
    let visible = 0;
    for (let t = 0; t < N; t++) visible += neighborhoodOf(t, ref).length;
    expect(pl.visible).toBe(visible);
    const byClass = [0, 0, 0];
    for (const g of probe(p)) for (const c of g.classes) byClass[c]!++;
    expect([pl.fullPairs, pl.partialPairs]).toEqual([byClass[FULL], byClass[PARTIAL]]);
  });
});

describe('naMaskProbe and naPlan refuse what the policy cannot hold', () => {
  const base: ProbeParams = { rank: 2, size: [8, 8], kernel: [3, 3], stride: [1, 1], dilation: [1, 1], causal: [false, false], tile: [8, 8] };
  const n = native;
  it.each([
    ['a tile shape that does not hold 64 tokens', { tile: [4, 8] }, /64 tokens/],
    ['kernel 1', { kernel: [1, 3] }, /invalid neighborhood parameters/],
    ['stride > kernel', { stride: [4, 1] }, /invalid neighborhood parameters/],
    ['kernel x dilation > size', { dilation: [3, 1] }, /invalid neighborhood parameters/],
    ['a per-axis array of the wrong length', { kernel: [3] }, /wrong length/],
    ['rank 4', { rank: 4 }, /rank must be 1, 2 or 3/],
  ])('%s', (_what, patch, message) => {
    for (const f of [n.naMaskProbe, n.naPlan]) {
      let err: unknown;
      try {
        f({ ...base, ...patch } as ProbeParams);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(message);
      expect((err as { code?: string }).code).toMatch(/^ERR_ATTNKIT_(ARGUMENT|UNSUPPORTED)$/);
    }
  });
});
