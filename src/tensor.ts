/**
 * Tensor (DESIGN §2): device, dtype, shape and contiguous row-major storage owned by native code
 * (64-byte aligned on the CPU; on CUDA, device memory from the stream-ordered allocator). A tensor
 * remembers the stream that produces it; reading it waits for that work without blocking the event
 * loop. Device copies (`to('cuda:0')`, `to('cpu')`) are enqueued like any other work.
 */
import { DTYPES, isDType, type ArrayFor, type DType } from './dtype.js';
import { AttnkitError, argError, awaitNative, callNative, checkBoolean, checkKnownOptions, orDefault, show } from './errors.js';
import { native, type NativeStorage } from './native.js';
import { defaultStream, parseDevice, Stream, type Device } from './stream.js';

const registry = new FinalizationRegistry<NativeStorage>((storage) => storage.dispose());

/** What `tensor()` copies: a typed array (Uint16Array = raw float16/bfloat16 bits) or numbers. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | readonly number[];

/** The dtype and device of a new tensor. */
export interface TensorOptions {
  /** Element type; default `'float32'`. */
  dtype?: DType;
  /** Device; default `'cpu'`. */
  device?: Device;
}

/** Where a copy to another device runs (`Tensor.to`). */
export interface CopyOptions {
  /**
   * The stream that runs the copy and produces the result. Default: for a copy to a CUDA device,
   * that device's default stream; for a copy from CUDA to the CPU, the source's stream.
   */
  stream?: Stream;
}

/**
 * An n-dimensional array on a device: dtype, shape, contiguous row-major storage owned by native
 * code, and the stream whose work produces it. Make one with `tensor`, `empty`, `zeros` or `randn`;
 * ops return tensors whose contents are pending until that work finishes. Memory is released by
 * `dispose()` or, failing that, when the tensor is garbage-collected.
 *
 * @example
 * ```ts
 * const q = randn([1, 1024, 8, 64], { seed: 1, dtype: 'bfloat16' });
 * const x = tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * const data = await x.toArray(); // Float32Array [1, 2, 3, 4, 5, 6]
 * x.dispose();
 * ```
 */
export class Tensor<T extends DType = DType> {
  /** Element type. */
  readonly dtype: T;
  /** The device that holds the storage. */
  readonly device: Device;
  /** Extent of each dimension, outermost first. */
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
   *
   * @example
   * ```ts
   * const { out } = attention(q, k, v);
   * const values = await out.toArray(); // waits for the attention, then copies
   * ```
   */
  async toArray(): Promise<ArrayFor<T>>;
  async toArray(opts: { raw: true }): Promise<ArrayFor<T> | Uint16Array>;
  async toArray(opts: { raw?: boolean } = {}): Promise<ArrayFor<T> | Uint16Array> {
    const storage = this._native('toArray', 'tensor');
    const raw = checkBoolean('toArray', 'raw', checkKnownOptions('toArray', opts, ['raw']).raw, false);
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
   * itself (as PyTorch does). A dtype conversion runs on this tensor's stream (on CUDA: on the
   * device, with the CPU's rounding). A device copy is enqueued (see CopyOptions for the stream):
   * host to device, device to host, or between CUDA devices; `await result.toArray()` or a
   * synchronize waits for it. Without CUDA, `to('cuda:N')` throws ERR_ATTNKIT_DEVICE with the reason.
   */
  to<U extends DType>(target: U): Tensor<U>;
  to(target: Device, opts?: CopyOptions): Tensor<T>;
  to(target: DType | Device, opts: CopyOptions = {}): Tensor<DType> {
    const storage = this._native('to', 'tensor');
    checkKnownOptions('to', opts, ['stream']);
    if (isDType(target)) {
      if (target === this.dtype) return this;
      const out = allocate('to', this.shape, target, this.device, false, this.#stream);
      callNative('to', () => native.convert(this.#stream.native, storage, out._native('to', 'out')));
      out._setStream(this.#stream);
      return out;
    }
    const device = parseDevice('to', 'target', target);
    if (device === this.device) return this;
    // A copy runs on a CUDA stream: the destination's, or for a copy to the CPU the source's.
    const runsOn: Device = device === 'cpu' ? this.device : device;
    let stream: Stream;
    if (opts.stream !== undefined) {
      if (!(opts.stream instanceof Stream))
        throw argError('ERR_ATTNKIT_ARGUMENT', 'to', 'stream', 'to be a Stream', show(opts.stream));
      if (opts.stream.device !== runsOn)
        throw argError('ERR_ATTNKIT_DEVICE', 'to', 'stream', `to be a stream on ${runsOn} (the device that runs this copy)`, opts.stream.device);
      stream = opts.stream;
    } else {
      stream = device === 'cpu' && this.#stream.device === runsOn ? this.#stream : defaultStream(runsOn);
    }
    const out = allocate('to', this.shape, this.dtype, device, false, stream);
    callNative('to', () => native.cudaCopy(stream.native, storage, out._native('to', 'out')));
    out._setStream(stream);
    return out;
  }

  /**
   * The device address of a CUDA tensor's storage, as a bigint (for other CUDA libraries). Work
   * attnkit enqueued on the tensor may still be running: wait for it (`await t.stream.synchronize()`)
   * before another library reads the memory. Throws ERR_ATTNKIT_DEVICE for a CPU tensor.
   */
  get devicePointer(): bigint {
    const storage = this._native('devicePointer', 'tensor');
    if (this.device === 'cpu')
      throw new AttnkitError(
        'ERR_ATTNKIT_DEVICE',
        'devicePointer',
        'devicePointer: the tensor is on the CPU; devicePointer exists for CUDA tensors only (read a CPU tensor with toArray())',
        'tensor',
      );
    return callNative('devicePointer', () => native.devicePointer(storage));
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

  /** `Tensor(dtype, [shape], device)`, with `, disposed` once disposed. */
  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape))
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', 'to be an array of non-negative integers', show(shape));
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    // Safe integers only: a zero elsewhere would let an extent like 3e40 through the product check.
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
      throw argError(
        'ERR_ATTNKIT_SHAPE',
        op,
        'shape',
        'to hold non-negative integers',
        `${show(d)} at position ${i}`,
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
      show(dtype),
    );
  return dtype;
}

/**
 * New storage on `device`, belonging to `stream` (default: the device's default stream). CUDA
 * memory is allocated stream-ordered on that stream, which is where the tensor's producer must run.
 */
function allocate<T extends DType>(op: string, shape: readonly number[], dtype: T, device: Device, zero: boolean, stream?: Stream): Tensor<T> {
  const n = shape.reduce((a, b) => a * b, 1);
  const s = stream ?? defaultStream(device);
  const storage = callNative(op, () =>
    device === 'cpu'
      ? new native.NativeStorage(DTYPES[dtype].code, n, zero)
      : new native.NativeStorage(DTYPES[dtype].code, n, zero, s.native, op),
  );
  return new Tensor(storage, dtype, shape, device, s);
}

const FACTORY_OPTIONS = ['dtype', 'device', 'stream'] as const;

/** The device and stream of a factory call: `device`, else the stream's device, else the CPU. */
function placement(op: string, opts: { device?: Device; stream?: Stream }): { device: Device; stream: Stream | undefined } {
  const st = opts.stream;
  if (st !== undefined && !(st instanceof Stream)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stream', 'to be a Stream', show(st));
  const device = parseDevice(op, 'device', orDefault(opts.device, st?.device ?? 'cpu'));
  if (st && st.device !== device)
    throw argError('ERR_ATTNKIT_DEVICE', op, 'stream', `to be a stream on ${device} (the 'device' option)`, st.device);
  return { device, stream: st };
}

/**
 * An uninitialized tensor (on CUDA: allocated stream-ordered on `stream`, default the device's
 * default stream).
 *
 * @example
 * ```ts
 * const buf = empty([4, 128], { dtype: 'float16' });
 * ```
 */
export function empty<T extends DType = 'float32'>(
  shape: readonly number[],
  opts: { dtype?: T; device?: Device; stream?: Stream } = {},
): Tensor<T> {
  const s = checkShape('empty', shape);
  const o = checkKnownOptions('empty', opts, FACTORY_OPTIONS) as typeof opts;
  const dtype = checkDType('empty', orDefault(o.dtype, 'float32')) as T;
  const { device, stream } = placement('empty', o);
  return allocate('empty', s, dtype, device, false, stream);
}

/** A tensor of zeros (on CUDA: a memset enqueued on `stream`, default the device's default stream).
 *
 * @example
 * ```ts
 * const state = zeros([1, 8, 64, 64]); // float32
 * ```
 */
export function zeros<T extends DType = 'float32'>(
  shape: readonly number[],
  opts: { dtype?: T; device?: Device; stream?: Stream } = {},
): Tensor<T> {
  const s = checkShape('zeros', shape);
  const o = checkKnownOptions('zeros', opts, FACTORY_OPTIONS) as typeof opts;
  const dtype = checkDType('zeros', orDefault(o.dtype, 'float32')) as T;
  const { device, stream } = placement('zeros', o);
  return allocate('zeros', s, dtype, device, true, stream);
}

/**
 * Standard normal numbers. The same `seed` gives the same numbers on every run, for every thread
 * count and on every device (a counter-based generator indexed by element; CUDA tensors are filled
 * on the host and copied, so they hold exactly the CPU's numbers). `seed` is a non-negative safe
 * integer; only an absent seed draws a random one (`null`, like any other non-integer, is refused
 * with ERR_ATTNKIT_ARGUMENT, as PyTorch's `manual_seed(None)` is).
 *
 * @example
 * ```ts
 * const q = randn([2, 4096, 8, 64], { seed: 42, dtype: 'bfloat16' });
 * ```
 */
export function randn<T extends DType = 'float32'>(
  shape: readonly number[],
  opts: { seed?: number; dtype?: T; device?: Device; stream?: Stream } = {},
): Tensor<T> {
  const s = checkShape('randn', shape);
  opts = checkKnownOptions('randn', opts, ['seed', ...FACTORY_OPTIONS]) as typeof opts;
  const dtype = checkDType('randn', orDefault(opts.dtype, 'float32')) as T;
  if (!DTYPES[dtype].float)
    throw argError('ERR_ATTNKIT_DTYPE', 'randn', 'dtype', 'to be a floating-point dtype', dtype);
  const { device, stream: st } = placement('randn', opts);
  // Only an absent seed means "random": null (like any non-integer) is refused, not taken as absent.
  const seed = opts.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : opts.seed;
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw argError('ERR_ATTNKIT_ARGUMENT', 'randn', 'seed', 'to be a non-negative safe integer', show(seed));
  if (device !== 'cpu') {
    const host = randn(s, { seed, dtype });
    const t = host.to(device, { stream: st ?? defaultStream(device) });
    host.dispose(); // the copy keeps the host storage until it has run
    return t as Tensor<T>;
  }
  const t = allocate('randn', s, dtype, device, false);
  const stream = st ?? defaultStream(device);
  callNative('randn', () => native.randn(stream.native, t._native('randn', 'out'), seed));
  t._setStream(stream);
  return t;
}

/** The typed arrays `tensor()` copies from (TensorData). */
const SOURCE_ARRAYS = [Float32Array, Float64Array, Int32Array, Uint8Array, Uint16Array] as const;

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
 *
 * @example
 * ```ts
 * const t = tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype: 'bfloat16' });
 * ```
 */
export function tensor<T extends DType = 'float32'>(data: TensorData, shape?: readonly number[], opts: { dtype?: T; device?: Device } = {}): Tensor<T> {
  const op = 'tensor';
  const isView = ArrayBuffer.isView(data);
  if (!isView && !Array.isArray(data))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'data', 'to be a typed array or an array of numbers', show(data));
  if (isView && !SOURCE_ARRAYS.some((c) => data instanceof c))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'data', `to be a ${SOURCE_ARRAYS.map((c) => c.name).join(', ')} or an array of numbers`, show(data));
  if (!isView)
    (data as readonly unknown[]).forEach((x, i) => {
      // A string or a boolean would become NaN or 0/1 in the conversion: refused, as in PyTorch.
      if (typeof x !== 'number') throw argError('ERR_ATTNKIT_ARGUMENT', op, 'data', 'to hold numbers only', `${show(x)} at index ${i}`);
    });
  opts = checkKnownOptions(op, opts, ['dtype', 'device']) as typeof opts;
  const length = (data as ArrayLike<number>).length;
  const s = checkShape(op, shape === undefined ? [length] : shape);
  const n = s.reduce((a, b) => a * b, 1);
  if (n !== length)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'shape', `to hold ${length} elements (the data's length)`, `[${s.join(', ')}] (${n} elements)`);
  const dtype = checkDType(op, orDefault(opts.dtype, defaultDTypeFor(data))) as T;
  const device = parseDevice(op, 'device', orDefault(opts.device, 'cpu'));
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
  const t = allocate(op, s, dtype, 'cpu', false);
  callNative(op, () => t._native(op, 'out').write(src, srcDtype === 'float64' ? FLOAT64_SOURCE : DTYPES[srcDtype].code));
  if (device === 'cpu') return t;
  const d = t.to(device); // on the device's default stream; the copy keeps the host storage alive
  t.dispose();
  return d;
}

/** Options of fromDevicePointer. */
export interface FromDevicePointerOptions {
  /** The CUDA device the memory is on. Default: the stream's device, else `'cuda:0'`. */
  device?: Device;
  /**
   * An attnkit Stream: the tensor belongs to it (its work uses the memory in that stream's order;
   * the memory must hold its data when work enqueued from now on runs). A bigint: a `cudaStream_t`
   * of another library whose work issued so far produces the data; attnkit's device default stream
   * waits for it (an event recorded now), and the tensor belongs to that default stream.
   */
  stream?: Stream | bigint;
  /**
   * An object to keep alive while attnkit may use the memory (e.g. the other library's tensor): it
   * is released once the tensor is disposed or collected and the device has finished every task
   * that used the memory.
   */
  keepAlive?: object;
}

const FROM_POINTER_OPTIONS = ['device', 'stream', 'keepAlive'] as const;
const U64 = 1n << 64n;

/**
 * A tensor over CUDA device memory that attnkit does not own (raw pointer interop, e.g. memory of
 * another framework): `numel(shape)` elements of `dtype` at address `ptr`, contiguous row-major.
 * attnkit never frees it. The memory must stay valid while the tensor (or work on it) exists: pass
 * its owner as `keepAlive`. Throws ERR_ATTNKIT_ARGUMENT for a pointer the CUDA runtime does not know
 * as device memory, ERR_ATTNKIT_DEVICE for memory of another device or when CUDA is unavailable.
 *
 * @example
 * ```ts
 * // memory another CUDA library allocated: 1024 float16 values at address ptr (a bigint)
 * const t = fromDevicePointer(ptr, [1024], 'float16', { device: 'cuda:0', keepAlive: owner });
 * ```
 */
export function fromDevicePointer<T extends DType>(
  ptr: bigint,
  shape: readonly number[],
  dtype: T,
  opts: FromDevicePointerOptions = {},
): Tensor<T> {
  const op = 'fromDevicePointer';
  if (typeof ptr !== 'bigint')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'ptr', 'to be a bigint (a device address, as Tensor.devicePointer gives)', ptr === null ? 'null' : typeof ptr);
  if (ptr <= 0n || ptr >= U64)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'ptr', 'to be a non-null 64-bit address', `${ptr}n`);
  const s = checkShape(op, shape);
  const dt = checkDType(op, dtype) as T;
  const size = DTYPES[dt].bytes;
  if (ptr % BigInt(size) !== 0n)
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'ptr', `to be aligned to ${size} bytes (a ${dt} element)`, `0x${ptr.toString(16)}`);
  const { keepAlive, stream } = checkKnownOptions(op, opts, FROM_POINTER_OPTIONS) as FromDevicePointerOptions;
  if (keepAlive !== undefined && (keepAlive === null || (typeof keepAlive !== 'object' && typeof keepAlive !== 'function')))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'keepAlive', 'to be an object', keepAlive === null ? 'null' : typeof keepAlive);
  if (stream !== undefined && !(stream instanceof Stream) && typeof stream !== 'bigint')
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stream', 'to be a Stream or a cudaStream_t (bigint)', stream === null ? 'null' : typeof stream);
  if (typeof stream === 'bigint' && (stream < 0n || stream >= U64))
    throw argError('ERR_ATTNKIT_ARGUMENT', op, 'stream', 'to be a 64-bit cudaStream_t handle', `${stream}n`);
  const requested = orDefault(opts.device, stream instanceof Stream ? stream.device : 'cuda:0');
  if (requested === 'cpu')
    throw argError('ERR_ATTNKIT_DEVICE', op, 'device', "to be a CUDA device ('cuda:N')", "'cpu'");
  const device = parseDevice(op, 'device', requested);
  if (stream instanceof Stream && stream.device !== device)
    throw argError('ERR_ATTNKIT_DEVICE', op, 'stream', `to be a stream on ${device} (the 'device' option)`, stream.device);
  const owner = stream instanceof Stream ? stream : defaultStream(device);
  const n = s.reduce((a, b) => a * b, 1);
  const storage = callNative(op, () =>
    native.fromDevicePointer(ptr, DTYPES[dt].code, n, owner.native, typeof stream === 'bigint' ? stream : null, keepAlive, op),
  );
  return new Tensor(storage, dt, s, device, owner);
}

/**
 * Live bytes per device: `cpu`, and `cuda:N` for each CUDA device (storage not yet released;
 * includes tensors awaiting finalization; memory from fromDevicePointer is not counted).
 *
 * @example
 * ```ts
 * const before = memory().cpu;
 * const t = zeros([1024, 1024]);
 * memory().cpu - before; // 4 MiB
 * t.dispose();
 * ```
 */
export function memory(): Record<string, number> {
  return callNative('memory', () => native.memory());
}
