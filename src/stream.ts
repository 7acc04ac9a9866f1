/**
 * Streams (DESIGN §3): ordered queues of work on one device. On the CPU a stream is a worker thread
 * whose tasks spread over the shared compute pool; on CUDA it is a `cudaStream_t` fed in order by a
 * worker thread (docs/cuda.md). Ops enqueue and return at once; `synchronize()`
 * waits without blocking the event loop and rejects with the error of any failed work since the
 * last wait.
 */
import { AttnkitError, awaitNative, callNative, show } from './errors.js';
import { native, type NativeStream } from './native.js';

/** A device name: `'cpu'` or `'cuda:N'`. */
export type Device = 'cpu' | `cuda:${number}`;

let cudaStatus: { available: boolean; reason: string; deviceCount: number } | undefined;

/** CUDA availability, asked of the addon once (devices do not come and go while a process runs). */
function cudaInfo(): { available: boolean; reason: string; deviceCount: number } {
  if (!cudaStatus) {
    const c = native.info().cuda;
    cudaStatus = { available: c.available, reason: c.reason, deviceCount: c.deviceCount };
  }
  return cudaStatus;
}

/**
 * Checks a device name and returns it in canonical form (`'cuda'` is `'cuda:0'`). A CUDA device
 * needs CUDA in this build, a driver and that device: otherwise ERR_ATTNKIT_DEVICE says why.
 */
export function parseDevice(op: string, arg: string, d: unknown): Device {
  if (d === 'cpu') return 'cpu';
  const m = typeof d === 'string' ? /^cuda(?::(\d+))?$/.exec(d) : null;
  if (m) {
    const cuda = cudaInfo();
    if (!cuda.available)
      throw new AttnkitError(
        'ERR_ATTNKIT_DEVICE',
        op,
        `${op}: '${arg}' names device '${d as string}', but CUDA is not available: ${cuda.reason}`,
        arg,
      );
    const ordinal = m[1] === undefined ? 0 : Number(m[1]);
    if (!(ordinal < cuda.deviceCount))
      throw new AttnkitError(
        'ERR_ATTNKIT_DEVICE',
        op,
        `${op}: '${arg}' names device '${d as string}', but there ${cuda.deviceCount === 1 ? 'is 1 CUDA device' : `are ${cuda.deviceCount} CUDA devices`} (cuda:0${cuda.deviceCount > 1 ? ` to cuda:${cuda.deviceCount - 1}` : ''})`,
        arg,
      );
    return `cuda:${ordinal}`;
  }
  throw new AttnkitError(
    'ERR_ATTNKIT_DEVICE',
    op,
    `${op}: expected '${arg}' to be 'cpu' or 'cuda:N', received ${show(d)}`,
    arg,
  );
}

/** The CUDA ordinal of a device, or -1 for the CPU (the addon's numbering). */
export function deviceOrdinal(device: Device): number {
  return device === 'cpu' ? -1 : Number(device.slice(5));
}

/**
 * An ordered queue of work on one device. Ops enqueue on it and return at once; tensors remember
 * the stream that produces them, and work on another stream that reads them waits for it.
 *
 * @example
 * ```ts
 * const s = new Stream('cpu');
 * const { out } = attention(q, k, v, { stream: s });
 * await s.synchronize(); // or: await out.toArray()
 * ```
 */
export class Stream {
  /** The device the stream runs on. */
  readonly device: Device;
  /** @internal */
  readonly native: NativeStream;

  /**
   * A new stream on `device`. On CUDA it is a `cudaStream_t` (non-blocking) whose work is issued in
   * order by a worker thread; a tensor it consumes from another stream makes it wait (an event on
   * CUDA, the producer's completion for a CPU producer).
   */
  constructor(device: Device = 'cpu') {
    this.device = parseDevice('Stream', 'device', device);
    const ordinal = deviceOrdinal(this.device);
    this.native = callNative('Stream', () => (ordinal < 0 ? new native.NativeStream() : new native.NativeStream(ordinal)));
  }

  /** Resolves when all work enqueued so far has finished; rejects with the error of failed work. */
  synchronize(): Promise<void> {
    return awaitNative('synchronize', this.native.synchronize());
  }
}

const defaults = new Map<Device, Stream>();

/**
 * The default stream of a device (created on first use): where ops run without a `stream` option.
 *
 * @example
 * ```ts
 * const s = defaultStream('cpu');
 * attention(q, k, v).out.stream === s; // true
 * ```
 */
export function defaultStream(device: Device = 'cpu'): Stream {
  let s = defaults.get(device);
  if (!s) {
    const d = parseDevice('defaultStream', 'device', device);
    s = defaults.get(d) ?? new Stream(d);
    defaults.set(d, s);
    defaults.set(device, s);
  }
  return s;
}

/**
 * Waits for all work on the default stream of `device`; rejects with the error of failed work.
 *
 * @example
 * ```ts
 * attention(q, k, v);
 * await synchronize(); // the CPU's default stream
 * ```
 */
export function synchronize(device: Device = 'cpu'): Promise<void> {
  return defaultStream(device).synchronize();
}
