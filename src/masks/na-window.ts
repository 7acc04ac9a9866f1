/**
 * The neighborhood-attention window (NATTEN semantics, docs/neighborhood.md "Semantics") in integer
 * arithmetic, for the mask builders: on one axis, the keys a query sees; on a grid, the product of
 * the axes' windows. Written from the rules of the docs, not from the float64 reference, and tested
 * against it (test/na-window.test.ts). Invariant: for valid parameters (k >= 1, 1 <= s <= k,
 * k * d <= L) every window lies inside its dilation group and holds the query itself.
 */
import { argError, checkInteger, MAX_EXTENT } from '../errors.js';

/** The keys of one query on one axis: tokens `first + step * j` for j in [0, count). */
export interface AxisWindow {
  first: number;
  count: number;
  step: number;
}

/** One axis's parameters: length L, kernel size k, stride s, dilation d, causal. */
export interface AxisParams {
  L: number;
  k: number;
  s: number;
  d: number;
  causal: boolean;
}

/** The window of query token `x` on one axis. */
export function axisWindow(x: number, { L, k, s, d, causal }: AxisParams): AxisWindow {
  // 1. Dilation group g, in-group index i, group length Lg; all further arithmetic is in-group.
  const g = x % d;
  const i = (x - g) / d;
  const Lg = Math.ceil((L - g) / d);
  const strideStart = i - (i % s);
  let start: number;
  let end: number;
  if (causal) {
    // 4. Leader = last query of the stride group; the window ends at the query itself.
    const leader = Math.min(strideStart + s - 1, Lg - 1);
    start = Math.max(leader - k + 1, 0);
    end = i + 1;
  } else {
    // 2.-3. Leader = centre of the stride group; the window is shifted, not cut, at the borders.
    const leader = Math.min(strideStart + (s >> 1), Lg - 1);
    start = Math.min(Math.max(leader - (k >> 1), 0), Lg - k);
    end = start + k;
  }
  return { first: g + d * start, count: end - start, step: d };
}

/** A grid's neighborhood parameters, one entry per axis (row-major tokens, last axis fastest). */
export interface GridParams {
  size: readonly number[];
  kernelSize: readonly number[];
  stride: readonly number[];
  dilation: readonly number[];
  causal: readonly boolean[];
}

/**
 * The keys (row-major token indices, ascending) that query token `q` of the grid sees: the
 * Cartesian product of its per-axis windows. Ascending because each axis's window is ascending
 * and row-major order is lexicographic in the coordinates.
 */
export function gridNeighborhood(q: number, p: GridParams): number[] {
  const R = p.size.length;
  const windows: AxisWindow[] = new Array(R);
  let rest = q;
  for (let a = R - 1; a >= 0; a--) {
    const L = p.size[a]!;
    windows[a] = axisWindow(rest % L, { L, k: p.kernelSize[a]!, s: p.stride[a]!, d: p.dilation[a]!, causal: p.causal[a]! });
    rest = Math.floor(rest / L);
  }
  let keys = [0];
  for (let a = 0; a < R; a++) {
    const { first, count, step } = windows[a]!;
    const L = p.size[a]!;
    const next: number[] = [];
    for (const base of keys) for (let j = 0; j < count; j++) next.push(base * L + first + step * j);
    keys = next;
  }
  return keys;
}

/**
 * Checks the rules under which every window lies inside its axis (NATTEN's, with the axis and the
 * values in the message): every extent an integer in [1, 2^31), kernel >= `minKernel`,
 * stride <= kernel, kernel x dilation <= the axis length, and at most 2^31 - 1 tokens in all.
 */
export function checkGridRules(
  op: string,
  p: { size: readonly unknown[]; kernelSize: readonly unknown[]; stride: readonly unknown[]; dilation: readonly unknown[] },
  minKernel: number,
  names: { size: string; kernelSize: string } = { size: 'size', kernelSize: 'kernelSize' },
): void {
  let tokens = 1;
  for (let a = 0; a < p.size.length; a++) {
    const L = checkInteger(op, names.size, p.size[a], { min: 1, what: ` on axis ${a}`, code: 'ERR_ATTNKIT_SHAPE' });
    const k = checkInteger(op, names.kernelSize, p.kernelSize[a], { min: 1, what: ` on axis ${a}` });
    if (k < minKernel) throw argError('ERR_ATTNKIT_ARGUMENT', op, names.kernelSize, `to be > ${minKernel - 1} on axis ${a}`, String(k));
    const s = checkInteger(op, 'stride', p.stride[a], { min: 1, what: ` on axis ${a}` });
    const d = checkInteger(op, 'dilation', p.dilation[a], { min: 1, what: ` on axis ${a}` });
    if (s > k) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stride', `to be <= the kernel size ${k} on axis ${a}`, String(s));
    if (k * d > L)
      throw argError('ERR_ATTNKIT_SHAPE', op, names.kernelSize, `times 'dilation' to be <= the input size ${L} on axis ${a}`, `${k} x ${d} = ${k * d}`);
    tokens *= L;
  }
  if (tokens > MAX_EXTENT)
    throw argError('ERR_ATTNKIT_SHAPE', op, names.size, 'to hold fewer than 2^31 tokens in all', `[${p.size.join(', ')}] (${tokens} tokens)`);
}
