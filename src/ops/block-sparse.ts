/**
 * Block-sparse attention: softmax attention restricted to a BlockMask (FlexAttention-style full and
 * partial blocks). Layout [B, N, H, D]; GQA; Nq != Nk; float32/float16/bfloat16. The CPU kernel is
 * the fused attention driver with the block-sparse tile policy
 * (native/include/attnkit/mask_block_sparse.h); it visits only tiles holding listed blocks, skips
 * element masking on full tiles, and schedules query tiles longest-first. On CUDA (float16,
 * bfloat16; the compiled head dims) the fmha kernels run with the same policy over the mask's device
 * plan, built by the first op on the device and cached with the mask (docs/cuda-kernels.md); a host
 * mask is uploaded once per device (`mask.to`). Rows with no visible key give out 0 and LSE
 * -Infinity. See docs/block-sparse.md.
 */
import { AttnkitError, callNative } from '../errors.js';
import { native, type ShapeParams } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import { BlockMask } from '../masks/block-mask.js';
import type { AttentionGrads } from './attention.js';
import {
  checkBackwardTensors,
  checkSequenceQKV,
  checkOptions,
  checkScale,
  checkStream,
} from './validate.js';

/** Options of `blockSparseAttention`. */
export interface BlockSparseOptions {
  /** Softmax scale; default 1/sqrt(D). */
  scale?: number;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** What `blockSparseAttention` returns. */
export interface BlockSparseResult {
  /** [B, Nq, H, Dv] */
  out: Tensor;
  /** [B, Nq, H] float32, natural log; -Infinity for rows with no visible key. */
  lse: Tensor;
  /** Gradients for q, k, v given dOut (and optionally the gradient of lse). */
  backward(dOut: Tensor, dLse?: Tensor): AttentionGrads;
}


interface Problem {
  shape: ShapeParams;
  scale: number;
  dtype: 'float32' | 'float16' | 'bfloat16';
  stream: Stream;
  mask: BlockMask;
}

function parse(op: string, q: unknown, k: unknown, v: unknown, mask: unknown, options: unknown, known: readonly string[]): Problem {
  const { Q, dtype, B, Nq, Nk, H, Hkv, D, Dv } = checkSequenceQKV(op, q, k, v);
  const o = checkOptions(op, options, known);
  if (!(mask instanceof BlockMask))
    throw new AttnkitError('ERR_ATTNKIT_ARGUMENT', op, `${op}: expected 'mask' to be a BlockMask, received ${mask === null ? 'null' : typeof mask}`, 'mask');
  mask._checkLive(op, 'mask');
  // A host mask meets CUDA tensors through its copy on their device (uploaded once, cached with it,
  // below); a mask on another device is refused rather than copied behind the caller's back.
  if (mask.device !== Q.device && mask.device !== 'cpu')
    throw new AttnkitError('ERR_ATTNKIT_DEVICE', op, `${op}: expected 'mask' to be on the device of 'q' (${Q.device}), received ${mask.device}`, 'mask');
  if (mask.Nq !== Nq || mask.Nk !== Nk)
    throw new AttnkitError('ERR_ATTNKIT_SHAPE', op, `${op}: expected 'mask' to cover Nq = ${Nq} and Nk = ${Nk} tokens, received Nq = ${mask.Nq}, Nk = ${mask.Nk}`, 'mask');
  if ((mask.B !== 1 && mask.B !== B) || (mask.H !== 1 && mask.H !== H))
    throw new AttnkitError('ERR_ATTNKIT_SHAPE', op, `${op}: expected 'mask' to have B = 1 or ${B} and H = 1 or ${H} (query heads), received B = ${mask.B}, H = ${mask.H}`, 'mask');
  const scale = checkScale(op, o.scale, 1 / Math.sqrt(D));
  const stream = checkStream(op, o.stream, Q, { B, Nq, Nk, H, Hkv, D, Dv });
  return { shape: { B, Nq, Nk, H, Hkv, D, Dv }, scale, dtype, stream, mask: mask.to(Q.device) };
}

// The problem, the mask's geometry and, on CUDA, the mask's device plan (built by the first op there).
const params = (op: string, p: Problem, plan: { tensor: Tensor; build: boolean } | null) => ({
  ...p.shape, scale: p.scale, maskB: p.mask.B, maskH: p.mask.H, blockQ: p.mask.blockQ, blockK: p.mask.blockK,
  ...(plan ? { plan: plan.tensor._native(op, 'mask plan'), buildPlan: plan.build } : {}),
});
const maskStorages = (op: string, m: BlockMask) => m.buffers().map((t, i) => t._native(op, `mask.buffers[${i}]`));
// Runs the native call with the mask's plan, and records that the plan's build is enqueued.
function withPlan(op: string, m: BlockMask, call: (plan: { tensor: Tensor; build: boolean } | null) => void): void {
  const plan = m.device === 'cpu' ? null : m._devicePlan(op);
  callNative(op, () => call(plan));
  if (plan?.build) m._planBuilt();
}

/**
 * Attention of q [B, Nq, H, D] over k, v [B, Nk, Hkv, D|Dv] restricted to `mask`: only the
 * listed blocks are visited, partial blocks with their element bitmaps.
 *
 * @example
 * ```ts
 * const mask = BlockMask.documents([1000, 3000, 96], { causal: true });
 * const { out, lse } = blockSparseAttention(q, k, v, mask); // q, k, v of 4096 tokens
 * ```
 */
export function blockSparseAttention(q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, options: BlockSparseOptions = {}): BlockSparseResult {
  const op = 'blockSparseAttention';
  const p = parse(op, q, k, v, mask, options, ['scale', 'stream']);
  const { B, Nq, H, Dv } = p.shape;
  const out = empty([B, Nq, H, Dv], { dtype: p.dtype, device: q.device });
  const lse = empty([B, Nq, H], { dtype: 'float32', device: q.device });
  withPlan(op, p.mask, (plan) =>
    native.bsForward(p.stream.native, q._native(op, 'q'), k._native(op, 'k'), v._native(op, 'v'), out._native(op, 'out'), lse._native(op, 'lse'), maskStorages(op, p.mask), params(op, p, plan)),
  );
  out._setStream(p.stream);
  lse._setStream(p.stream);
  return { out, lse, backward: (dOut, dLse) => blockSparseAttentionBackward(q, k, v, mask, out, lse, dOut, { ...options, dLse }) };
}

/** Options of `blockSparseAttentionBackward`: the forward's, and the gradient of its LSE. */
export interface BlockSparseBackwardOptions extends BlockSparseOptions {
  /** Gradient of the LSE output [B, Nq, H] float32. */
  dLse?: Tensor;
}

/**
 * Functional backward of blockSparseAttention: gradients for q, k, v.
 *
 * @example
 * ```ts
 * const { out, lse } = blockSparseAttention(q, k, v, mask);
 * const { dq, dk, dv } = blockSparseAttentionBackward(q, k, v, mask, out, lse, dOut);
 * ```
 */
export function blockSparseAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  mask: BlockMask,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  options: BlockSparseBackwardOptions = {},
): AttentionGrads {
  const op = 'blockSparseAttentionBackward';
  const p = parse(op, q, k, v, mask, options, ['scale', 'stream', 'dLse']);
  const { B, Nq, H, Dv } = p.shape;
  const { O, L, dO, dL } = checkBackwardTensors(op, q, out, lse, dOut, options.dLse, [B, Nq, H, Dv], [B, Nq, H]);
  const dq = empty(q.shape, { dtype: p.dtype, device: q.device });
  const dk = empty(k.shape, { dtype: p.dtype, device: q.device });
  const dv = empty(v.shape, { dtype: p.dtype, device: q.device });
  withPlan(op, p.mask, (plan) =>
    native.bsBackward(
      p.stream.native,
      q._native(op, 'q'),
      k._native(op, 'k'),
      v._native(op, 'v'),
      O._native(op, 'out'),
      L._native(op, 'lse'),
      dO._native(op, 'dOut'),
      dL ? dL._native(op, 'dLse') : null,
      dq._native(op, 'dq'),
      dk._native(op, 'dk'),
      dv._native(op, 'dv'),
      maskStorages(op, p.mask),
      params(op, p, plan),
    ),
  );
  for (const t of [dq, dk, dv]) t._setStream(p.stream);
  return { dq, dk, dv };
}
