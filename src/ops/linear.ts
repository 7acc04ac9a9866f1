/**
 * Linear attention (docs/linear.md): causal (chunked, 64 tokens, Lightning-Attention-2 style) and
 * non-causal, per-head decay, feature maps phi on q and k, optional normalization by q . (key sum),
 * a float32 recurrent state in and out, and a one-token decode step.
 *
 *   S_t = a_t * S_{t-1} + phi(k_t) v_t^T        (S_{-1} = initialState, [Dk, Dv] per (b, h))
 *   o_t = scale * phi(q_t)^T S_t
 *   a_t = decay[h] * exp(gate[b, t, h])           (the gate: optional per-token log decays <= 0)
 *
 * Layout [B, N, H, D] (heads last), k/v may have fewer heads (GQA), the value head dim may differ.
 */
import type { FloatDType } from '../dtype.js';
import { AttnkitError, argError, callNative, show } from '../errors.js';
import { native, type LinearParams } from '../native.js';
import { empty, type Tensor } from '../tensor.js';
import type { Stream } from '../stream.js';
import {
  checkBool,
  checkDim,
  checkDType,
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

/** Feature maps applied to q and k inside the kernel (with their gradients). */
export const LINEAR_FEATURE_MAPS = ['identity', 'elu1', 'relu'] as const;
/** `'identity'`: phi(x) = x; `'elu1'`: elu(x) + 1 (positive); `'relu'`: max(x, 0). */
export type LinearFeatureMap = (typeof LINEAR_FEATURE_MAPS)[number];

/** The epsilon of `normalize`: out = num / (den + 1e-6). */
export const LINEAR_NORMALIZE_EPS = 1e-6;

/** Per-head decay lambda in (0, 1]: one number for every head, or one per query head. */
export type LinearDecay = number | readonly number[] | Float32Array | Float64Array;

/** Options of `linearAttention`. */
export interface LinearAttentionOptions {
  /** Causal (default true). Non-causal: every query reads the state after all N tokens. */
  causal?: boolean;
  /**
   * Per-head decay lambda in (0, 1] (default 1: plain linear attention). A number applies to every
   * head; an array gives one value per query head. Causal only. Not differentiated.
   */
  decay?: LinearDecay;
  /** Scale of phi(q) (default 1/sqrt(D), as FLA; Lightning Attention uses 1). */
  scale?: number;
  /** Feature map on q and k (default 'identity'). */
  featureMap?: LinearFeatureMap;
  /**
   * Divide by the denominator: out_t = num_t / (scale phi(q_t) . z_t + 1e-6) where z_t is the key
   * sum, decayed like the state. The state then has Dv + 1 columns, the last one holding z. Meant
   * for positive feature maps ('elu1', 'relu'): with 'identity' the denominator can cross zero.
   */
  normalize?: boolean;
  /**
   * Data-dependent decay: per-token, per-query-head log decays g <= 0, float32 [B, N, H] (e.g. a
   * `logsigmoid` of a projection, as GLA / Mamba-2 "simple gating"). The state decays by
   * decay[h] * exp(g[b, t, h]) at token t. Causal only; every value must be finite and <= 0 (the
   * kernel checks when it runs: a bad value fails the outputs with ERR_ATTNKIT_ARGUMENT).
   * Differentiated: the backward returns `dGate`.
   */
  gate?: Tensor;
  /** float32 [B, H, D, Dv] ([B, H, D, Dv + 1] with normalize); default zero. */
  initialState?: Tensor;
  /** Also return the state after the last token (default false). */
  returnFinalState?: boolean;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** Gradients of a linear attention. */
export interface LinearAttentionGrads {
  /** [B, N, H, D] */
  dq: Tensor;
  /** [B, N, Hkv, D] */
  dk: Tensor;
  /** [B, N, Hkv, Dv] */
  dv: Tensor;
  /** float32, shape of the initial state; null when no `initialState` was given. */
  dInitialState: Tensor | null;
  /** float32 [B, N, H]: gradient of the gate; null when no `gate` was given. */
  dGate: Tensor | null;
}

/** What `linearAttention` returns. */
export interface LinearAttentionResult {
  /** [B, N, H, Dv], dtype of q */
  out: Tensor;
  /** float32 [B, H, D, Dv (+1)] when `returnFinalState`, else null */
  finalState: Tensor | null;
  /** Gradients given dOut and, optionally, the gradient of the final state. */
  backward(dOut: Tensor, dFinalState?: Tensor): LinearAttentionGrads;
}

/** Options of `linearAttentionBackward`: the forward's, and the gradient of its final state. */
export interface LinearAttentionBackwardOptions extends LinearAttentionOptions {
  /** Gradient of the final state, float32 [B, H, D, Dv (+1)]. */
  dFinalState?: Tensor;
}

/** Options of `linearAttentionStep`: those of the prefill that made the state. */
export interface LinearAttentionStepOptions {
  /** Per-head decay lambda in (0, 1] (default 1). */
  decay?: LinearDecay;
  /** This token's log decays g <= 0, float32 [B, H]: the state decays by decay[h] * exp(g[b, h]). */
  gate?: Tensor;
  /** default 1/sqrt(D) */
  scale?: number;
  /** Feature map on q and k (default 'identity'). */
  featureMap?: LinearFeatureMap;
  /** Divide by the denominator (the state's last column); default false. */
  normalize?: boolean;
  /** Stream to run on; default: the device's default stream. */
  stream?: Stream;
}

/** What `linearAttentionStep` returns. */
export interface LinearAttentionStepResult {
  /** [B, 1, H, Dv] */
  out: Tensor;
  /** The advanced state, a new float32 tensor [B, H, D, Dv (+1)]; the input state is unchanged. */
  state: Tensor;
}

const KNOWN = ['causal', 'decay', 'gate', 'scale', 'featureMap', 'normalize', 'initialState', 'returnFinalState', 'stream'] as const;
const KNOWN_STEP = ['decay', 'gate', 'scale', 'featureMap', 'normalize', 'stream'] as const;

interface Problem {
  params: LinearParams;
  dtype: FloatDType;
  stream: Stream;
  initialState: Tensor | null;
  gate: Tensor | null;
  returnFinalState: boolean;
}

/**
 * The gate: a float32 tensor of `shape` ([B, N, H], or [B, H] for the step) on q's device, causal
 * only. Its values (finite, <= 0) are checked by the kernel: the data may still be being written.
 */
function checkGate(op: string, g: unknown, shape: number[], layout: string, causal: boolean, ref: Tensor): Tensor | null {
  if (g === undefined) return null;
  const G = checkTensor(op, 'gate', g);
  checkDType(op, 'gate', G, 'float32');
  checkSameDevice(op, 'gate', G, ref, 'q');
  if (G.shape.length !== shape.length || G.shape.some((d, i) => d !== shape[i]))
    throw argError('ERR_ATTNKIT_SHAPE', op, 'gate', `to have shape [${shape.join(', ')}] (${layout})`, `[${G.shape.join(', ')}]`);
  if (!causal)
    throw new AttnkitError(
      'ERR_ATTNKIT_UNSUPPORTED',
      op,
      `${op}: 'gate' needs causal attention (non-causal linear attention has no order to decay along); received causal: false with a gate`,
      'gate',
    );
  return G;
}

function checkDecay(op: string, d: unknown, H: number, causal: boolean): Float64Array {
  const out = new Float64Array(H).fill(1);
  if (d === undefined) return out;
  const inRange = (x: unknown) => typeof x === 'number' && x > 0 && x <= 1;
  let values: ArrayLike<unknown>;
  if (typeof d === 'number') {
    if (!inRange(d)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'decay', 'to lie in (0, 1]', show(d));
    values = out.map(() => d);
  } else if (Array.isArray(d) || d instanceof Float32Array || d instanceof Float64Array) {
    values = d as ArrayLike<unknown>;
    if (values.length !== H)
      throw argError('ERR_ATTNKIT_SHAPE', op, 'decay', `to hold one value per query head (${H})`, `${values.length} values`);
  } else {
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'decay', 'to be a number or an array of numbers (one per head)', d === null ? 'null' : typeof d);
  }
  for (let i = 0; i < H; i++) {
    const x = values[i];
    if (!inRange(x))
      throw argError('ERR_ATTNKIT_ARGUMENT', op, 'decay', 'to lie in (0, 1] for every head', `${show(x)} at head ${i}`);
    out[i] = x as number;
  }
  if (!causal && out.some((x) => x !== 1))
    throw new AttnkitError(
      'ERR_ATTNKIT_UNSUPPORTED',
      op,
      `${op}: 'decay' needs causal attention (non-causal linear attention has no order to decay along); received causal: false with decay ${Array.from(out).join(', ')}`,
      'decay',
    );
  return out;
}

function checkFeatureMap(op: string, f: unknown): number {
  if (f === undefined) return 0;
  const i = LINEAR_FEATURE_MAPS.indexOf(f as LinearFeatureMap);
  if (i < 0)
    throw argError(
      'ERR_ATTNKIT_ARGUMENT',
      op,
      'featureMap',
      `to be one of ${LINEAR_FEATURE_MAPS.map((x) => `'${x}'`).join(', ')}`,
      typeof f === 'string' ? `'${f}'` : show(f),
    );
  return i;
}

function stateShape(p: LinearParams): number[] {
  return [p.B, p.H, p.D, p.Dv + (p.normalize ? 1 : 0)];
}

/** Checks a float32 state tensor's shape, naming the extra key-sum column under normalize. */
function checkState(op: string, arg: string, t: unknown, p: LinearParams, ref: Tensor): Tensor {
  const S = checkTensor(op, arg, t);
  checkDType(op, arg, S, 'float32');
  checkSameDevice(op, arg, S, ref, 'q');
  const want = stateShape(p);
  if (S.shape.length !== 4 || S.shape.some((d, i) => d !== want[i]))
    throw argError(
      'ERR_ATTNKIT_SHAPE',
      op,
      arg,
      `to have shape [${want.join(', ')}] ([B, H, D, Dv${p.normalize ? ' + 1' : ''}]${p.normalize ? ': with normalize the last column holds the key sum' : ''})`,
      `[${S.shape.join(', ')}]`,
    );
  return S;
}

function parseQkv(op: string, q: unknown, k: unknown, v: unknown) {
  const Q = checkTensor(op, 'q', q);
  const K = checkTensor(op, 'k', k);
  const V = checkTensor(op, 'v', v);
  const dtype = checkFloat(op, 'q', Q);
  checkSameDType(op, 'k', K, Q, 'q');
  checkSameDType(op, 'v', V, Q, 'q');
  checkSameDevice(op, 'k', K, Q, 'q');
  checkSameDevice(op, 'v', V, Q, 'q');
  checkRank(op, 'q', Q, 4, '[B, N, H, D]');
  checkRank(op, 'k', K, 4, '[B, N, Hkv, D]');
  checkRank(op, 'v', V, 4, '[B, N, Hkv, Dv]');
  const [B, N, H, D] = Q.shape as [number, number, number, number];
  const Hkv = K.shape[2]!;
  const Dv = V.shape[3]!;
  checkDim(op, 'k', 'batch size', K.shape[0]!, B, "q's batch");
  checkDim(op, 'v', 'batch size', V.shape[0]!, B, "q's batch");
  checkDim(op, 'k', 'sequence length', K.shape[1]!, N, "q's sequence length");
  checkDim(op, 'v', 'sequence length', V.shape[1]!, N, "q's sequence length");
  checkDim(op, 'k', 'head dim', K.shape[3]!, D, "q's head dim");
  checkDim(op, 'v', 'kv head count', V.shape[2]!, Hkv, "k's head count");
  if (B < 1 || H < 1) throw argError('ERR_ATTNKIT_SHAPE', op, 'q', 'to have B >= 1 and H >= 1', `[${Q.shape.join(', ')}]`);
  if (Hkv < 1 || H % Hkv !== 0)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'k', `to have a head count that divides q's ${H} heads (GQA/MQA)`, String(Hkv));
  checkHeadDim(op, 'q', D);
  checkHeadDim(op, 'v', Dv);
  return { Q, dtype, B, N, H, Hkv, D, Dv };
}

function parse(op: string, q: unknown, k: unknown, v: unknown, options: unknown, known: readonly string[] = KNOWN): Problem {
  const o = checkOptions(op, options, known);
  const { Q, dtype, B, N, H, Hkv, D, Dv } = parseQkv(op, q, k, v);
  const causal = checkBool(op, 'causal', o.causal, true);
  const decay = checkDecay(op, o.decay, H, causal);
  const scale = checkScale(op, o.scale, 1 / Math.sqrt(D));
  const featureMap = checkFeatureMap(op, o.featureMap);
  const normalize = checkBool(op, 'normalize', o.normalize, false);
  const returnFinalState = checkBool(op, 'returnFinalState', o.returnFinalState, false);
  const stream = checkStream(op, o.stream, Q, { B, Nq: N, Nk: N, H, Hkv, D, Dv });
  const params: LinearParams = { B, N, H, Hkv, D, Dv, normalize, causal, featureMap, scale, eps: LINEAR_NORMALIZE_EPS, decay };
  const initialState = o.initialState === undefined ? null : checkState(op, 'initialState', o.initialState, params, Q);
  const step = known === KNOWN_STEP;
  const gate = step ? checkGate(op, o.gate, [B, H], '[B, H]: one token', causal, Q) : checkGate(op, o.gate, [B, N, H], '[B, N, H]', causal, Q);
  return { params, dtype, stream, initialState, gate, returnFinalState };
}

/**
 * Linear attention over q [B, N, H, D], k [B, N, Hkv, D], v [B, N, Hkv, Dv]. Validates at once,
 * enqueues the kernel and returns the (pending) output, the final state when asked, and a backward.
 *
 * @example
 * ```ts
 * const { out, finalState } = linearAttention(q, k, v, { decay: 0.99, featureMap: 'elu1', normalize: true, returnFinalState: true });
 * ```
 */
export function linearAttention(q: Tensor, k: Tensor, v: Tensor, options: LinearAttentionOptions = {}): LinearAttentionResult {
  const op = 'linearAttention';
  const { params, dtype, stream, initialState, gate, returnFinalState } = parse(op, q, k, v, options);
  const { B, N, H, Dv } = params;
  const out = empty([B, N, H, Dv], { dtype, device: q.device });
  const finalState = returnFinalState ? empty(stateShape(params), { dtype: 'float32', device: q.device }) : null;
  callNative(op, () =>
    native.linearForward(
      stream.native,
      q._native(op, 'q'),
      k._native(op, 'k'),
      v._native(op, 'v'),
      initialState ? initialState._native(op, 'initialState') : null,
      out._native(op, 'out'),
      finalState ? finalState._native(op, 'finalState') : null,
      params,
      gate ? gate._native(op, 'gate') : null,
    ),
  );
  out._setStream(stream);
  finalState?._setStream(stream);
  return {
    out,
    finalState,
    backward: (dOut: Tensor, dFinalState?: Tensor) => linearAttentionBackward(q, k, v, dOut, { ...options, dFinalState }),
  };
}

/**
 * Functional backward of `linearAttention`: gradients of L = <dOut, out> + <dFinalState, finalState>
 * for q, k, v and the initial state. Needs no saved forward outputs: the states are recomputed.
 *
 * @example
 * ```ts
 * const { dq, dk, dv } = linearAttentionBackward(q, k, v, dOut, { decay: 0.99 });
 * ```
 */
export function linearAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dOut: Tensor,
  options: LinearAttentionBackwardOptions = {},
): LinearAttentionGrads {
  const op = 'linearAttentionBackward';
  const { dFinalState, ...rest } = checkOptions(op, options, [...KNOWN, 'dFinalState']) as LinearAttentionBackwardOptions;
  const { params, dtype, stream, initialState, gate } = parse(op, q, k, v, rest);
  const { B, N, H, Hkv, D, Dv } = params;
  const dO = checkTensor(op, 'dOut', dOut);
  checkShapeEquals(op, 'dOut', dO, [B, N, H, Dv]);
  checkSameDType(op, 'dOut', dO, q, 'q');
  checkSameDevice(op, 'dOut', dO, q, 'q');
  const dST = dFinalState === undefined ? null : checkState(op, 'dFinalState', dFinalState, params, q);
  const dq = empty([B, N, H, D], { dtype, device: q.device });
  const dk = empty([B, N, Hkv, D], { dtype, device: q.device });
  const dv = empty([B, N, Hkv, Dv], { dtype, device: q.device });
  const dInitialState = initialState ? empty(stateShape(params), { dtype: 'float32', device: q.device }) : null;
  const dGate = gate ? empty([B, N, H], { dtype: 'float32', device: q.device }) : null;
  callNative(op, () =>
    native.linearBackward(
      stream.native,
      q._native(op, 'q'),
      k._native(op, 'k'),
      v._native(op, 'v'),
      initialState ? initialState._native(op, 'initialState') : null,
      dO._native(op, 'dOut'),
      dST ? dST._native(op, 'dFinalState') : null,
      dq._native(op, 'dq'),
      dk._native(op, 'dk'),
      dv._native(op, 'dv'),
      dInitialState ? dInitialState._native(op, 'dInitialState') : null,
      params,
      gate ? gate._native(op, 'gate') : null,
      dGate ? dGate._native(op, 'dGate') : null,
    ),
  );
  for (const t of [dq, dk, dv, dInitialState, dGate]) t?._setStream(stream);
  return { dq, dk, dv, dInitialState, dGate };
}

/**
 * One decoding step: q [B, 1, H, D], k [B, 1, Hkv, D], v [B, 1, Hkv, Dv] and the state after the
 * previous tokens (a `finalState`, a previous step's `state`, or null for an empty prefix). Same
 * convention as the chunked path (decay, then add phi(k) v^T, then read), so a prefill followed by
 * steps equals one longer prefill.
 *
 * @example
 * ```ts
 * const prefill = linearAttention(q, k, v, { decay: 0.99, returnFinalState: true });
 * let state = prefill.finalState;
 * const step = linearAttentionStep(qNext, kNext, vNext, state, { decay: 0.99 }); // q [B, 1, H, D]
 * state = step.state;
 * ```
 */
export function linearAttentionStep(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  state: Tensor | null,
  options: LinearAttentionStepOptions = {},
): LinearAttentionStepResult {
  const op = 'linearAttentionStep';
  const { params, dtype, stream, gate } = parse(op, q, k, v, options, KNOWN_STEP);
  if (params.N !== 1)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'q', 'to have sequence length 1 ([B, 1, H, D]: one token per sequence)', `[${q.shape.join(', ')}]`);
  const S = state === null || state === undefined ? null : checkState(op, 'state', state, params, q);
  const { B, H, Dv } = params;
  const out = empty([B, 1, H, Dv], { dtype, device: q.device });
  const next = empty(stateShape(params), { dtype: 'float32', device: q.device });
  callNative(op, () =>
    native.linearStep(
      stream.native,
      q._native(op, 'q'),
      k._native(op, 'k'),
      v._native(op, 'v'),
      S ? S._native(op, 'state') : null,
      out._native(op, 'out'),
      next._native(op, 'state'),
      params,
      gate ? gate._native(op, 'gate') : null,
    ),
  );
  out._setStream(stream);
  next._setStream(stream);
  return { out, state: next };
}
