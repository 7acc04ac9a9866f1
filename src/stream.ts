/**
 * Streams (DESIGN §3): ordered queues of work on one device. On the CPU a stream is a worker thread
 * whose tasks spread over the shared compute pool. Ops enqueue and return at once; `synchronize()`
 * waits without blocking the event loop and rejects with the error of any failed work since the
 * last wait.
 */
import { AttnkitError, awaitNative, callNative } from './errors.js';
import { native, type NativeStream } from './native.js';

/** A device name: `'cpu'` or `'cuda:N'`. */
export type Device = 'cpu' | `cuda:${number}`;

export function parseDevice(op: string, arg: string, d: unknown): Device {
  if (d === 'cpu') return 'cpu';
  if (typeof d === 'string' && /^cuda(:\d+)?$/.test(d)) {
    const cuda = native.info().cuda;
    if (!cuda.available)
      throw new AttnkitError(
        'ERR_ATTNKIT_DEVICE',
        op,
        `${op}: '${arg}' names device '${d}', but CUDA is not available: ${cuda.reason}`,
        arg,
      );
    throw new AttnkitError(
      'ERR_ATTNKIT_UNSUPPORTED',
      op,
      `${op}: '${arg}' names device '${d}': CUDA tensors are not supported by this version of attnkit yet (CPU only)`,
      arg,
    );
  }
  throw new AttnkitError(
    'ERR_ATTNKIT_DEVICE',
    op,
    `${op}: expected '${arg}' to be 'cpu' or 'cuda:N', received ${JSON.stringify(d)}`,
    arg,
  );
}

export class Stream {
  readonly device: Device;
  /** @internal */
  readonly native: NativeStream;

  constructor(device: Device = 'cpu') {
    this.device = parseDevice('Stream', 'device', device);
    this.native = callNative('Stream', () => new native.NativeStream());
  }

  /** Resolves when all work enqueued so far has finished; rejects with the error of failed work. */
  synchronize(): Promise<void> {
    return awaitNative('synchronize', this.native.synchronize());
  }
}

const defaults = new Map<Device, Stream>();

/** The default stream of a device (created on first use). */
export function defaultStream(device: Device = 'cpu'): Stream {
  let s = defaults.get(device);
  if (!s) {
    s = new Stream(device);
    defaults.set(device, s);
  }
  return s;
}

/** Waits for all work on the default stream of `device`. */
export function synchronize(device: Device = 'cpu'): Promise<void> {
  return defaultStream(device).synchronize();
}
