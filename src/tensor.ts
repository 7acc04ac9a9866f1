/**
 * Tensor (DESIGN §2): device, dtype, shape and contiguous row-major storage owned by native code
 * (64-byte aligned on the CPU). A tensor remembers the stream that produces it; reading it waits
 * for that work without blocking the event loop.
 */
import { DTYPES, isDType, type ArrayFor, type DType } from './dtype.js';
import { AttnkitError, argError, awaitNative, callNative } from './errors.js';
import { native, type NativeStorage } from './native.js';
import { defaultStream, parseDevice, Stream, type Device } from './stream.js';

const registry = new FinalizationRegistry<NativeStorage>((storage) => storage.dispose());

export type TensorData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | readonly number[];

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

export class Tensor<T extends DType = DType> {
  readonly dtype: T;
  readonly device: Device;
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  #storage: NativeStorage | null;
  #stream: Stream;
  /** The tensor whose storage this view shares (null for a tensor that owns its storage). */
  #base: Tensor | null;

  /** @internal Use the factories (`tensor`, `empty`, `zeros`, `randn`) or `reshape`. */
  constructor(
    storage: NativeStorage,
    dtype: T,
    shape: readonly number[],
    device: Device,
    stream: Stream,
    base: Tensor | null = null,
  ) {
    this.#storage = storage;
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.size = shape.reduce((a, b) => a * b, 1);
    this.device = device;
    this.#stream = stream;
    this.#base = base;
    if (!base) registry.register(this, storage, this);
  }

  /** True once `dispose()` has been called (on this tensor, or on the tensor a view shares). */
  get disposed(): boolean {
    return this.#storage === null || (this.#base !== null && this.#base.disposed);
  }

  /** Bytes of storage (0 once disposed). */
  get bytes(): number {
    return this.#storage ? this.#storage.bytes : 0;
  }

  /** The stream whose work produces this tensor. */
  get stream(): Stream {
    return this.#stream;
  }

  /** @internal The native handle, for ops; throws ERR_ATTNKIT_DISPOSED after dispose(). */
  _native(op: string, arg: string): NativeStorage {
    if (!this.#storage || (this.#base && this.#base.disposed))
      throw new AttnkitError('ERR_ATTNKIT_DISPOSED', op, `${op}: '${arg}' was disposed and cannot be used`, arg);
    return this.#storage;
  }

  /** @internal Marks this tensor (and the storage it shares) as produced by work on `stream`. */
  _setStream(stream: Stream): void {
    this.#stream = stream;
  }

  /**
   * Copies the contents back to JavaScript once the work producing them has finished.
   * float16/bfloat16 widen to Float32Array unless `{raw: true}` (then Uint16Array bits).
   */
  async toArray(): Promise<ArrayFor<T>>;
  async toArray(opts: { raw: true }): Promise<ArrayFor<T> | Uint16Array>;
  async toArray(opts: { raw?: boolean } = {}): Promise<ArrayFor<T> | Uint16Array> {
    const storage = this._native('toArray', 'tensor');
    const raw = opts.raw === true;
    const buf = await awaitNative('toArray', this.#stream.native.read(storage, !raw));
    switch (this.dtype) {
      case 'int32':
        return new Int32Array(buf) as ArrayFor<T>;
      case 'uint8':
        return new Uint8Array(buf) as ArrayFor<T>;
      case 'float16':
      case 'bfloat16':
        return raw ? new Uint16Array(buf) : (new Float32Array(buf) as ArrayFor<T>);
      default:
        return new Float32Array(buf) as ArrayFor<T>;
    }
  }

  /**
   * A copy on another device or with another dtype. The same device and dtype return this tensor
   * itself (as PyTorch does).
   */
  to<U extends DType>(target: U): Tensor<U>;
  to(target: Device): Tensor<T>;
  to(target: DType | Device): Tensor<DType> {
    const storage = this._native('to', 'tensor');
    if (isDType(target)) {
      if (target === this.dtype) return this;
      const out = empty(this.shape, { dtype: target, device: this.device });
      callNative('to', () => this.#stream.native.convert(storage, out._native('to', 'out')));
      out._setStream(this.#stream);
      return out;
    }
    const device = parseDevice('to', 'target', target);
    if (device === this.device) return this;
    return this; // unreachable until a second device kind exists: parseDevice rejects cuda today
  }

  /**
   * A view with another shape of the same number of elements, sharing this tensor's storage (no
   * copy; like PyTorch's `view` on a contiguous tensor). Disposing a view only retires the view;
   * disposing the tensor that owns the storage frees it and retires every view of it.
   */
  reshape(shape: readonly number[]): Tensor<T> {
    const storage = this._native('reshape', 'tensor');
    const s = checkShape('reshape', shape);
    const n = s.reduce((a, b) => a * b, 1);
    if (n !== this.size)
      throw argError('ERR_ATTNKIT_SHAPE', 'reshape', 'shape', `to hold ${this.size} elements (as [${this.shape.join(', ')}])`, `[${s.join(', ')}] (${n} elements)`);
    return new Tensor(storage, this.dtype, s, this.device, this.#stream, this.#base ?? this);
  }

  /** Releases the storage now (idempotent). Work already enqueued on it completes safely. */
  dispose(): void {
    if (!this.#storage) return;
    if (this.#base) {
      this.#storage = null;  // a view: the owner frees the storage
      return;
    }
    registry.unregister(this);
    this.#storage.dispose();
    this.#storage = null;
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape))
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', 'to be an array of non-negative integers', typeof shape);
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      throw argError(
        'ERR_ATTNKIT_SHAPE',
        op,
        'shape',
        'to hold non-negative integers',
        `${String(d)} at position ${i}`,
      );
  }
  const n = shape.reduce((a: number, b: number) => a * b, 1);
  if (n > Number.MAX_SAFE_INTEGER) throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', 'to have fewer elements', String(n));
  return shape as number[];
}

function checkDType(op: string, dtype: unknown): DType {
  if (!isDType(dtype))
    throw argError(
      'ERR_ATTNKIT_DTYPE',
      op,
      'dtype',
      `to be one of ${Object.keys(DTYPES).join(', ')}`,
      JSON.stringify(dtype),
    );
  return dtype;
}

function allocate<T extends DType>(op: string, shape: readonly number[], dtype: T, device: Device, zero: boolean): Tensor<T> {
  const n = shape.reduce((a, b) => a * b, 1);
  const storage = callNative(op, () => new native.NativeStorage(DTYPES[dtype].code, n, zero));
  return new Tensor(storage, dtype, shape, device, defaultStream(device));
}

/** An uninitialized tensor. */
export function empty<T extends DType = 'float32'>(shape: readonly number[], opts: { dtype?: T; device?: Device } = {}): Tensor<T> {
  const s = checkShape('empty', shape);
  const dtype = checkDType('empty', opts.dtype ?? 'float32') as T;
  const device = parseDevice('empty', 'device', opts.device ?? 'cpu');
  return allocate('empty', s, dtype, device, false);
}

/** A tensor of zeros. */
export function zeros<T extends DType = 'float32'>(shape: readonly number[], opts: { dtype?: T; device?: Device } = {}): Tensor<T> {
  const s = checkShape('zeros', shape);
  const dtype = checkDType('zeros', opts.dtype ?? 'float32') as T;
  const device = parseDevice('zeros', 'device', opts.device ?? 'cpu');
  return allocate('zeros', s, dtype, device, true);
}

/**
 * Standard normal numbers. The same `seed` gives the same numbers on every run and for every
 * thread count (a counter-based generator indexed by element).
 */
export function randn<T extends DType = 'float32'>(
  shape: readonly number[],
  opts: { seed?: number; dtype?: T; device?: Device; stream?: Stream } = {},
): Tensor<T> {
  const s = checkShape('randn', shape);
  const dtype = checkDType('randn', opts.dtype ?? 'float32') as T;
  if (!DTYPES[dtype].float)
    throw argError('ERR_ATTNKIT_DTYPE', 'randn', 'dtype', 'to be a floating-point dtype', dtype);
  const device = parseDevice('randn', 'device', opts.device ?? 'cpu');
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw argError('ERR_ATTNKIT_ARGUMENT', 'randn', 'seed', 'to be a non-negative safe integer', String(seed));
  const t = allocate('randn', s, dtype, device, false);
  const stream = opts.stream ?? defaultStream(device);
  callNative('randn', () => stream.native.randn(t._native('randn', 'out'), seed));
  t._setStream(stream);
  return t;
}

/** Source code the binding's write() takes for Float64Array data (not a tensor dtype). */
const FLOAT64_SOURCE = 100;

function defaultDTypeFor(data: TensorData): DType {
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint8Array) return 'uint8';
  return 'float32';
}

/**
 * A tensor holding a copy of `data`. Float data converts to float16/bfloat16 with round to nearest
 * even; a Uint16Array is taken as raw float16/bfloat16 bits.
 */
export function tensor<T extends DType = 'float32'>(data: TensorData, shape?: readonly number[], opts: { dtype?: T; device?: Device } = {}): Tensor<T> {
  const op = 'tensor';
  const isView = ArrayBuffer.isView(data);
  if (!isView && !Array.isArray(data))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'data', 'to be a typed array or an array of numbers', typeof data);
  const length = (data as ArrayLike<number>).length;
  const s = checkShape(op, shape ?? [length]);
  const n = s.reduce((a, b) => a * b, 1);
  if (n !== length)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', `to hold ${length} elements (the data's length)`, `[${s.join(', ')}] (${n} elements)`);
  const dtype = checkDType(op, opts.dtype ?? defaultDTypeFor(data)) as T;
  const device = parseDevice(op, 'device', opts.device ?? 'cpu');
  let src: ArrayBufferView;
  let srcDtype: DType | 'float64';
  if (data instanceof Uint16Array) {
    if (dtype !== 'float16' && dtype !== 'bfloat16')
      throw argError('ERR_ATTNKIT_DTYPE', op, 'dtype', "to be 'float16' or 'bfloat16' for Uint16Array data (raw bits)", dtype);
    src = data;
    srcDtype = dtype;
  } else if (data instanceof Int32Array && dtype === 'int32') {
    src = data;
    srcDtype = 'int32';
  } else if (data instanceof Uint8Array && dtype === 'uint8') {
    src = data;
    srcDtype = 'uint8';
  } else if (dtype === 'int32') {
    src = Int32Array.from(data as ArrayLike<number>);
    srcDtype = 'int32';
  } else if (dtype === 'uint8') {
    src = Uint8Array.from(data as ArrayLike<number>);
    srcDtype = 'uint8';
  } else if (data instanceof Float32Array) {
    src = data;
    srcDtype = 'float32';
  } else {
    // float64 data is narrowed natively in one rounding (no float32 detour), so float16/bfloat16
    // get the correctly rounded value of each number.
    src = data instanceof Float64Array ? data : Float64Array.from(data as ArrayLike<number>);
    srcDtype = 'float64';
  }
  const t = allocate(op, s, dtype, device, false);
  callNative(op, () => t._native(op, 'out').write(src, srcDtype === 'float64' ? FLOAT64_SOURCE : DTYPES[srcDtype].code));
  return t;
}

/** Live bytes per device (storage not yet released; includes tensors awaiting finalization). */
export function memory(): Record<string, number> {
  return callNative('memory', () => native.memory());
}
