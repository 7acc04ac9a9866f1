/**
 * Run-time block selection: MoBA gating (`mobaMask`) and XAttention antidiagonal scoring
 * (`xattentionMask`). Each validates at once, enqueues the selection on the stream and returns a
 * BlockMask ready for `blockSparseAttention` on the same stream, plus the raw scores and selections
 * for inspection. Semantics: docs/block-sparse.md.
 */
import { argError, callNative, MAX_EXTENT, show } from '../errors.js';
import { native } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import { BlockMask } from '../masks/block-mask.js';
import {
  checkBool,
  checkDim,
  checkFloat,
  checkHeadDim,
  checkOptions,
  checkRank,
  checkSameDevice,
  checkSameDType,
  checkStream,
  checkTensor,
} from './validate.js';


/** Options of `mobaMask`. */
export interface MobaOptions {
  /** MoBA key block (chunk) size C: a power of two >= 16. */
  blockSize: number;
  /** Blocks each query attends, counting its own block when causal. */
  topK: number;
  /** Default true: own block forced and token-causal inside; only complete past blocks compete. */
  causal?: boolean;
  /** Query block size of the produced BlockMask (power of two, 16..128). Default 64. */
  blockQ?: number;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** What `mobaMask` returns: the mask and what the selection saw. */
export interface MobaResult {
  /** B x H mask: blockQ x min(blockSize, 128) blocks. */
  mask: BlockMask;
  /** [B, Nq, H, nBlocks] float32: gate scores <q_t, mean(K_block)>, before selection masking. */
  scores: Tensor;
  /** [B, Nq, H, topK] int32: selected key blocks (own block first when causal), -1 when unused. */
  selected: Tensor;
}

/** Options of `xattentionMask`. */
export interface XattentionOptions {
  /** Antidiagonal stride S: a power of two dividing blockSize. */
  stride: number;
  /** Fraction of each query block's attention mass to keep, in [0, 1]. */
  threshold: number;
  /** Block size of the mask (power of two, 16..128). Default 64. */
  blockSize?: number;
  /** Default true: sink block and diagonal forced, blocks past the diagonal dropped, token-causal inside. */
  causal?: boolean;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** What `xattentionMask` returns: the mask and what the selection saw. */
export interface XattentionResult {
  /** B x H mask of blockSize x blockSize blocks. */
  mask: BlockMask;
  /** [B, H, Qb, Kb] float32 block scores (each query block's row sums to its reshaped row count). */
  scores: Tensor;
  /** [B, H, Qb, Kb] uint8: 1 where the block was selected. */
  selected: Tensor;
}

const pow2 = (x: unknown, lo: number, hi: number) => typeof x === 'number' && Number.isInteger(x) && x >= lo && x <= hi && (x & (x - 1)) === 0;

function parseQK(op: string, q: unknown, k: unknown) {
  const Q = checkTensor(op, 'q', q);
  const K = checkTensor(op, 'k', k);
  checkFloat(op, 'q', Q);
  checkSameDType(op, 'k', K, Q, 'q');
  checkSameDevice(op, 'k', K, Q, 'q');
  checkRank(op, 'q', Q, 4, '[B, Nq, H, D]');
  checkRank(op, 'k', K, 4, '[B, Nk, Hkv, D]');
  const [B, Nq, H, D] = Q.shape as [number, number, number, number];
  const [, Nk, Hkv] = K.shape as [number, number, number, number];
  checkDim(op, 'k', 'batch size', K.shape[0]!, B, "q's batch");
  checkDim(op, 'k', 'head dim', K.shape[3]!, D, "q's head dim");
  if (Hkv < 1 || H % Hkv !== 0)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'k', `to have a head count that divides q's ${H} heads (GQA/MQA)`, String(Hkv));
  if (Nq < 1 || Nk < 1) throw argError('ERR_ATTNKIT_SHAPE', op, 'q', 'to have Nq >= 1 and Nk >= 1', `Nq ${Nq}, Nk ${Nk}`);
  checkHeadDim(op, 'q', D);
  return { Q, K, B, Nq, Nk, H, Hkv, D };
}

// Buffers of a mask with `rows` list rows and `cap` entries of capacity per list.
function maskBuffers(device: Tensor['device'], rows: number, cap: number, blockQ: number, blockK: number): Tensor[] {
  const words = Math.ceil(blockK / 32);
  return [rows + 1, cap, rows + 1, cap, cap * blockQ * words].map((n) => empty([n], { dtype: 'int32', device }));
}

/**
 * MoBA gating: each query token's top-K key blocks by <q, mean(K_block)>, as a BlockMask.
 *
 * @example
 * ```ts
 * const { mask } = mobaMask(q, k, { blockSize: 512, topK: 3 });
 * const { out } = blockSparseAttention(q, k, v, mask);
 * ```
 */
export function mobaMask(q: Tensor, k: Tensor, options: MobaOptions): MobaResult {
  const op = 'mobaMask';
  const { Q, K, B, Nq, Nk, H, Hkv, D } = parseQK(op, q, k);
  if (options === null || typeof options !== 'object')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'options', "to be an object with 'blockSize' and 'topK'", show(options));
  const o = checkOptions(op, options, ['blockSize', 'topK', 'causal', 'blockQ', 'stream']);
  if (!pow2(o.blockSize, 16, 2 ** 30))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'blockSize', 'to be a power of two >= 16', show(o.blockSize));
  const C = o.blockSize as number;
  if (typeof o.topK !== 'number' || !Number.isInteger(o.topK) || o.topK < 1)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'topK', 'to be a positive integer', show(o.topK));
  const topK = o.topK;
  // topK beyond the key blocks selects every block (docs/block-sparse.md), but `selected` still has
  // topK columns: bounded so that it stays indexable, refused here rather than as an allocation failure.
  if (B * Nq * H * topK > MAX_EXTENT)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'topK', `to keep 'selected' [B, Nq, H, topK] = [${B}, ${Nq}, ${H}, topK] under 2^31 elements`, String(topK));
  const causal = checkBool(op, 'causal', o.causal, true);
  const blockQ = o.blockQ === undefined ? 64 : (o.blockQ as number);
  if (!pow2(blockQ, 16, 128)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'blockQ', 'to be a power of two between 16 and 128', show(o.blockQ));
  const stream = checkStream(op, o.stream, Q, { D });
  const blockK = Math.min(C, 128);
  const nBlocks = Math.ceil(Nk / C);
  const Qb = Math.ceil(Nq / blockQ);
  const Kb = Math.ceil(Nk / blockK);
  // Worst case per query block: every row picks topK blocks of C / blockK mask blocks each.
  const perRow = Math.min(Kb, Math.min(blockQ, Nq) * topK * (C / blockK));
  const capacity = B * H * Qb * perRow;
  const scores = empty([B, Nq, H, nBlocks], { dtype: 'float32', device: Q.device });
  const selected = empty([B, Nq, H, topK], { dtype: 'int32', device: Q.device });
  const bufs = maskBuffers(Q.device, B * H * Qb, capacity, blockQ, blockK);
  callNative(op, () =>
    native.mobaSelect(
      stream.native,
      Q._native(op, 'q'),
      K._native(op, 'k'),
      scores._native(op, 'scores'),
      selected._native(op, 'selected'),
      bufs.map((t) => t._native(op, 'mask')),
      { B, Nq, Nk, H, Hkv, D, block: C, topk: topK, causal, blockQ, blockK, capacity },
    ),
  );
  for (const t of [scores, selected, ...bufs]) t._setStream(stream);
  return { mask: new BlockMask({ B, H, Nq, Nk, blockQ, blockK }, null, bufs, Q.device), scores, selected };
}

/**
 * XAttention: antidiagonal block scoring and cumulative-mass threshold selection, as a BlockMask.
 *
 * @example
 * ```ts
 * const { mask } = xattentionMask(q, k, { stride: 8, threshold: 0.9 });
 * const { out } = blockSparseAttention(q, k, v, mask);
 * ```
 */
export function xattentionMask(q: Tensor, k: Tensor, options: XattentionOptions): XattentionResult {
  const op = 'xattentionMask';
  const { Q, K, B, Nq, Nk, H, Hkv, D } = parseQK(op, q, k);
  if (options === null || typeof options !== 'object')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'options', "to be an object with 'stride' and 'threshold'", show(options));
  const o = checkOptions(op, options, ['stride', 'threshold', 'blockSize', 'causal', 'stream']);
  const block = o.blockSize === undefined ? 64 : (o.blockSize as number);
  if (!pow2(block, 16, 128)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'blockSize', 'to be a power of two between 16 and 128', show(o.blockSize));
  if (!pow2(o.stride, 1, block) || block % (o.stride as number) !== 0)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stride', `to be a power of two dividing the block size ${block}`, show(o.stride));
  if (typeof o.threshold !== 'number' || !(o.threshold >= 0 && o.threshold <= 1))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'threshold', 'to be a number in [0, 1]', show(o.threshold));
  const causal = checkBool(op, 'causal', o.causal, true);
  const stream = checkStream(op, o.stream, Q, { D });
  const Qb = Math.ceil(Nq / block);
  const Kb = Math.ceil(Nk / block);
  const capacity = B * H * Qb * Kb;
  const scores = empty([B, H, Qb, Kb], { dtype: 'float32', device: Q.device });
  const selected = empty([B, H, Qb, Kb], { dtype: 'uint8', device: Q.device });
  const bufs = maskBuffers(Q.device, B * H * Qb, capacity, block, block);
  callNative(op, () =>
    native.xattnSelect(
      stream.native,
      Q._native(op, 'q'),
      K._native(op, 'k'),
      scores._native(op, 'scores'),
      selected._native(op, 'selected'),
      bufs.map((t) => t._native(op, 'mask')),
      { B, Nq, Nk, H, Hkv, D, stride: o.stride, block, threshold: o.threshold, causal, capacity },
    ),
  );
  for (const t of [scores, selected, ...bufs]) t._setStream(stream);
  return { mask: new BlockMask({ B, H, Nq, Nk, blockQ: block, blockK: block }, null, bufs, Q.device), scores, selected };
}

