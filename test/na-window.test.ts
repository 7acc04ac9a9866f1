/**
 * src/masks/na-window.ts (the window arithmetic of BlockMask.neighborhood, written from
 * docs/neighborhood.md) against the float64 reference's neighbor sets (src/reference/neighborhood.ts):
 * every query of every valid 1-D problem with L <= 24 (all k, s, d, both causal modes), and random
 * 2-D and 3-D grids; plus the parameter checks of BlockMask.neighborhood.
 */
import { describe, expect, it } from 'vitest';
import { AttnkitError, BlockMask } from '../src/index.ts';
import { axisWindow, gridNeighborhood, type GridParams } from '../src/masks/na-window.ts';
import { neighbors1d, neighborhoodOf } from '../src/reference/neighborhood.ts';
import { rng } from './helpers.ts';

const keysOf = (w: { first: number; count: number; step: number }) => Array.from({ length: w.count }, (_, j) => w.first + w.step * j);

describe('axisWindow equals the reference on every 1-D problem with L <= 24', () => {
  it('every (L, k, s, d, causal) and query', () => {
    let problems = 0;
    for (let L = 1; L <= 24; L++)
      for (let k = 1; k <= L; k++)
        for (let d = 1; k * d <= L; d++)
          for (let s = 1; s <= k; s++)
            for (const causal of [false, true]) {
              problems++;
              for (let x = 0; x < L; x++) {
                const got = keysOf(axisWindow(x, { L, k, s, d, causal }));
                const want = neighbors1d(x, L, k, s, d, causal);
                if (got.join() !== want.join())
                  expect(got, `L ${L} k ${k} s ${s} d ${d} causal ${causal} x ${x}`).toEqual(want);
              }
            }
    expect(problems).toBeGreaterThan(4000);
  });
});

describe('gridNeighborhood equals the reference on random 2-D and 3-D grids', () => {
  const r = rng(11);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const problems: GridParams[] = [];
  for (let n = 0; n < 60; n++) {
    const R = n % 2 === 0 ? 2 : 3;
    const size = Array.from({ length: R }, () => int(1, R === 2 ? 17 : 8));
    const kernelSize = size.map((L) => int(1, L));
    const dilation = size.map((L, a) => int(1, Math.floor(L / kernelSize[a]!)));
    const stride = kernelSize.map((k) => int(1, k));
    const causal = size.map(() => r() < 0.4);
    problems.push({ size, kernelSize, stride, dilation, causal });
  }
  it.each(problems.map((p) => [JSON.stringify(p), p] as const))('%s', (_name, p) => {
    const N = p.size.reduce((a, b) => a * b, 1);
    for (let q = 0; q < N; q++) expect(gridNeighborhood(q, p), `query ${q}`).toEqual(neighborhoodOf(q, p));
  });
});

describe('BlockMask.neighborhood checks its parameters', () => {
  const cases: [string, Parameters<typeof BlockMask.neighborhood>[0], string, RegExp][] = [
    ['rank 4', { size: [4, 4, 4, 4], kernelSize: [3, 3, 3, 3] }, 'size', /1 to 3 axis lengths/],
    ['a per-axis array of the wrong length', { size: [8, 8], kernelSize: [3] }, 'kernelSize', /or 2 of them \(one per axis\)/],
    ['kernel 0', { size: [8], kernelSize: [0] }, 'kernelSize', /positive integer on axis 0/],
    ['stride > kernel', { size: [8], kernelSize: [3], stride: [4] }, 'stride', /<= the kernel size 3 on axis 0/],
    ['kernel x dilation > size', { size: [8, 7], kernelSize: [3, 4], dilation: [1, 2] }, 'kernelSize', /input size 7 on axis 1, received 4 x 2 = 8/],
    ['a non-boolean causal flag', { size: [8], kernelSize: [3], causal: [1 as unknown as boolean] }, 'causal', /boolean on axis 0/],
  ];
  it.each(cases)('%s', (_what, params, argument, message) => {
    let err: unknown;
    try {
      BlockMask.neighborhood(params);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AttnkitError);
    expect(err).toMatchObject({ op: 'BlockMask.neighborhood', argument });
    expect((err as Error).message).toMatch(message);
  });
});
