/**
 * The dtype table: one `as const` object from which the runtime map and the types derive. The
 * numeric codes are shared with native/include/attnkit/dtype.h and must not change.
 */
export const DTYPES = {
  float32: { code: 0, bytes: 4, float: true },
  float16: { code: 1, bytes: 2, float: true },
  bfloat16: { code: 2, bytes: 2, float: true },
  int32: { code: 3, bytes: 4, float: false },
  uint8: { code: 4, bytes: 1, float: false },
} as const;

/** Element type of a tensor. */
export type DType = keyof typeof DTYPES;
/** Element types the attention ops accept. */
export type FloatDType = 'float32' | 'float16' | 'bfloat16';

/** True when `x` names a dtype. */
export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, x);
}

/** The typed array `toArray()` returns for a dtype (float16/bfloat16 widen to Float32Array). */
export type ArrayFor<T extends DType> = T extends 'int32'
  ? Int32Array
  : T extends 'uint8'
    ? Uint8Array
    : Float32Array;
