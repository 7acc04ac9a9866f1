/**
 * The dense mask policy (native/include/attnkit/mask_dense.h), exhaustively on small problems via the
 * denseMaskProbe test hook: element visibility equals the reference semantics (attentionAllows),
 * tile classes are exact, and the key range of every query tile / query range of every key tile
 * contains every visible pair (the kernels iterate only over those ranges).
 */
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.ts';
import { attentionAllows } from '../src/reference/attention.ts';

const WINDOWS: [number, number][] = [
  [-1, -1],
  [0, 0],
  [2, 0],
  [0, 3],
  [4, 4],
  [-1, 1],
  [3, -1],
];
const TILES: [number, number][] = [
  [1, 1],
  [4, 4],
  [3, 5],
  [8, 2],
  [16, 16],
];
const MAX_N = 20;

const SKIP = 0;
const FULL = 1;
const PARTIAL = 2;

interface Tally {
  problems: number;
  elements: number;
  tiles: number;
  byClass: [number, number, number];
}

/** A collector of disagreements as readable strings (the first 20 kept). */
function collector(): { bad: string[]; note: (s: string) => void } {
  const bad: string[] = [];
  return {
    bad,
    note: (s: string) => {
      if (bad.length < 20) bad.push(s);
      else if (bad.length === 20) bad.push('...');
    },
  };
}

/** Checks one problem and tiling against the reference semantics, noting every disagreement. */
function checkProblem(Nq: number, Nk: number, causal: boolean, left: number, right: number, tq: number, tk: number,
  tally: Tally, note: (s: string) => void): void {
  const opts = { causal, window: [left, right] as const };
  const want = new Uint8Array(Nq * Nk);
  for (let i = 0; i < Nq; i++) for (let j = 0; j < Nk; j++) want[i * Nk + j] = attentionAllows(i, j, Nq, Nk, opts) ? 1 : 0;
  const where = `Nq=${Nq} Nk=${Nk} causal=${causal} window=[${left},${right}] tiles=${tq}x${tk}`;
  const r = native.denseMaskProbe(Nq, Nk, causal, left, right, tq, tk);
  tally.problems++;
  const nqt = Math.ceil(Nq / tq);
  const nkt = Math.ceil(Nk / tk);
  if (r.allows.length !== Nq * Nk || r.classes.length !== nqt * nkt || r.keyRanges.length !== 2 * nqt || r.queryRanges.length !== 2 * nkt) {
    note(`${where}: wrong output sizes`);
    return;
  }
  // elements
  for (let x = 0; x < Nq * Nk; x++) {
    tally.elements++;
    if (r.allows[x] !== want[x]) note(`${where}: allows(${Math.floor(x / Nk)}, ${x % Nk}) = ${r.allows[x]}, reference ${want[x]}`);
  }
  // tiles
  for (let a = 0; a < nqt; a++) {
    const q0 = a * tq;
    const q1 = Math.min(Nq, q0 + tq);
    const [klo, khi] = [r.keyRanges[2 * a]!, r.keyRanges[2 * a + 1]!];
    for (let b = 0; b < nkt; b++) {
      const k0 = b * tk;
      const k1 = Math.min(Nk, k0 + tk);
      let vis = 0;
      for (let i = q0; i < q1; i++) for (let j = k0; j < k1; j++) vis += want[i * Nk + j]!;
      const total = (q1 - q0) * (k1 - k0);
      const expected = vis === 0 ? SKIP : vis === total ? FULL : PARTIAL;
      const cls = r.classes[a * nkt + b]!;
      tally.tiles++;
      tally.byClass[expected]++;
      if (cls !== expected)
        note(`${where}: tile (${a}, ${b}) = q[${q0},${q1}) x k[${k0},${k1}) classified ${cls}, expected ${expected} (${vis}/${total} visible)`);
    }
    // every visible key of the query tile lies in [klo, khi)
    for (let i = q0; i < q1; i++)
      for (let j = 0; j < Nk; j++)
        if (want[i * Nk + j] && !(j >= klo && j < khi))
          note(`${where}: query tile ${a} [${q0},${q1}) keyRange [${klo},${khi}) misses visible key ${j} of query ${i}`);
  }
  for (let b = 0; b < nkt; b++) {
    const k0 = b * tk;
    const k1 = Math.min(Nk, k0 + tk);
    const [qlo, qhi] = [r.queryRanges[2 * b]!, r.queryRanges[2 * b + 1]!];
    for (let j = k0; j < k1; j++)
      for (let i = 0; i < Nq; i++)
        if (want[i * Nk + j] && !(i >= qlo && i < qhi))
          note(`${where}: key tile ${b} [${k0},${k1}) queryRange [${qlo},${qhi}) misses query ${i} that sees key ${j}`);
  }
}

/** Every disagreement for one (causal, window) over all small problems and tilings. */
function check(causal: boolean, left: number, right: number, tally: Tally): string[] {
  const { bad, note } = collector();
  for (let Nq = 1; Nq <= MAX_N; Nq++)
    for (let Nk = 1; Nk <= MAX_N; Nk++)
      for (const [tq, tk] of TILES) checkProblem(Nq, Nk, causal, left, right, tq, tk, tally, note);
  return bad;
}

describe('dense mask policy agrees with the reference semantics (exhaustive, Nq, Nk <= 20)', () => {
  const totals: Tally = { problems: 0, elements: 0, tiles: 0, byClass: [0, 0, 0] };
  for (const causal of [false, true])
    for (const [left, right] of WINDOWS)
      it(`causal=${causal} window=[${left}, ${right}]`, () => {
        const tally: Tally = { problems: 0, elements: 0, tiles: 0, byClass: [0, 0, 0] };
        const bad = check(causal, left, right, tally);
        expect(bad).toEqual([]);
        expect(tally.problems).toBe(MAX_N * MAX_N * TILES.length);
        // every class occurs for every mask except where it cannot (no Skip without a mask bound)
        expect(tally.byClass[FULL]).toBeGreaterThan(0);
        const unbounded = !causal && left < 0 && right < 0;
        if (unbounded) expect(tally.byClass[SKIP] + tally.byClass[PARTIAL]).toBe(0);
        else expect(tally.byClass[PARTIAL]).toBeGreaterThan(0);
        totals.problems += tally.problems;
        totals.elements += tally.elements;
        totals.tiles += tally.tiles;
        for (const c of [0, 1, 2] as const) totals.byClass[c] += tally.byClass[c];
      });

  it('covered every combination', () => {
    expect(totals.problems).toBe(2 * WINDOWS.length * MAX_N * MAX_N * TILES.length);
    expect(totals.byClass.every((n) => n > 0)).toBe(true);
  });

  it('causal clamps the right window bound to 0 (same visibility as window [l, 0])', () => {
    for (const [left, right] of [[2, 5], [-1, 3], [0, 0]] as const) {
      const a = native.denseMaskProbe(9, 13, true, left, right, 4, 4);
      const b = native.denseMaskProbe(9, 13, false, left, 0, 4, 4);
      expect(Array.from(a.allows)).toEqual(Array.from(b.allows));
      expect(Array.from(a.classes)).toEqual(Array.from(b.classes));
    }
  });

  it('rejects empty or invalid problems', () => {
    expect(() => native.denseMaskProbe(0, 4, false, -1, -1, 1, 1)).toThrow();
    expect(() => native.denseMaskProbe(4, 4, false, -1, -1, 0, 1)).toThrow();
  });
});

// The kernels' tiles are 64 x 64 (and the policy is written for any size): a classification off by one
// shows only when a mask edge crosses a tile at the residue next to the Full/Skip boundary, which the
// small problems above never put at a 64-position tile. Here Nk - Nq runs through every residue modulo
// the tile size (positive and negative), so the causal diagonal and both window edges
// ((Nk - Nq + right) and (Nk - Nq - left) mod tile) hit every residue; the kernel runs cover the
// boundary classes (test/simt-families.ts).
describe('dense mask policy: every residue of (Nk - Nq +- window) modulo the tile size', () => {
  const mod = (a: number, m: number) => ((a % m) + m) % m;
  for (const tile of [64, 32])
    for (const [causal, left, right] of [[true, -1, -1], [true, 70, -1], [false, 70, 5], [false, -1, 3]] as const)
      it(`tiles ${tile}x${tile}, causal=${causal} window=[${left}, ${right}]`, () => {
        const tally: Tally = { problems: 0, elements: 0, tiles: 0, byClass: [0, 0, 0] };
        const { bad, note } = collector();
        const edges = { right: new Set<number>(), left: new Set<number>() };
        for (let r = 0; r < tile; r++) {
          const Nq = 2 * tile + 5;
          const off = r % 2 === 0 ? r + tile : r - tile;
          checkProblem(Nq, Nq + off, causal, left, right, tile, tile, tally, note);
          const rightBound = causal ? (right < 0 ? 0 : Math.min(right, 0)) : right;
          if (rightBound >= 0) edges.right.add(mod(off + rightBound, tile));
          if (left >= 0) edges.left.add(mod(off - left, tile));
        }
        expect(bad).toEqual([]);
        if (causal || right >= 0) expect(edges.right.size).toBe(tile);
        if (left >= 0) expect(edges.left.size).toBe(tile);
        expect(tally.byClass.every((n) => n > 0)).toBe(true);
      });
});
