/**
 * mergeAttention: the exact combination of partial attentions over the same queries (context
 * parallelism, additional keys) by their LSE: out = sum_i w_i out_i with w_i = exp(lse_i - lse) and
 * lse = log sum_i exp(lse_i). Parts whose lse is -Infinity contribute nothing; if all are, the row
 * is 0 with lse -Infinity.
 */
import { argError, callNative, show } from '../errors.js';
import { native } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import {
  checkDType,
  checkFloat,
  checkOptions,
  checkSameDevice,
  checkSameDType,
  checkShapeEquals,
  checkStream,
  checkTensor,
} from './validate.js';

/** One partial attention over the same queries: its output and natural-log LSE. */
export interface AttentionPart {
  /** [..., H, Dv] */
  out: Tensor;
  /** [..., H] float32 */
  lse: Tensor;
}

/** Gradients of one part of a merge. */
export interface MergeGrads {
  /** Gradient of the part's out (its shape and dtype). */
  dout: Tensor;
  /** Gradient of the part's lse (float32). */
  dlse: Tensor;
}

/** What `mergeAttention` returns. */
export interface MergeResult {
  /** The merged output, shape and dtype of the parts' out. */
  out: Tensor;
  /** The merged LSE, float32. */
  lse: Tensor;
  /** Gradients for every part's out and lse, in the order given. */
  backward(dOut: Tensor, dLse?: Tensor): MergeGrads[];
}

function parseParts(op: string, parts: unknown): { outs: Tensor[]; lses: Tensor[]; rows: number; dv: number } {
  if (!Array.isArray(parts) || parts.length === 0)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'parts', 'to be a non-empty array of {out, lse}', Array.isArray(parts) ? 'an empty array' : typeof parts);
  const outs: Tensor[] = [];
  const lses: Tensor[] = [];
  parts.forEach((p: unknown, i: number) => {
    if (p === null || typeof p !== 'object')
      throw argError('ERR_ATTNKIT_ARGUMENT', op, `parts[${i}]`, 'to be {out, lse}', show(p));
    outs.push(checkTensor(op, `parts[${i}].out`, (p as AttentionPart).out));
    lses.push(checkTensor(op, `parts[${i}].lse`, (p as AttentionPart).lse));
  });
  const o0 = outs[0]!;
  checkFloat(op, 'parts[0].out', o0);
  if (o0.shape.length < 1)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'parts[0].out', 'to have rank >= 1 ([..., Dv])', 'a scalar');
  const lead = o0.shape.slice(0, -1);
  const dv = o0.shape[o0.shape.length - 1]!;
  outs.forEach((o, i) => {
    checkShapeEquals(op, `parts[${i}].out`, o, o0.shape);
    checkSameDType(op, `parts[${i}].out`, o, o0, 'parts[0].out');
    checkSameDevice(op, `parts[${i}].out`, o, o0, 'parts[0].out');
    checkShapeEquals(op, `parts[${i}].lse`, lses[i]!, lead);
    checkDType(op, `parts[${i}].lse`, lses[i]!, 'float32');
    checkSameDevice(op, `parts[${i}].lse`, lses[i]!, o0, 'parts[0].out');
  });
  if (dv < 1 || dv > 1024) throw argError('ERR_ATTNKIT_UNSUPPORTED', op, 'parts[0].out', 'to have a last dim between 1 and 1024', String(dv));
  return { outs, lses, rows: lead.reduce((a, b) => a * b, 1), dv };
}

/**
 * Merges partial attentions over the same queries by their LSE, exactly (as if one attention had
 * seen every part's keys).
 *
 * @example
 * ```ts
 * // attention over [k1, k2] computed as two halves (context parallelism)
 * const a = attention(q, k1, v1);
 * const b = attention(q, k2, v2);
 * const { out, lse } = mergeAttention([a, b]);
 * ```
 */
export function mergeAttention(parts: readonly AttentionPart[], options: { stream?: Stream } = {}): MergeResult {
  const op = 'mergeAttention';
  const o = checkOptions(op, options, ['stream']);
  const { outs, lses, rows, dv } = parseParts(op, parts);
  const o0 = outs[0]!;
  const stream = checkStream(op, o.stream, o0, { Dv: dv, parts: outs.length });
  const out = empty(o0.shape, { dtype: o0.dtype, device: o0.device });
  const lse = empty(o0.shape.slice(0, -1), { dtype: 'float32', device: o0.device });
  callNative(op, () =>
    native.mergeForward(
      stream.native,
      outs.map((t, i) => t._native(op, `parts[${i}].out`)),
      lses.map((t, i) => t._native(op, `parts[${i}].lse`)),
      out._native(op, 'out'),
      lse._native(op, 'lse'),
      { rows, dv },
    ),
  );
  out._setStream(stream);
  lse._setStream(stream);
  const saved = parts.map((p) => ({ out: p.out, lse: p.lse }));
  return {
    out,
    lse,
    backward: (dOut: Tensor, dLse?: Tensor) => mergeAttentionBackward(saved, out, lse, dOut, { dLse, stream: o.stream as Stream | undefined }),
  };
}

/**
 * Functional backward of `mergeAttention`: the gradients of every part's out and lse.
 *
 * @example
 * ```ts
 * const m = mergeAttention([a, b]);
 * const [ga, gb] = mergeAttentionBackward([a, b], m.out, m.lse, dOut);
 * ```
 */
export function mergeAttentionBackward(
  parts: readonly AttentionPart[],
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  options: { dLse?: Tensor; stream?: Stream } = {},
): MergeGrads[] {
  const op = 'mergeAttentionBackward';
  const o = checkOptions(op, options, ['dLse', 'stream']);
  const { outs, lses, rows, dv } = parseParts(op, parts);
  const o0 = outs[0]!;
  const O = checkTensor(op, 'out', out);
  const L = checkTensor(op, 'lse', lse);
  const dO = checkTensor(op, 'dOut', dOut);
  checkShapeEquals(op, 'out', O, o0.shape);
  checkShapeEquals(op, 'dOut', dO, o0.shape);
  checkShapeEquals(op, 'lse', L, o0.shape.slice(0, -1));
  checkSameDType(op, 'out', O, o0, 'parts[0].out');
  checkSameDType(op, 'dOut', dO, o0, 'parts[0].out');
  checkDType(op, 'lse', L, 'float32');
  let dL: Tensor | null = null;
  if (o.dLse !== undefined) {
    dL = checkTensor(op, 'dLse', o.dLse);
    checkShapeEquals(op, 'dLse', dL, o0.shape.slice(0, -1));
    checkDType(op, 'dLse', dL, 'float32');
  }
  for (const [name, t] of [['out', O], ['lse', L], ['dOut', dO]] as const) checkSameDevice(op, name, t, o0, 'parts[0].out');
  const stream = checkStream(op, o.stream, o0, { Dv: dv, parts: outs.length });
  const grads = outs.map(() => ({
    dout: empty(o0.shape, { dtype: o0.dtype, device: o0.device }),
    dlse: empty(o0.shape.slice(0, -1), { dtype: 'float32', device: o0.device }),
  }));
  callNative(op, () =>
    native.mergeBackward(
      stream.native,
      outs.map((t, i) => t._native(op, `parts[${i}].out`)),
      lses.map((t, i) => t._native(op, `parts[${i}].lse`)),
      O._native(op, 'out'),
      L._native(op, 'lse'),
      dO._native(op, 'dOut'),
      dL ? dL._native(op, 'dLse') : null,
      grads.map((g) => g.dout._native(op, 'dout')),
      grads.map((g) => g.dlse._native(op, 'dlse')),
      { rows, dv },
    ),
  );
  for (const g of grads) {
    g.dout._setStream(stream);
    g.dlse._setStream(stream);
  }
  return grads;
}
