/**
 * Dense fused attention (FlashAttention 2 semantics): full, causal and sliding-window masks, GQA/MQA,
 * Nq != Nk with bottom-right causal alignment, a value head dim that may differ, LSE in natural log.
 * Layout [B, N, H, D]. The CPU kernel is the tiled online-softmax FMHA driven by the dense mask
 * policy (native/include/attnkit/mask_dense.h); on CUDA tensors the FlashAttention-2 kernels of
 * native/cuda/fmha/ (float16/bfloat16), same policy header.
 */
import { DTYPES, type FloatDType } from '../dtype.js';
import { AttnkitError, argError, callNative, MAX_EXTENT, show } from '../errors.js';
import { native, type AttentionParams } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import {
  checkBackwardTensors,
  checkSequenceQKV,
  checkBool,
  checkOptions,
  checkScale,
  checkStream,
} from './validate.js';

/** Options of `attention`. */
export interface AttentionOptions {
  /** Causal mask, aligned bottom-right when Nq != Nk (query i sees keys j <= i + Nk - Nq). */
  causal?: boolean;
  /**
   * Sliding window [left, right]: query i (aligned at a = i + Nk - Nq) sees keys a - left ... a + right.
   * -1 means unbounded on that side. Combined with `causal`, right is clamped to 0.
   */
  window?: readonly [number, number];
  /** Softmax scale; default 1/sqrt(D). */
  scale?: number;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** Gradients of an attention: shapes and dtypes of q, k and v. */
export interface AttentionGrads {
  /** [B, Nq, H, D] */
  dq: Tensor;
  /** [B, Nk, Hkv, D] */
  dk: Tensor;
  /** [B, Nk, Hkv, Dv] */
  dv: Tensor;
}

/** What `attention` returns: the (pending) outputs and a backward closure. */
export interface AttentionResult {
  /** [B, Nq, H, Dv], dtype of q. */
  out: Tensor;
  /** [B, Nq, H] float32, natural-log log-sum-exp of the scaled scores; -Infinity for empty rows. */
  lse: Tensor;
  /** Gradients for q, k, v given dOut (and optionally the gradient of lse). */
  backward(dOut: Tensor, dLse?: Tensor): AttentionGrads;
}

const KNOWN = ['causal', 'window', 'scale', 'stream'] as const;

interface Problem {
  params: AttentionParams;
  dtype: FloatDType;
  stream: Stream;
}

function parse(op: string, q: unknown, k: unknown, v: unknown, options: unknown): Problem {
  const { Q, dtype, B, Nq, Nk, H, Hkv, D, Dv } = checkSequenceQKV(op, q, k, v);
  const o = checkOptions(op, options, KNOWN);
  const causal = checkBool(op, 'causal', o.causal, false);
  let left = -1;
  let right = -1;
  if (o.window !== undefined) {
    const w = o.window;
    if (
      !Array.isArray(w) ||
      w.length !== 2 ||
      !w.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= -1 && x <= MAX_EXTENT)
    )
      throw argError('ERR_ATTNKIT_ARGUMENT', op, 'window', 'to be [left, right] with integers >= -1 (-1 = unbounded) and < 2^31', show(w));
    [left, right] = w as [number, number];
  }
  const scale = checkScale(op, o.scale, 1 / Math.sqrt(D));
  const stream = checkStream(op, o.stream, Q, { B, Nq, Nk, H, Hkv, D, Dv });
  const params = { B, Nq, Nk, H, Hkv, D, Dv, scale, causal, left, right };
  return { params, dtype, stream };
}

/**
 * Dense fused attention: softmax(scale * q k^T + mask) v for q [B, Nq, H, D], k [B, Nk, Hkv, D],
 * v [B, Nk, Hkv, Dv]. Validates at once, enqueues the kernel and returns the (pending) outputs.
 *
 * @example
 * ```ts
 * const q = randn([1, 2048, 8, 64], { seed: 1, dtype: 'bfloat16' });
 * const k = randn([1, 2048, 2, 64], { seed: 2, dtype: 'bfloat16' }); // GQA: 2 kv heads
 * const v = randn([1, 2048, 2, 64], { seed: 3, dtype: 'bfloat16' });
 * const { out, lse, backward } = attention(q, k, v, { causal: true });
 * const { dq, dk, dv } = backward(randn(out.shape, { seed: 4, dtype: 'bfloat16' }));
 * ```
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): AttentionResult {
  const op = 'attention';
  const { params, dtype, stream } = parse(op, q, k, v, options);
  const { B, Nq, H, Dv } = params;
  // On CUDA the outputs are allocated stream-ordered on the stream that writes them.
  const out = empty([B, Nq, H, Dv], { dtype, device: q.device, stream });
  const lse = empty([B, Nq, H], { dtype: 'float32', device: q.device, stream });
  callNative(op, () =>
    native.attentionForward(stream.native, q._native(op, 'q'), k._native(op, 'k'), v._native(op, 'v'), out._native(op, 'out'), lse._native(op, 'lse'), params),
  );
  out._setStream(stream);
  lse._setStream(stream);
  return {
    out,
    lse,
    backward: (dOut: Tensor, dLse?: Tensor) => attentionBackward(q, k, v, out, lse, dOut, { ...options, dLse }),
  };
}

/** Options of `attentionBackward`: the forward's options, and the gradient of its LSE. */
export interface AttentionBackwardOptions extends AttentionOptions {
  /** Gradient of the LSE output [B, Nq, H] float32, when the LSE feeds a later op (e.g. a merge). */
  dLse?: Tensor;
}

/**
 * Functional backward of `attention`: gradients for q, k, v from the forward's out and lse (pass the
 * forward's options).
 *
 * @example
 * ```ts
 * const { out, lse } = attention(q, k, v, { causal: true });
 * const { dq, dk, dv } = attentionBackward(q, k, v, out, lse, dOut, { causal: true });
 * ```
 */
export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  options: AttentionBackwardOptions = {},
): AttentionGrads {
  const op = 'attentionBackward';
  const { dLse, ...rest } = checkOptions(op, options, [...KNOWN, 'dLse']) as AttentionBackwardOptions;
  const { params, dtype, stream } = parse(op, q, k, v, rest);
  const { B, Nq, Nk, H, Hkv, D, Dv } = params;
  const { O, L, dO, dL } = checkBackwardTensors(op, q, out, lse, dOut, dLse, [B, Nq, H, Dv], [B, Nq, H]);
  const dq = empty([B, Nq, H, D], { dtype, device: q.device, stream });
  const dk = empty([B, Nk, Hkv, D], { dtype, device: q.device, stream });
  const dv = empty([B, Nk, Hkv, Dv], { dtype, device: q.device, stream });
  callNative(op, () =>
    native.attentionBackward(
      stream.native,
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
      params,
    ),
  );
  for (const t of [dq, dk, dv]) t._setStream(stream);
  return { dq, dk, dv };
}
