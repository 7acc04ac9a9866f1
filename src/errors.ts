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
