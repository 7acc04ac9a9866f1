/**
 * Benchmark of dense fused attention on a CUDA device (`attnkit bench --device cuda`), through the
 * public API, timed with CUDA events.
 *
 * Validation first: for every (dtype, mask, head dim) to be timed, a small problem (N = 150, two
 * 64-row tiles and a tail) runs on the device and is compared with the float64 reference, backward
 * included when it is timed; if any comparison fails, no timing is reported.
 *
 * Timing: per configuration, one warm-up run, then `repeats` timed runs. Each timed run is bracketed
 * by two CUDA events recorded on the benchmark's stream, so only device time counts. Before each run
 * a short spin kernel (the streams' test hook) keeps the device behind the host: the events then
 * bracket the kernels and not the host's enqueue of them. The median is reported as TFLOP/s by the
 * DESIGN §10 convention (forward = 4 * visible query-key pairs * D, backward = 2.5 x forward), and
 * causal rows get their speedup over dense (no mask) attention on the same shape and dtype.
 */
import * as ak from '../index.js';
import type { FloatDType } from '../index.js';
import { native } from '../native.js';
import { median } from './common.js';
import {
  attentionFlop,
  countSteps,
  validateAttention,
  ValidationFailure,
  type BenchShape,
  type MaskName,
  type Pass,
  type ValidationResult,
} from './attention.js';

/** Dtypes the CUDA kernels take. */
export const CUDA_DTYPES = ['bfloat16', 'float16'] as const;
export type CudaDType = (typeof CUDA_DTYPES)[number];

/**
 * Default shapes: 16k tokens per batch (B = 16384 / N, at least 1) and a model width of 2048
 * (H = 2048 / D), the FlashAttention-2 benchmark's convention, for N = 1024 ... 32768 and D = 64, 128.
 */
export function defaultCudaShapes(quick: boolean): BenchShape[] {
  const ns = quick ? [1024] : [1024, 2048, 4096, 8192, 16384, 32768];
  const ds = quick ? [64] : [64, 128];
  return ds.flatMap((D) => ns.map((N) => ({ B: Math.max(1, 16384 / N), N, H: 2048 / D, D })));
}

/**
 * Validation tolerances against the float64 reference. The kernels read float16/bfloat16 inputs,
 * accumulate in float32 and round P to the input dtype before P·V (FlashAttention 2), so the output
 * error is a few units of the dtype's rounding (2^-11, 2^-8) relative to max |out|; gradients add a
 * few more roundings. LSE is float32 from float32 scores.
 */
export const CUDA_TOLERANCES: Readonly<Record<CudaDType, { out: number; lse: number; grad: number }>> = {
  float16: { out: 4e-3, lse: 1e-3, grad: 8e-3 },
  bfloat16: { out: 3e-2, lse: 1e-3, grad: 6e-2 },
};

export interface CudaBenchOptions {
  device: ak.Device;
  shapes: readonly BenchShape[];
  dtypes: readonly CudaDType[];
  masks: readonly MaskName[];
  backward: boolean;
  repeats: number;
  warmup: number;
  onStep?: (label: string) => void;
}

/** One validation of the CUDA kernels (the CPU benchmark's record). */
export type CudaValidation = ValidationResult;

export interface CudaTiming {
  op: 'attention';
  device: ak.Device;
  shape: [number, number, number, number];
  dtype: CudaDType;
  mask: MaskName;
  pass: Pass;
  repeats: number;
  medianMs: number;
  minMs: number;
  flop: number;
  tflops: number;
  /** Dense median / this median, for causal rows when dense was timed too; else null. */
  speedupVsDense: number | null;
}

export interface CudaBenchReport {
  device: ak.Device;
  deviceName: string;
  validation: CudaValidation[];
  results: CudaTiming[];
}

/** Thrown when a validation fails: no timings are reported. */
export class CudaValidationFailure extends ValidationFailure {
  constructor(validation: CudaValidation[]) {
    super(validation, 'validation of the CUDA kernels');
  }
}

/** Why the CUDA benchmark cannot run here ("" when it can). */
export function cudaBenchUnavailable(device: string): string {
  const c = ak.info().cuda;
  if (!c.compiled) return `this build of attnkit has no CUDA backend (${c.reason})`;
  if (!c.available) return `CUDA is not available: ${c.reason}`;
  const ordinal = device === 'cuda' ? 0 : Number(device.slice(5));
  if (!(ordinal < c.deviceCount)) return `${device} does not exist (${c.deviceCount} CUDA device${c.deviceCount === 1 ? '' : 's'})`;
  if (!c.attentionKernels) return 'this build has no CUDA attention kernels (native/cuda/fmha/ was not compiled)';
  return '';
}

/** A randn tensor of `dtype` on `device` (the CPU's numbers, copied). */
function randnOn(shape: number[], dtype: FloatDType, seed: number, device: ak.Device, stream: ak.Stream): ak.Tensor {
  return ak.randn(shape, { dtype, seed, device, stream });
}

/** Number of onStep calls a run makes (for a progress bar): the CPU benchmark's count. */
export const countCudaSteps: (o: CudaBenchOptions) => number = countSteps;

/** Device milliseconds of `run`, bracketed by CUDA events on `stream` (see the header comment). */
async function timeOnDevice(stream: ak.Stream, run: () => ak.Tensor[]): Promise<number> {
  stream.native.sleep(2); // a 2 ms spin kernel: the device is still busy when the events are issued
  const start = native.cudaRecordEvent(stream.native);
  const outputs = run();
  const end = native.cudaRecordEvent(stream.native);
  await stream.synchronize();
  for (const t of outputs) t.dispose();
  return native.cudaEventElapsed(start, end);
}

/** Validates, then times every configuration on the device. */
export async function benchCudaAttention(o: CudaBenchOptions): Promise<CudaBenchReport> {
  const step = o.onStep ?? (() => {});
  const device = o.device;
  const ordinal = Number(device.slice(5));
  const deviceName = ak.info().cuda.devices[ordinal]?.name ?? device;

  const validation: CudaValidation[] = [];
  for (const D of new Set(o.shapes.map((s) => s.D)))
    for (const dtype of o.dtypes)
      for (const mask of o.masks) {
        validation.push(await validateAttention(dtype, mask, D, o.backward, device, CUDA_TOLERANCES[dtype]));
        step(`validate ${dtype} ${mask} D=${D}`);
      }
  if (validation.some((v) => !v.ok)) throw new CudaValidationFailure(validation);

  const stream = new ak.Stream(device);
  const results: CudaTiming[] = [];
  for (const s of o.shapes)
    for (const dtype of o.dtypes)
      for (const mask of o.masks) {
        const shape = [s.B, s.N, s.H, s.D];
        const causal = mask === 'causal';
        const q = randnOn(shape, dtype, 1, device, stream);
        const k = randnOn(shape, dtype, 2, device, stream);
        const v = randnOn(shape, dtype, 3, device, stream);
        const dOut = o.backward ? randnOn(shape, dtype, 4, device, stream) : null;
        await stream.synchronize();
        const label = `attention ${shape.join(',')} ${dtype} ${mask}`;
        try {
          const fwd: number[] = [];
          for (let i = 0; i < o.warmup + o.repeats; i++) {
            const ms = await timeOnDevice(stream, () => {
              const r = ak.attention(q, k, v, { causal, stream });
              return [r.out, r.lse];
            });
            if (i >= o.warmup) fwd.push(ms);
            step(`${label} forward`);
          }
          results.push(timing(device, s, dtype, mask, 'forward', fwd));
          if (dOut) {
            const r = ak.attention(q, k, v, { causal, stream });
            const bwd: number[] = [];
            for (let i = 0; i < o.warmup + o.repeats; i++) {
              const ms = await timeOnDevice(stream, () => {
                const g = r.backward(dOut);
                return [g.dq, g.dk, g.dv];
              });
              if (i >= o.warmup) bwd.push(ms);
              step(`${label} backward`);
            }
            r.out.dispose();
            r.lse.dispose();
            results.push(timing(device, s, dtype, mask, 'backward', bwd));
          }
        } finally {
          for (const t of [q, k, v, dOut]) t?.dispose();
        }
      }
  for (const r of results) {
    if (r.mask !== 'causal') continue;
    const dense = results.find(
      (x) => x.mask === 'none' && x.dtype === r.dtype && x.pass === r.pass && x.shape.join() === r.shape.join(),
    );
    r.speedupVsDense = dense ? dense.medianMs / r.medianMs : null;
  }
  return { device, deviceName, validation, results };
}

function timing(device: ak.Device, s: BenchShape, dtype: CudaDType, mask: MaskName, pass: Pass, times: number[]): CudaTiming {
  const flop = attentionFlop(s, mask, pass);
  const med = median(times);
  return {
    op: 'attention',
    device,
    shape: [s.B, s.N, s.H, s.D],
    dtype,
    mask,
    pass,
    repeats: times.length,
    medianMs: med,
    minMs: Math.min(...times),
    flop,
    tflops: flop / (med * 1e9),
    speedupVsDense: null,
  };
}
