/**
 * Argument checks shared by the ops: each names the op and the argument and says what was expected
 * ("attention: expected 'k' to have rank 4 ([B, N, Hkv, D]), received rank 3").
 */
import { AttnkitError, argError, callNative, checkBoolean, checkKnownOptions, show } from '../errors.js';
import { Tensor } from '../tensor.js';
import { DTYPES, type FloatDType } from '../dtype.js';
import { native, type SupportRequest } from '../native.js';
import { defaultStream, Stream } from '../stream.js';

export function checkTensor(op: string, arg: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) {
    const got = t === null ? 'null' : Array.isArray(t) ? 'an array' : typeof t;
    throw argError('ERR_ATTNKIT_ARGUMENT', op, arg, 'to be a Tensor', got);
  }
  if (t.disposed)
    throw new AttnkitError('ERR_ATTNKIT_DISPOSED', op, `${op}: '${arg}' was disposed and cannot be used`, arg);
  return t;
}

export function checkFloat(op: string, arg: string, t: Tensor): FloatDType {
  if (t.dtype !== 'float32' && t.dtype !== 'float16' && t.dtype !== 'bfloat16')
    throw argError('ERR_ATTNKIT_DTYPE', op, arg, "to have dtype 'float32', 'float16' or 'bfloat16'", `'${t.dtype}'`);
  return t.dtype;
}

export function checkSameDType(op: string, arg: string, t: Tensor, ref: Tensor, refArg: string): void {
  if (t.dtype !== ref.dtype)
    throw argError('ERR_ATTNKIT_DTYPE', op, arg, `to have the dtype of '${refArg}' ('${ref.dtype}')`, `'${t.dtype}'`);
}

export function checkDType(op: string, arg: string, t: Tensor, dtype: string): void {
  if (t.dtype !== dtype) throw argError('ERR_ATTNKIT_DTYPE', op, arg, `to have dtype '${dtype}'`, `'${t.dtype}'`);
}

export function checkSameDevice(op: string, arg: string, t: Tensor, ref: Tensor, refArg: string): void {
  if (t.device !== ref.device)
    throw argError('ERR_ATTNKIT_DEVICE', op, arg, `to be on the device of '${refArg}' (${ref.device})`, t.device);
}

export function checkRank(op: string, arg: string, t: Tensor, rank: number, layout: string): void {
  if (t.shape.length !== rank)
    throw argError('ERR_ATTNKIT_SHAPE', op, arg, `to have rank ${rank} (${layout})`, `rank ${t.shape.length} [${t.shape.join(', ')}]`);
}

export function checkShapeEquals(op: string, arg: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
    throw argError('ERR_ATTNKIT_SHAPE', op, arg, `to have shape [${shape.join(', ')}]`, `[${t.shape.join(', ')}]`);
}

export function checkDim(op: string, arg: string, what: string, value: number, expected: number, expectedFrom: string): void {
  if (value !== expected)
    throw argError('ERR_ATTNKIT_SHAPE', op, arg, `to have ${what} ${expected} (as ${expectedFrom})`, String(value));
}

export function checkOptions(op: string, opts: unknown, known: readonly string[]): Record<string, unknown> {
  return checkKnownOptions(op, opts, known);
}

export function checkBool(op: string, arg: string, v: unknown, dflt: boolean): boolean {
  return checkBoolean(op, arg, v, dflt);
}

/**
 * The softmax scale: a finite number > 0 that stays finite and > 0 in float32, the precision the
 * kernels use (1e39 would be Infinity and 1e-46 zero there, and the output all NaN).
 */
export function checkScale(op: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'scale', 'to be a finite number > 0', show(v));
  if (!Number.isFinite(Math.fround(v)) || Math.fround(v) <= 0)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'scale', 'to be a finite number > 0 that float32 can hold (about 1.4e-45 to 3.4e38)', show(v));
  return v;
}

/**
 * The stream an op runs on: `v`, or the default stream of the inputs' device. Then the backend
 * table (native/ops/ops.cc) is asked whether the inputs' backend runs `kernel` (default: `op`) on
 * this dtype and these sizes; what it does not run is refused here with ERR_ATTNKIT_UNSUPPORTED,
 * before any output is allocated. There is no per-op backend branch in the facade.
 */
export function checkStream(op: string, v: unknown, t: Tensor, sizes: Omit<SupportRequest, 'dtype'> = {}, kernel: string = op): Stream {
  const device = t.device;
  if (v !== undefined && !(v instanceof Stream)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stream', 'to be a Stream', typeof v);
  if (v !== undefined && v.device !== device)
    throw argError('ERR_ATTNKIT_DEVICE', op, 'stream', `to be a stream on ${device} (the inputs' device)`, v.device);
  const ordinal = device === 'cpu' ? -1 : Number(device.slice('cuda:'.length));
  const why = callNative(op, () => native.supports(kernel, ordinal, { dtype: DTYPES[t.dtype].code, ...sizes }));
  if (why !== '') throw new AttnkitError('ERR_ATTNKIT_UNSUPPORTED', op, `${op}: ${why}`);
  return v ?? defaultStream(device);
}

/** CPU kernels support head dims 1..MAX_HEAD_DIM. */
export const MAX_HEAD_DIM = 512;

export function checkHeadDim(op: string, arg: string, d: number): void {
  if (d < 1 || d > MAX_HEAD_DIM)
    throw argError('ERR_ATTNKIT_UNSUPPORTED', op, arg, `to have a head dim between 1 and ${MAX_HEAD_DIM}`, String(d));
}

/** q [B, Nq, H, D], k [B, Nk, Hkv, D], v [B, Nk, Hkv, Dv]: the checks every sequence attention op shares. */
export function checkSequenceQKV(op: string, q: unknown, k: unknown, v: unknown) {
  const Q = checkTensor(op, 'q', q);
  const K = checkTensor(op, 'k', k);
  const V = checkTensor(op, 'v', v);
  const dtype = checkFloat(op, 'q', Q);
  checkSameDType(op, 'k', K, Q, 'q');
  checkSameDType(op, 'v', V, Q, 'q');
  checkSameDevice(op, 'k', K, Q, 'q');
  checkSameDevice(op, 'v', V, Q, 'q');
  checkRank(op, 'q', Q, 4, '[B, Nq, H, D]');
  checkRank(op, 'k', K, 4, '[B, Nk, Hkv, D]');
  checkRank(op, 'v', V, 4, '[B, Nk, Hkv, Dv]');
  const [B, Nq, H, D] = Q.shape as [number, number, number, number];
  const [, Nk, Hkv] = K.shape as [number, number, number, number];
  const Dv = V.shape[3]!;
  checkDim(op, 'k', 'batch size', K.shape[0]!, B, "q's batch");
  checkDim(op, 'v', 'batch size', V.shape[0]!, B, "q's batch");
  checkDim(op, 'k', 'head dim', K.shape[3]!, D, "q's head dim");
  checkDim(op, 'v', 'sequence length', V.shape[1]!, Nk, "k's sequence length");
  checkDim(op, 'v', 'kv head count', V.shape[2]!, Hkv, "k's head count");
  if (B < 1 || H < 1) throw argError('ERR_ATTNKIT_SHAPE', op, 'q', 'to have B >= 1 and H >= 1', `[${Q.shape.join(', ')}]`);
  if (Hkv < 1 || H % Hkv !== 0)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'k', `to have a head count that divides q's ${H} heads (GQA/MQA)`, String(Hkv));
  checkHeadDim(op, 'q', D);
  checkHeadDim(op, 'v', Dv);
  return { Q, K, V, dtype, B, Nq, Nk, H, Hkv, D, Dv };
}

/**
 * The forward outputs and gradients a softmax-attention backward receives: out and dOut of shape
 * `outShape` in q's dtype, lse (and the optional dLse) of shape `lseShape` in float32, all on q's
 * device. Shared by every softmax attention op.
 */
export function checkBackwardTensors(
  op: string,
  q: Tensor,
  out: unknown,
  lse: unknown,
  dOut: unknown,
  dLse: unknown,
  outShape: readonly number[],
  lseShape: readonly number[],
): { O: Tensor; L: Tensor; dO: Tensor; dL: Tensor | null } {
  const O = checkTensor(op, 'out', out);
  const L = checkTensor(op, 'lse', lse);
  const dO = checkTensor(op, 'dOut', dOut);
  checkShapeEquals(op, 'out', O, outShape);
  checkShapeEquals(op, 'dOut', dO, outShape);
  checkShapeEquals(op, 'lse', L, lseShape);
  checkSameDType(op, 'out', O, q, 'q');
  checkSameDType(op, 'dOut', dO, q, 'q');
  checkDType(op, 'lse', L, 'float32');
  for (const [name, t] of [['out', O], ['lse', L], ['dOut', dO]] as const) checkSameDevice(op, name, t, q, 'q');
  let dL: Tensor | null = null;
  if (dLse !== undefined) {
    dL = checkTensor(op, 'dLse', dLse);
    checkShapeEquals(op, 'dLse', dL, lseShape);
    checkDType(op, 'dLse', dL, 'float32');
    checkSameDevice(op, 'dLse', dL, q, 'q');
  }
  return { O, L, dO, dL };
}
