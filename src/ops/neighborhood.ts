/**
 * Neighborhood attention (NATTEN semantics): na1d / na2d / na3d with per-axis kernel size, stride,
 * dilation and causality, additional keys every query sees, GQA/MQA and a value head dim that may
 * differ. Layout [B, X, (Y, (Z,)) H, D]. The CPU kernel is the fused attention driver with the
 * neighborhood tile policy (native/include/attnkit/mask_neighborhood.h); additional keys run as a
 * dense attention merged by LSE (mergeAttention). See docs/neighborhood.md.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FloatDType } from '../dtype.js';
import { AttnkitError, argError, callNative, checkPerAxis, show } from '../errors.js';
import { checkGridRules } from '../masks/na-window.js';
import { native, packageRoot, type NaParams, type NeighborhoodPlan } from '../native.js';

export type { NaParams, NeighborhoodPlan } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import { attention, attentionBackward } from './attention.js';
import { mergeAttention } from './merge.js';
import {
  checkBackwardTensors,
  checkFloat,
  checkHeadDim,
  checkOptions,
  checkRank,
  checkSameDevice,
  checkSameDType,
  checkScale,
  checkShapeEquals,
  checkStream,
  checkTensor,
} from './validate.js';

/** A number for every axis, or one per axis. */
export type PerAxis<T> = T | readonly T[];

/** Options of na1d, na2d and na3d (docs/neighborhood.md). */
export interface NeighborhoodOptions {
  /** Window size per axis; every entry > 1 and kernelSize * dilation <= input size. */
  kernelSize: PerAxis<number>;
  /** Stride per axis (queries in a stride group share their leader's window); 1 <= stride <= kernelSize. Default 1. */
  stride?: PerAxis<number>;
  /** Dilation per axis. Default 1. */
  dilation?: PerAxis<number>;
  /** Causal per axis (the window is truncated at the query). Default false. */
  causal?: PerAxis<boolean>;
  /** Softmax scale; default 1/sqrt(D). */
  scale?: number;
  /** `[B, M, Hkv, D]`: keys every query sees (registers, text tokens, cross-attention). With additionalValues. */
  additionalKeys?: Tensor;
  /** [B, M, Hkv, Dv] */
  additionalValues?: Tensor;
  /**
   * Query/key tile shape (tokens per axis, product 64). Default: the shape that visits the fewest
   * tiles for this problem (the planner `neighborhoodPlan` reports).
   */
  tileShape?: readonly number[];
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** Gradients of a neighborhood attention (shapes and dtypes of the inputs). */
export interface NeighborhoodGrads {
  /** Gradient of q. */
  dq: Tensor;
  /** Gradient of k. */
  dk: Tensor;
  /** Gradient of v. */
  dv: Tensor;
  /** Present when additional keys were given. */
  dAdditionalKeys?: Tensor;
  /** Present when additional keys were given. */
  dAdditionalValues?: Tensor;
}

/** What na1d, na2d and na3d return. */
export interface NeighborhoodResult {
  /** [B, ...spatial, H, Dv] */
  out: Tensor;
  /** [B, ...spatial, H] float32 natural-log LSE over the neighborhood (and additional keys). */
  lse: Tensor;
  /** Gradients given dOut and, optionally, the gradient of lse. */
  backward(dOut: Tensor, dLse?: Tensor): NeighborhoodGrads;
}


const KNOWN = ['kernelSize', 'stride', 'dilation', 'causal', 'scale', 'additionalKeys', 'additionalValues', 'tileShape', 'stream'] as const;

const isPosInt = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 1;

/** Tile shapes (powers of two per axis, product 64) worth considering for a grid. */
function tileCandidates(size: readonly number[]): number[][] {
  const R = size.length;
  const out: number[][] = [];
  const rec = (prefix: number[], left: number) => {
    if (prefix.length === R - 1) {
      out.push([...prefix, left]);
      return;
    }
    for (let t = 1; t <= left; t *= 2) rec([...prefix, t], left / t);
  };
  rec([], 64);
  // A tile much longer than its axis only adds padding.
  const fits = out.filter((t) => t.every((x, a) => x <= Math.max(1, 2 ** Math.ceil(Math.log2(size[a]!)))));
  return fits.length > 0 ? fits : out;
}

const planCache = new Map<string, number[]>();

let cudaShapes: Record<string, number[][]> | undefined;
/**
 * The tile shapes the CUDA kernels of this package are built for, for a rank (the neighborhood
 * family's `tileShapes` in native/cuda/instantiations.json, via the generated kernels.json).
 */
function cudaTileShapes(rank: number): number[][] {
  if (!cudaShapes) {
    const doc = JSON.parse(readFileSync(join(packageRoot(), 'native', 'cuda', 'generated', 'kernels.json'), 'utf8')) as {
      families: { family: string; tileShapes?: Record<string, number[][]> }[];
    };
    cudaShapes = doc.families.find((f) => f.family === 'neighborhood')?.tileShapes ?? {};
  }
  return cudaShapes[`na${rank}`] ?? [];
}
const shapeText = (t: readonly number[]) => t.join('x');

/**
 * Tile-level statistics of a neighborhood problem for a given tile shape (what `attnkit sim`
 * prints): the tile pairs a dense kernel visits, the Full and Partial pairs the neighborhood kernel
 * visits, and the visible (query, key) pairs.
 *
 * @example
 * ```ts
 * const plan = neighborhoodPlan({ rank: 2, size: [56, 56], kernel: [7, 7], stride: [1, 1], dilation: [1, 1], causal: [false, false], tile: [8, 8] });
 * plan.densePairs / (plan.fullPairs + plan.partialPairs); // the tile-level speedup bound
 * ```
 */
export function neighborhoodPlan(p: NaParams): NeighborhoodPlan {
  return callNative('neighborhoodPlan', () => native.naPlan(checkNaParams('neighborhoodPlan', p, true)));
}

/**
 * The planner's parameters, checked as na1d/na2d/na3d check theirs (a raw object reaches the
 * binding only in this form): rank 1 to 3, one entry per axis in every list, NATTEN's rules, and
 * for `tile` positive integers holding 64 tokens.
 */
function checkNaParams(op: string, p: unknown, withTile: boolean): NaParams {
  const fields = ['rank', 'size', 'kernel', 'stride', 'dilation', 'causal'];
  const o = checkOptions(op, p, withTile ? [...fields, 'tile'] : fields);
  if (p === undefined) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'params', `to be an object {${fields.join(', ')}${withTile ? ', tile' : ''}}`, 'undefined');
  const rank = o.rank;
  if (rank !== 1 && rank !== 2 && rank !== 3) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'rank', 'to be 1, 2 or 3', show(rank));
  const list = <T>(name: string, ok: (x: unknown) => boolean, what: string): T[] => {
    if (!Array.isArray(o[name])) throw argError('ERR_ATTNKIT_ARGUMENT', op, name, `to be an array of ${rank} (one per axis)`, show(o[name]));
    return checkPerAxis<T>(op, name, o[name], undefined, rank, ok, what);
  };
  const isNum = (x: unknown) => typeof x === 'number';
  const q = {
    rank,
    size: list<number>('size', isNum, 'an integer'),
    kernel: list<number>('kernel', isNum, 'an integer'),
    stride: list<number>('stride', isNum, 'an integer'),
    dilation: list<number>('dilation', isNum, 'an integer'),
    causal: list<boolean>('causal', (x) => typeof x === 'boolean', 'a boolean'),
    tile: [] as number[],
  };
  checkGridRules(op, { size: q.size, kernelSize: q.kernel, stride: q.stride, dilation: q.dilation }, 1, { size: 'size', kernelSize: 'kernel' });
  if (withTile) {
    q.tile = list<number>('tile', isPosInt, 'a positive integer');
    if (q.tile.reduce((x, y) => x * y, 1) !== 64)
      throw argError('ERR_ATTNKIT_ARGUMENT', op, 'tile', 'to hold 64 tokens (the product of its entries)', show(q.tile));
  }
  return q;
}

/**
 * The tile shape (tokens per axis, product 64) that visits the fewest tiles, Partial tiles
 * counting a little more (masking): what na2d/na3d use without `tileShape`. On `'cuda'` the same
 * rule over the shapes the CUDA kernels are built for (both backends run 64 x 64-position tiles, so
 * the statistics of a shape are the same on both; docs/cuda-kernels.md, "Neighborhood attention").
 *
 * @example
 * ```ts
 * chooseTileShape({ rank: 2, size: [56, 56], kernel: [7, 7], stride: [1, 1], dilation: [1, 1], causal: [false, false] }); // [8, 8]
 * chooseTileShape({ rank: 3, size: [16, 32, 32], kernel: [3, 7, 7], stride: [1, 1, 1], dilation: [1, 1, 1], causal: [false, false, false] }, 'cuda');
 * ```
 */
export function chooseTileShape(p: Omit<NaParams, 'tile'>, backend: 'cpu' | 'cuda' = 'cpu'): number[] {
  const { tile: _, ...checked } = checkNaParams('chooseTileShape', p, false);
  p = checked;
  if (backend !== 'cpu' && backend !== 'cuda')
    throw argError('ERR_ATTNKIT_ARGUMENT', 'chooseTileShape', 'backend', "to be 'cpu' or 'cuda'", show(backend));
  const key = JSON.stringify([p, backend]);
  const cached = planCache.get(key);
  if (cached) return cached;
  let best: number[] = [];
  let bestCost = Infinity;
  const compiled = backend === 'cuda' ? new Set(cudaTileShapes(p.rank).map(shapeText)) : undefined;
  const all = tileCandidates(p.size).filter((t) => !compiled || compiled.has(shapeText(t)));
  // a grid where every fitting shape is left out of the CUDA list: any compiled one
  const candidates = all.length > 0 ? all : compiled ? cudaTileShapes(p.rank) : [];
  for (const tile of candidates) {
    const plan = neighborhoodPlan({ ...p, tile });
    const cost = plan.fullPairs + 1.15 * plan.partialPairs;
    if (cost < bestCost) {
      bestCost = cost;
      best = tile;
    }
  }
  planCache.set(key, best);
  return best;
}

interface Problem {
  rank: number;
  spatial: number[];
  B: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  N: number;
  dtype: FloatDType;
  scale: number;
  na: NaParams;
  stream: Stream;
  addK: Tensor | undefined;
  addV: Tensor | undefined;
}

function parse(op: string, rank: number, q: unknown, k: unknown, v: unknown, options: unknown): Problem {
  const Q = checkTensor(op, 'q', q);
  const K = checkTensor(op, 'k', k);
  const V = checkTensor(op, 'v', v);
  if (options === undefined || options === null || typeof options !== 'object')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'options', "to be an object with at least 'kernelSize'", show(options));
  const o = checkOptions(op, options, KNOWN);
  const dtype = checkFloat(op, 'q', Q);
  checkSameDType(op, 'k', K, Q, 'q');
  checkSameDType(op, 'v', V, Q, 'q');
  checkSameDevice(op, 'k', K, Q, 'q');
  checkSameDevice(op, 'v', V, Q, 'q');
  const axes = ['X', 'Y', 'Z'].slice(0, rank).join(', ');
  checkRank(op, 'q', Q, rank + 3, `[B, ${axes}, H, D]`);
  checkRank(op, 'k', K, rank + 3, `[B, ${axes}, Hkv, D]`);
  checkRank(op, 'v', V, rank + 3, `[B, ${axes}, Hkv, Dv]`);
  const B = Q.shape[0]!;
  const spatial = Q.shape.slice(1, 1 + rank) as number[];
  const H = Q.shape[rank + 1]!;
  const D = Q.shape[rank + 2]!;
  const Hkv = K.shape[rank + 1]!;
  const Dv = V.shape[rank + 2]!;
  checkShapeEquals(op, 'k', K, [B, ...spatial, Hkv, D]);
  checkShapeEquals(op, 'v', V, [B, ...spatial, Hkv, Dv]);
  if (B < 1 || H < 1 || spatial.some((x) => x < 1))
    throw argError('ERR_ATTNKIT_SHAPE', op, 'q', 'to have B, H and every spatial extent >= 1', `[${Q.shape.join(', ')}]`);
  if (Hkv < 1 || H % Hkv !== 0)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'k', `to have a head count that divides q's ${H} heads (GQA/MQA)`, String(Hkv));
  checkHeadDim(op, 'q', D);
  checkHeadDim(op, 'v', Dv);

  if (o.kernelSize === undefined)
    throw new AttnkitError('ERR_ATTNKIT_ARGUMENT', op, `${op}: missing option 'kernelSize'`, 'kernelSize');
  const kernel = checkPerAxis(op, 'kernelSize', o.kernelSize as PerAxis<number>, 0, rank, isPosInt, 'a positive integer');
  const stride = checkPerAxis(op, 'stride', o.stride as PerAxis<number> | undefined, 1, rank, isPosInt, 'a positive integer');
  const dilation = checkPerAxis(op, 'dilation', o.dilation as PerAxis<number> | undefined, 1, rank, isPosInt, 'a positive integer');
  const causal = checkPerAxis(op, 'causal', o.causal as PerAxis<boolean> | undefined, false, rank, (x) => typeof x === 'boolean', 'a boolean');
  // NATTEN's argument rules (kernel > 1 here), with the axis and the values in the message.
  checkGridRules(op, { size: spatial, kernelSize: kernel, stride, dilation }, 2);
  const scale = checkScale(op, o.scale, 1 / Math.sqrt(D));
  const stream = checkStream(op, o.stream, Q, { D, Dv }, op.endsWith('Backward') ? 'neighborhoodBackward' : 'neighborhood');
  const base = { rank, size: spatial, kernel, stride, dilation, causal };
  let tile: number[];
  const onCuda = Q.device !== 'cpu';
  if (o.tileShape !== undefined) {
    tile = checkPerAxis(op, 'tileShape', o.tileShape as readonly number[], 0, rank, isPosInt, 'a positive integer');
    if (tile.reduce((x, y) => x * y, 1) !== 64)
      throw argError('ERR_ATTNKIT_ARGUMENT', op, 'tileShape', 'to hold 64 tokens (the product of its entries)', show(tile));
    const compiled = cudaTileShapes(rank).map(shapeText);
    if (onCuda && !compiled.includes(shapeText(tile)))
      throw new AttnkitError(
        'ERR_ATTNKIT_UNSUPPORTED',
        op,
        `${op}: tile shape ${shapeText(tile)} is not compiled into the CUDA kernels (compiled for rank ${rank}: ${compiled.join(', ') || 'none'})`,
        'tileShape',
      );
  } else {
    tile = chooseTileShape(base, onCuda ? 'cuda' : 'cpu');
  }
  let addK: Tensor | undefined;
  let addV: Tensor | undefined;
  if ((o.additionalKeys === undefined) !== (o.additionalValues === undefined))
    throw new AttnkitError(
      'ERR_ATTNKIT_ARGUMENT',
      op,
      `${op}: 'additionalKeys' and 'additionalValues' must be given together`,
      o.additionalKeys === undefined ? 'additionalKeys' : 'additionalValues',
    );
  if (o.additionalKeys !== undefined) {
    addK = checkTensor(op, 'additionalKeys', o.additionalKeys);
    addV = checkTensor(op, 'additionalValues', o.additionalValues);
    checkSameDType(op, 'additionalKeys', addK, Q, 'q');
    checkSameDType(op, 'additionalValues', addV, Q, 'q');
    checkSameDevice(op, 'additionalKeys', addK, Q, 'q');
    checkSameDevice(op, 'additionalValues', addV, Q, 'q');
    checkRank(op, 'additionalKeys', addK, 4, '[B, M, Hkv, D]');
    const M = addK.shape[1]!;
    checkShapeEquals(op, 'additionalKeys', addK, [B, M, Hkv, D]);
    checkShapeEquals(op, 'additionalValues', addV, [B, M, Hkv, Dv]);
  }
  const N = spatial.reduce((x, y) => x * y, 1);
  return { rank, spatial, B, H, Hkv, D, Dv, N, dtype, scale, na: { ...base, tile }, stream, addK, addV };
}

function nativeParams(p: Problem) {
  return { ...p.na, B: p.B, H: p.H, Hkv: p.Hkv, D: p.D, Dv: p.Dv, scale: p.scale };
}

// The neighborhood part alone.
function naForward(op: string, p: Problem, q: Tensor, k: Tensor, v: Tensor): { out: Tensor; lse: Tensor } {
  const out = empty([p.B, ...p.spatial, p.H, p.Dv], { dtype: p.dtype, device: q.device });
  const lse = empty([p.B, ...p.spatial, p.H], { dtype: 'float32', device: q.device });
  callNative(op, () =>
    native.naForward(p.stream.native, q._native(op, 'q'), k._native(op, 'k'), v._native(op, 'v'), out._native(op, 'out'), lse._native(op, 'lse'), nativeParams(p)),
  );
  out._setStream(p.stream);
  lse._setStream(p.stream);
  return { out, lse };
}

function naBackward(op: string, p: Problem, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, dLse: Tensor | null) {
  const dq = empty(q.shape, { dtype: p.dtype, device: q.device });
  const dk = empty(k.shape, { dtype: p.dtype, device: q.device });
  const dv = empty(v.shape, { dtype: p.dtype, device: q.device });
  callNative(op, () =>
    native.naBackward(
      p.stream.native,
      q._native(op, 'q'),
      k._native(op, 'k'),
      v._native(op, 'v'),
      out._native(op, 'out'),
      lse._native(op, 'lse'),
      dOut._native(op, 'dOut'),
      dLse ? dLse._native(op, 'dLse') : null,
      dq._native(op, 'dq'),
      dk._native(op, 'dk'),
      dv._native(op, 'dv'),
      nativeParams(p),
    ),
  );
  for (const t of [dq, dk, dv]) t._setStream(p.stream);
  return { dq, dk, dv };
}

// q as [B, N, H, D] (a view) for the dense attention over the additional keys.
const flat = (p: Problem, t: Tensor, heads: number, dim: number) => t.reshape([p.B, p.N, heads, dim]);

function neighborhood(rank: 1 | 2 | 3, q: Tensor, k: Tensor, v: Tensor, options: NeighborhoodOptions): NeighborhoodResult {
  const op = `na${rank}d`;
  const p = parse(op, rank, q, k, v, options);
  if (!p.addK) {
    const { out, lse } = naForward(op, p, q, k, v);
    return { out, lse, backward: (dOut, dLse) => neighborhoodBackwardImpl(op, p, q, k, v, out, lse, dOut, dLse, null) };
  }
  // Neighborhood part and additional part, merged by LSE; both partials are kept for the backward.
  const na = naForward(op, p, q, k, v);
  const x = attention(flat(p, q, p.H, p.D), p.addK, p.addV!, { scale: p.scale, stream: p.stream });
  const merged = mergeAttention(
    [
      { out: na.out, lse: na.lse },
      { out: x.out.reshape(na.out.shape), lse: x.lse.reshape(na.lse.shape) },
    ],
    { stream: p.stream },
  );
  const partials = { na, x };
  return {
    out: merged.out,
    lse: merged.lse,
    backward: (dOut, dLse) => neighborhoodBackwardImpl(op, p, q, k, v, merged.out, merged.lse, dOut, dLse, { partials, merged }),
  };
}

function neighborhoodBackwardImpl(
  op: string,
  p: Problem,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  dLse: Tensor | undefined,
  saved: { partials: { na: { out: Tensor; lse: Tensor }; x: { out: Tensor; lse: Tensor } }; merged: ReturnType<typeof mergeAttention> } | null,
): NeighborhoodGrads {
  const bop = `${op}Backward`;
  // the backward kernel's own support (CUDA lists fewer head dims for it), before anything is allocated
  checkStream(bop, p.stream, q, { D: p.D, Dv: p.Dv }, 'neighborhoodBackward');
  const { O, L, dO, dL } = checkBackwardTensors(bop, q, out, lse, dOut, dLse, [p.B, ...p.spatial, p.H, p.Dv], [p.B, ...p.spatial, p.H]);
  if (!p.addK) return naBackward(bop, p, q, k, v, O, L, dO, dL);
  // With additional keys: backward through the merge into both partials (their LSE gradients
  // carry the coupling), then each partial's backward. The functional form recomputes the partials.
  const s = saved ?? recomputePartials(op, p, q, k, v);
  const [gNa, gX] = s.merged.backward(dO, dL ?? undefined);
  const g = naBackward(bop, p, q, k, v, s.partials.na.out, s.partials.na.lse, gNa!.dout, gNa!.dlse);
  const gx = attentionBackward(flat(p, q, p.H, p.D), p.addK, p.addV!, s.partials.x.out, s.partials.x.lse, flat(p, gX!.dout, p.H, p.Dv), {
    scale: p.scale,
    stream: p.stream,
    dLse: gX!.dlse.reshape([p.B, p.N, p.H]),
  });
  // dq = dq_neighborhood + dq_additional
  const dq = empty(g.dq.shape, { dtype: p.dtype, device: q.device });
  callNative(bop, () => native.add(p.stream.native, g.dq._native(bop, 'dq'), gx.dq._native(bop, 'dq'), dq._native(bop, 'dq')));
  dq._setStream(p.stream);
  return { dq, dk: g.dk, dv: g.dv, dAdditionalKeys: gx.dk, dAdditionalValues: gx.dv };
}

function recomputePartials(op: string, p: Problem, q: Tensor, k: Tensor, v: Tensor) {
  const na = naForward(op, p, q, k, v);
  const x = attention(flat(p, q, p.H, p.D), p.addK!, p.addV!, { scale: p.scale, stream: p.stream });
  const xp = { out: x.out.reshape(na.out.shape), lse: x.lse.reshape(na.lse.shape) };
  const merged = mergeAttention([na, xp], { stream: p.stream });
  return { partials: { na, x }, merged };
}

/**
 * 1-D neighborhood attention: q [B, X, H, D], k [B, X, Hkv, D], v [B, X, Hkv, Dv]; each query
 * sees `kernelSize` keys around it (docs/neighborhood.md).
 *
 * @example
 * ```ts
 * const q = randn([1, 4096, 4, 64], { seed: 1 });
 * const { out } = na1d(q, q, q, { kernelSize: 255, dilation: 2 });
 * ```
 */
export function na1d(q: Tensor, k: Tensor, v: Tensor, options: NeighborhoodOptions): NeighborhoodResult {
  return neighborhood(1, q, k, v, options);
}
/**
 * 2-D neighborhood attention: q [B, X, Y, H, D], k [B, X, Y, Hkv, D], v [B, X, Y, Hkv, Dv].
 *
 * @example
 * ```ts
 * const x = randn([1, 56, 56, 4, 64], { seed: 1, dtype: 'bfloat16' });
 * const { out, backward } = na2d(x, x, x, { kernelSize: 7 });
 * const { dq, dk, dv } = backward(randn(out.shape, { seed: 2, dtype: 'bfloat16' }));
 * ```
 */
export function na2d(q: Tensor, k: Tensor, v: Tensor, options: NeighborhoodOptions): NeighborhoodResult {
  return neighborhood(2, q, k, v, options);
}
/**
 * 3-D neighborhood attention: q [B, X, Y, Z, H, D], k/v likewise with Hkv heads.
 *
 * @example
 * ```ts
 * const x = randn([1, 16, 32, 32, 4, 64], { seed: 1 });
 * const { out } = na3d(x, x, x, { kernelSize: [3, 7, 7], causal: [true, false, false] }); // causal in time
 * ```
 */
export function na3d(q: Tensor, k: Tensor, v: Tensor, options: NeighborhoodOptions): NeighborhoodResult {
  return neighborhood(3, q, k, v, options);
}

/** Options of the functional backwards: the forward's options, and the gradient of its LSE. */
export interface NeighborhoodBackwardOptions extends NeighborhoodOptions {
  /** Gradient of the LSE output [B, ...spatial, H] float32. */
  dLse?: Tensor;
}

function functionalBackward(rank: 1 | 2 | 3, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, options: NeighborhoodBackwardOptions) {
  const op = `na${rank}d`;
  if (options === undefined)
    throw argError('ERR_ATTNKIT_ARGUMENT', `${op}Backward`, 'options', "to be an object with at least 'kernelSize'", 'undefined');
  const { dLse, ...rest } = checkOptions(`${op}Backward`, options, [...KNOWN, 'dLse']) as unknown as NeighborhoodBackwardOptions;
  const p = parse(`${op}Backward`, rank, q, k, v, rest);
  return neighborhoodBackwardImpl(op, p, q, k, v, out, lse, dOut, dLse, null);
}

/**
 * Functional backward of na1d (with additional keys it recomputes the two partial forwards); pass
 * the forward's options.
 *
 * @example
 * ```ts
 * const { out, lse } = na1d(q, k, v, { kernelSize: 9 });
 * const { dq, dk, dv } = na1dBackward(q, k, v, out, lse, dOut, { kernelSize: 9 });
 * ```
 */
export function na1dBackward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, options: NeighborhoodBackwardOptions): NeighborhoodGrads {
  return functionalBackward(1, q, k, v, out, lse, dOut, options);
}
/**
 * Functional backward of na2d; pass the forward's options.
 *
 * @example
 * ```ts
 * const { out, lse } = na2d(q, k, v, { kernelSize: 7 });
 * const grads = na2dBackward(q, k, v, out, lse, dOut, { kernelSize: 7 });
 * ```
 */
export function na2dBackward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, options: NeighborhoodBackwardOptions): NeighborhoodGrads {
  return functionalBackward(2, q, k, v, out, lse, dOut, options);
}
/**
 * Functional backward of na3d; pass the forward's options.
 *
 * @example
 * ```ts
 * const { out, lse } = na3d(q, k, v, { kernelSize: 3 });
 * const grads = na3dBackward(q, k, v, out, lse, dOut, { kernelSize: 3 });
 * ```
 */
export function na3dBackward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, options: NeighborhoodBackwardOptions): NeighborhoodGrads {
  return functionalBackward(3, q, k, v, out, lse, dOut, options);
}

