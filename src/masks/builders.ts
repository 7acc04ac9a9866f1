/**
 * The BlockMask builders (behind BlockMask.causal, .slidingWindow, ...): each returns the lists
 * and geometry that BlockMask wraps. Structured masks (causal, sliding window, documents) are built from per-row
 * key intervals whose ends never decrease with the row, so a block is classified from its first and
 * last rows in O(1) and only boundary blocks get bitmaps: N = 65536 with 64 x 64 blocks builds in a
 * fraction of a second. General masks (neighborhood, predicates) are built from per-row key sets or
 * by evaluating the predicate once per element.
 */
import { argError, checkBoolean, checkInteger, checkKnownOptions, checkPerAxis, MAX_EXTENT, orDefault, show } from '../errors.js';
import { appendBlock, MaskBuilder, type BlockMaskGeometry, type BlockSizes, type BuiltMask } from './mask-builder.js';
import { checkGridRules, gridNeighborhood, type GridParams } from './na-window.js';

const BLOCKS = ['blockQ', 'blockK'] as const;
const sizes = (o: Record<string, unknown>) => ({ blockQ: orDefault(o.blockQ, 64) as number, blockK: orDefault(o.blockK, 64) as number });

/** A token count or length: an integer in [0, 2^31) (ERR_ATTNKIT_SHAPE otherwise). */
function checkCount(op: string, arg: string, v: unknown): number {
  return checkInteger(op, arg, v, { min: 0, code: 'ERR_ATTNKIT_SHAPE' });
}

/**
 * Mask from visible key intervals [lo(q), hi(q)] (inclusive; empty when lo > hi) whose ends never
 * decrease with q. Shared by every (b, h).
 */
export function fromRowIntervals(op: string, g: BlockMaskGeometry, lo: (q: number) => number, hi: (q: number) => number): BuiltMask {
  const mb = new MaskBuilder(op, g);
  const { Nq, Nk, blockQ, blockK } = g;
  const W = mb.words;
  for (let qb = 0; qb < mb.qBlocks; qb++) {
    const q0 = qb * blockQ;
    const q1 = Math.min(Nq, q0 + blockQ);
    // Rows are monotone: the first row has the smallest ends, the last the largest.
    const kbFirst = Math.max(0, Math.floor(Math.max(0, lo(q0)) / blockK));
    const kbLast = Math.min(mb.kBlocks - 1, Math.floor(Math.min(Nk - 1, hi(q1 - 1)) / blockK));
    for (let kb = kbFirst; kb <= kbLast; kb++) {
      const k0 = kb * blockK;
      const k1 = Math.min(Nk, k0 + blockK);
      if (hi(q1 - 1) < k0 || lo(q0) > k1 - 1) continue;
      let allFull = true;
      for (const q of [q0, q1 - 1]) if (!(lo(q) <= k0 && hi(q) >= k1 - 1)) allFull = false;
      if (allFull) {
        mb.full(kb);
        continue;
      }
      const bits = mb.partial(kb);
      let any = false;
      for (let q = q0; q < q1; q++) {
        const a = Math.max(lo(q), k0) - k0;
        const b = Math.min(hi(q), k1 - 1) - k0;
        for (let j = a; j <= b; j++) bits[(q - q0) * W + (j >> 5)]! |= 1 << (j & 31);
        if (a <= b) any = true;
      }
      if (!any) mb.dropPartial();
    }
    mb.endRow();
  }
  return mb.build();
}

/** Causal mask, aligned bottom-right like attention's: query i sees keys j <= i + Nk - Nq. */
export function causal(Nq: number, Nk: number, opts?: BlockSizes): BuiltMask {
  const op = 'BlockMask.causal';
  checkCount(op, 'Nq', Nq);
  checkCount(op, 'Nk', Nk);
  const o = checkKnownOptions(op, opts, BLOCKS);
  return fromRowIntervals(op, { B: 1, H: 1, Nq, Nk, ...sizes(o) }, () => 0, (q) => q + Nk - Nq);
}

/**
 * Sliding window (FlashAttention convention, bottom-right aligned): query i, aligned at
 * a = i + Nk - Nq, sees keys a - left ... a + right; -1 = unbounded on that side. With
 * `causal`, right is clamped to 0.
 */
export function slidingWindow(Nq: number, Nk: number, left: number, right: number, opts?: BlockSizes & { causal?: boolean }): BuiltMask {
  const op = 'BlockMask.slidingWindow';
  checkCount(op, 'Nq', Nq);
  checkCount(op, 'Nk', Nk);
  for (const [name, v] of [['left', left], ['right', right]] as const)
    checkInteger(op, name, v, { min: -1, what: ' (-1 = unbounded)' });
  const o = checkKnownOptions(op, opts, [...BLOCKS, 'causal']);
  const r = checkBoolean(op, 'causal', o.causal, false) ? (right < 0 ? 0 : Math.min(right, 0)) : right;
  return fromRowIntervals(
    op,
    { B: 1, H: 1, Nq, Nk, ...sizes(o) },
    (q) => (left < 0 ? 0 : q + Nk - Nq - left),
    (q) => (r < 0 ? Nk - 1 : q + Nk - Nq + r),
  );
}

/**
 * Packed variable-length sequences: tokens attend within their own document (block-diagonal),
 * optionally causally. Lengths may be 0 (no tokens) or 1.
 */
export function documents(seqLens: readonly number[], opts?: BlockSizes & { causal?: boolean }): BuiltMask {
  const op = 'BlockMask.documents';
  if (!Array.isArray(seqLens)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'seqLens', 'to be an array of lengths', typeof seqLens);
  seqLens.forEach((l, i) => checkCount(op, `seqLens[${i}]`, l));
  const o = checkKnownOptions(op, opts, [...BLOCKS, 'causal']);
  const causal = checkBoolean(op, 'causal', o.causal, false);
  const N = seqLens.reduce((a, b) => a + b, 0);
  if (N > MAX_EXTENT) throw argError('ERR_ATTNKIT_SHAPE', op, 'seqLens', 'to sum to fewer than 2^31 tokens', String(N));
  new MaskBuilder(op, { B: 1, H: 1, Nq: N, Nk: N, ...sizes(o) }); // block sizes checked before the O(N) work
  const start = new Int32Array(N);
  const end = new Int32Array(N);
  let pos = 0;
  for (const l of seqLens) {
    for (let i = 0; i < l; i++) {
      start[pos + i] = pos;
      end[pos + i] = pos + l - 1;
    }
    pos += l;
  }
  return fromRowIntervals(op, { B: 1, H: 1, Nq: N, Nk: N, ...sizes(o) }, (q) => start[q]!, (q) => (causal ? q : end[q]!));
}

/** Mask from each row's visible keys (sorted ascending); shared by every (b, h). */
export function fromRowSets(op: string, g: BlockMaskGeometry, keysOf: (q: number) => readonly number[], onProgress?: (fraction: number) => void): BuiltMask {
  const mb = new MaskBuilder(op, g);
  const W = mb.words;
  for (let qb = 0; qb < mb.qBlocks; qb++) {
    const q0 = qb * g.blockQ;
    const rows = Math.min(g.blockQ, g.Nq - q0);
    const perBlock = new Map<number, Uint32Array>();  // key block -> bitmap
    for (let r = 0; r < rows; r++)
      for (const k of keysOf(q0 + r)) {
        const kb = Math.floor(k / g.blockK);
        let bits = perBlock.get(kb);
        if (!bits) perBlock.set(kb, (bits = new Uint32Array(g.blockQ * W)));
        const j = k - kb * g.blockK;
        bits[r * W + (j >> 5)]! |= 1 << (j & 31);
      }
    for (const kb of [...perBlock.keys()].sort((a, b) => a - b)) {
      const bits = perBlock.get(kb)!;
      const full = new Uint32Array(W);
      for (let j = 0; j < Math.min(g.blockK, g.Nk - kb * g.blockK); j++) full[j >> 5]! |= 1 << (j & 31);
      appendBlock(mb, kb, rows, full, (r) => bits.subarray(r * W, (r + 1) * W));
    }
    mb.endRow();
    onProgress?.((qb + 1) / mb.qBlocks);
  }
  return mb.build();
}

/** The parameters of BlockMask.neighborhood: per axis a number for every axis or one per axis, as na2d takes them. */
export interface NeighborhoodMaskParams {
  /** The grid: 1 to 3 axis lengths (tokens in row-major order, last axis fastest). */
  size: readonly number[];
  /** Window size: one for every axis or one per axis; >= 1 and kernelSize * dilation <= size. */
  kernelSize: number | readonly number[];
  /** Stride (queries in a stride group share their leader's window): 1 <= stride <= kernelSize. Default 1. */
  stride?: number | readonly number[];
  /** Dilation. Default 1. */
  dilation?: number | readonly number[];
  /** Causal (the window ends at the query): one for every axis or one per axis. Default false. */
  causal?: boolean | readonly boolean[];
}

/** The neighborhood-attention pattern (NATTEN semantics) over a grid's tokens in row-major order. */
export function neighborhood(params: NeighborhoodMaskParams, opts?: BlockSizes): BuiltMask {
  const op = 'BlockMask.neighborhood';
  const p = checkGrid(op, params);
  const o = checkKnownOptions(op, opts, BLOCKS);
  const N = p.size.reduce((a, b) => a * b, 1);
  return fromRowSets(op, { B: 1, H: 1, Nq: N, Nk: N, ...sizes(o) }, (q) => gridNeighborhood(q, p));
}

/**
 * The grid parameters with defaults, checked so that every window lies inside its axis (NATTEN's
 * rules, k = 1 allowed): a per-axis parameter is one value for every axis or one per axis.
 */
function checkGrid(op: string, params: unknown): GridParams {
  const o = checkKnownOptions(op, params, ['size', 'kernelSize', 'stride', 'dilation', 'causal'], 'params');
  if (params === undefined) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'params', 'to be an object {size, kernelSize, ...}', 'undefined');
  const size = o.size;
  if (!Array.isArray(size) || size.length < 1 || size.length > 3)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'size', 'to be an array of 1 to 3 axis lengths', show(size));
  const R = size.length;
  const isNum = (x: unknown) => typeof x === 'number';
  const p: GridParams = {
    size,
    kernelSize: checkPerAxis<number>(op, 'kernelSize', o.kernelSize, undefined, R, isNum, 'a positive integer'),
    stride: checkPerAxis(op, 'stride', o.stride, 1, R, isNum, 'a positive integer'),
    dilation: checkPerAxis(op, 'dilation', o.dilation, 1, R, isNum, 'a positive integer'),
    causal: checkPerAxis(op, 'causal', o.causal, false, R, (x) => typeof x === 'boolean', 'a boolean'),
  };
  checkGridRules(op, p, 1);
  return p;
}

/**
 * Mask from a block-level boolean grid [B|1, H|1, Qb, Kb] (row-major, nonzero = the block is
 * visible): listed blocks are full (every in-range element visible).
 */
export function fromBlocks(blocks: ArrayLike<number | boolean>, shape: readonly [number, number, number, number], opts: { Nq: number; Nk: number } & BlockSizes): BuiltMask {
  const op = 'BlockMask.fromBlocks';
  if (!(Array.isArray(blocks) || (ArrayBuffer.isView(blocks) && !(blocks instanceof DataView))))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'blocks', 'to be an array or a typed array of 0/1 entries', show(blocks));
  if (!Array.isArray(shape) || shape.length !== 4)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', 'to be an array [B, H, Qb, Kb]', show(shape));
  shape.forEach((x, i) => checkInteger(op, 'shape', x, { min: i < 2 ? 1 : 0, code: 'ERR_ATTNKIT_SHAPE', what: ` at position ${i}` }));
  if (opts === undefined) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'options', 'to be an object with Nq and Nk', 'undefined');
  const o = checkKnownOptions(op, opts, ['Nq', 'Nk', ...BLOCKS]);
  const [B, H, Qb, Kb] = shape;
  const g = { B, H, Nq: checkCount(op, 'Nq', o.Nq), Nk: checkCount(op, 'Nk', o.Nk), ...sizes(o) };
  const mb = new MaskBuilder(op, g);
  if (Qb !== mb.qBlocks || Kb !== mb.kBlocks)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', `to be [B, H, ${mb.qBlocks}, ${mb.kBlocks}] (ceil(Nq/blockQ), ceil(Nk/blockK))`, `[${shape.join(', ')}]`);
  if (blocks.length !== B * H * Qb * Kb)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'blocks', `to hold ${B * H * Qb * Kb} entries (the shape's product)`, String(blocks.length));
  for (let r = 0; r < B * H * Qb; r++) {
    for (let kb = 0; kb < Kb; kb++) if (blocks[r * Kb + kb]) mb.full(kb);
    mb.endRow();
  }
  return mb.build();
}

/**
 * Mask from a predicate evaluated once per element at build time (B*H*Nq*Nk calls):
 * fn(b, h, q, k) says whether query q of batch b, head h sees key k. `onProgress(fraction)` is
 * called after every query block for large masks.
 */
export function fromPredicate(
  fn: (b: number, h: number, q: number, k: number) => boolean,
  opts: { B?: number; H?: number; Nq: number; Nk: number; onProgress?: (fraction: number) => void } & BlockSizes,
): BuiltMask {
  const op = 'BlockMask.fromPredicate';
  if (typeof fn !== 'function') throw argError('ERR_ATTNKIT_ARGUMENT', op, 'fn', 'to be a function (b, h, q, k) => boolean', typeof fn);
  if (opts === undefined) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'options', 'to be an object with Nq and Nk', 'undefined');
  const o = checkKnownOptions(op, opts, ['B', 'H', 'Nq', 'Nk', 'onProgress', ...BLOCKS]);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'onProgress', 'to be a function (fraction) => void', show(o.onProgress));
  const g = { B: orDefault(o.B, 1), H: orDefault(o.H, 1), Nq: checkCount(op, 'Nq', o.Nq), Nk: checkCount(op, 'Nk', o.Nk), ...sizes(o) } as BlockMaskGeometry;
  const mb = new MaskBuilder(op, g);
  const W = mb.words;
  const bits = new Uint32Array(g.blockQ * W);
  const full = new Uint32Array(W);
  const total = g.B * g.H * mb.qBlocks;
  let done = 0;
  for (let b = 0; b < g.B; b++)
    for (let h = 0; h < g.H; h++)
      for (let qb = 0; qb < mb.qBlocks; qb++) {
        const q0 = qb * g.blockQ;
        const rows = Math.min(g.blockQ, g.Nq - q0);
        for (let kb = 0; kb < mb.kBlocks; kb++) {
          const k0 = kb * g.blockK;
          const cols = Math.min(g.blockK, g.Nk - k0);
          bits.fill(0);
          full.fill(0);
          for (let j = 0; j < cols; j++) full[j >> 5]! |= 1 << (j & 31);
          for (let r = 0; r < rows; r++)
            for (let j = 0; j < cols; j++) if (fn(b, h, q0 + r, k0 + j)) bits[r * W + (j >> 5)]! |= 1 << (j & 31);
          appendBlock(mb, kb, rows, full, (r) => bits.subarray(r * W, (r + 1) * W));
        }
        mb.endRow();
        opts.onProgress?.(++done / total);
      }
  return mb.build();
}
