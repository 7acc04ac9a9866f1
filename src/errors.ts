/**
 * AttnkitError: every error attnkit raises, synchronous or from enqueued work. `code` is stable
 * (ERR_ATTNKIT_SHAPE, _DTYPE, _DEVICE, _DISPOSED, _UNSUPPORTED, _ARGUMENT, _OOM, _CUDA, _INTERNAL),
 * `op` names the operation and `argument` the offending argument when there is one.
 */

/** The stable error codes of AttnkitError. */
export type AttnkitErrorCode =
  | 'ERR_ATTNKIT_SHAPE'
  | 'ERR_ATTNKIT_DTYPE'
  | 'ERR_ATTNKIT_DEVICE'
  | 'ERR_ATTNKIT_DISPOSED'
  | 'ERR_ATTNKIT_UNSUPPORTED'
  | 'ERR_ATTNKIT_ARGUMENT'
  | 'ERR_ATTNKIT_OOM'
  | 'ERR_ATTNKIT_CUDA'
  | 'ERR_ATTNKIT_INTERNAL'
  | 'ERR_ATTNKIT_LOAD';

/**
 * The error attnkit throws, synchronously from a call that rejects its arguments or as the rejection
 * of a wait (`synchronize()`, `toArray()`) for enqueued work that failed. Branch on `code`, which is
 * stable; the message is for people.
 *
 * @example
 * ```ts
 * try {
 *   attention(q, k, v, { window: [-2, 0] });
 * } catch (e) {
 *   if (e instanceof AttnkitError && e.code === 'ERR_ATTNKIT_ARGUMENT') console.error(e.op, e.argument, e.message);
 *   else throw e;
 * }
 * ```
 */
export class AttnkitError extends Error {
  /** What went wrong, stable across versions (the list: AttnkitErrorCode). */
  readonly code: AttnkitErrorCode;
  /** The operation that raised it (`attention`, `na2dBackward`, `toArray`, ...). */
  readonly op: string;
  /** The offending argument or option, when there is one. */
  readonly argument: string | undefined;

  /** @internal attnkit builds its errors; user code only catches them. */
  constructor(code: AttnkitErrorCode, op: string, message: string, argument?: string) {
    super(message);
    this.name = 'AttnkitError';
    this.code = code;
    this.op = op;
    this.argument = argument;
  }
}

/** Builds "`op`: expected `what` for 'arg', received `got`". */
export function argError(
  code: AttnkitErrorCode,
  op: string,
  arg: string,
  expected: string,
  received: string,
): AttnkitError {
  return new AttnkitError(code, op, `${op}: expected '${arg}' ${expected}, received ${received}`, arg);
}

/** The one boundary for native errors: turns the binding's {code, op} errors into AttnkitError. */
export function fromNative(e: unknown, op: string): unknown {
  if (e instanceof AttnkitError) return e;
  if (e instanceof Error) {
    const code = (e as Error & { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('ERR_ATTNKIT_')) {
      const nativeOp = (e as Error & { op?: string }).op;
      const err = new AttnkitError(code as AttnkitErrorCode, nativeOp || op, e.message);
      if (e.stack) err.stack = `${err.name}: ${err.message}\n${e.stack.split('\n').slice(1).join('\n')}`;
      return err;
    }
  }
  return e;
}

/** Runs a native call, converting its errors. */
export function callNative<T>(op: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e, op);
  }
}

/** Awaits a native promise, converting its rejection; the caller's stack is kept for context. */
export async function awaitNative<T>(op: string, p: Promise<T>): Promise<T> {
  const caller = new Error();
  try {
    return await p;
  } catch (e) {
    const err = fromNative(e, op);
    if (err instanceof AttnkitError && caller.stack)
      err.stack = `${err.name}: ${err.message}\n${caller.stack.split('\n').slice(1).join('\n')}`;
    throw err;
  }
}

/**
 * A value as an error message shows it, for any value a caller may pass: numbers as JavaScript
 * writes them (NaN, -0, Infinity), strings quoted, `3n` for a bigint, arrays and plain objects in a
 * JSON-like form (two levels deep, long ones cut), class instances by their class (`a Tensor`). It
 * never throws: a BigInt, a cycle or a throwing getter must not turn an argument error into a raw
 * TypeError.
 */
export function show(v: unknown, depth = 0): string {
  switch (typeof v) {
    case 'bigint':
      return `${v}n`;
    case 'undefined':
      return 'undefined';
    case 'function':
      return 'a function';
    case 'symbol':
      return v.toString();
    case 'number':
      return Object.is(v, -0) ? '-0' : String(v);
    case 'string':
      return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
    case 'boolean':
      return String(v);
  }
  if (v === null) return 'null';
  try {
    if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of ${(v as unknown as ArrayLike<unknown>).length ?? v.byteLength} elements`;
    const ctor = (v as object).constructor?.name;
    if (Array.isArray(v)) {
      if (depth >= 2) return v.length === 0 ? '[]' : '[...]';
      const items = v.slice(0, 8).map((x) => show(x, depth + 1));
      return `[${items.join(',')}${v.length > 8 ? `,... (${v.length} entries)` : ''}]`;
    }
    if (ctor !== undefined && ctor !== 'Object') return `a ${ctor}`;
    if (depth >= 2) return '{...}';
    const keys = Object.keys(v as object);
    const items = keys.slice(0, 8).map((k) => `${JSON.stringify(k)}:${show((v as Record<string, unknown>)[k], depth + 1)}`);
    return `{${items.join(',')}${keys.length > 8 ? ',...' : ''}}`;
  } catch {
    return 'an object';
  }
}

/** An option's value, or `dflt` when it is absent: only `undefined` is absent (`null` is a value, and refused). */
export function orDefault<T>(v: unknown, dflt: T): unknown {
  return v === undefined ? dflt : v;
}

/**
 * The largest token count, axis length or list length attnkit accepts: the kernels and the mask
 * lists index with int32, so anything from 2^31 on is refused at once with ERR_ATTNKIT_SHAPE
 * (rather than hanging while a builder loops, or failing later in an allocation).
 */
export const MAX_EXTENT = 2 ** 31 - 1;

/**
 * An options object: undefined gives `{}`; anything but a plain object is refused, and so is any
 * key not in `known` (a misspelt option must not be ignored silently). The message lists the known
 * names.
 */
export function checkKnownOptions(op: string, opts: unknown, known: readonly string[], arg = 'options'): Record<string, unknown> {
  if (opts === undefined) return {};
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts) || ArrayBuffer.isView(opts))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, arg, 'to be an object', show(opts));
  for (const key of Object.keys(opts)) {
    if (!known.includes(key))
      throw new AttnkitError(
        'ERR_ATTNKIT_ARGUMENT',
        op,
        arg === 'options'
          ? `${op}: unknown option '${key}' (known options: ${known.join(', ')})`
          : `${op}: unknown key '${key}' in '${arg}' (known keys: ${known.join(', ')})`,
        key,
      );
  }
  return opts as Record<string, unknown>;
}

/** A boolean option, read strictly (`'false'` and `1` are refused, not taken by truthiness). */
export function checkBoolean(op: string, arg: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw argError('ERR_ATTNKIT_ARGUMENT', op, arg, 'to be a boolean', show(v));
  return v;
}

/**
 * An integer in [min, max]: a non-number, NaN, ±Infinity, a fraction or a value below `min` is
 * refused with `code` (default ERR_ATTNKIT_ARGUMENT); a value above `max` too, except that above the
 * default max (MAX_EXTENT) it is ERR_ATTNKIT_SHAPE: a size attnkit cannot index. `what` follows the
 * expectation in the message (" on axis 1").
 */
export function checkInteger(
  op: string,
  arg: string,
  v: unknown,
  { min = 0, max = MAX_EXTENT, code = 'ERR_ATTNKIT_ARGUMENT' as AttnkitErrorCode, what = '' } = {},
): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    const kind = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`;
    throw argError(code, op, arg, `to be ${kind}${what}`, show(v));
  }
  if (v > max) throw argError(max === MAX_EXTENT ? 'ERR_ATTNKIT_SHAPE' : code, op, arg, `to be ${max === MAX_EXTENT ? '< 2^31' : `<= ${max}`}${what}`, show(v));
  return v;
}

/**
 * A per-axis option: one value for every axis, or an array of exactly `rank` values (na2d's
 * `kernelSize: 7` or `[7, 5]`). `ok` checks each value; `what` says what a value must be.
 */
export function checkPerAxis<T>(
  op: string,
  arg: string,
  v: unknown,
  dflt: T | undefined,
  rank: number,
  ok: (x: unknown) => boolean,
  what: string,
): T[] {
  if (v === undefined) {
    if (dflt === undefined) throw new AttnkitError('ERR_ATTNKIT_ARGUMENT', op, `${op}: missing option '${arg}'`, arg);
    return new Array<T>(rank).fill(dflt);
  }
  const arr: unknown[] = Array.isArray(v) ? v : new Array(rank).fill(v);
  if (arr.length !== rank)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, arg, `to be ${what} or ${rank} of them (one per axis)`, show(v));
  arr.forEach((x, a) => {
    if (!ok(x)) throw argError('ERR_ATTNKIT_ARGUMENT', op, arg, `to be ${what} on axis ${a}`, show(x));
  });
  return arr as T[];
}
