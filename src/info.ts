/** Build and machine information: CPU kernel level, threads, CUDA availability and why not. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DTYPES, type DType } from './dtype.js';
import { AttnkitError, argError, show } from './errors.js';
import { native, packageRoot } from './native.js';
import { parseDevice, type Device } from './stream.js';

/** One CUDA kernel of the instantiation list (native/cuda/instantiations.json), as its table row. */
export interface CudaKernel {
  /** The kernel family (`fmha`: dense fused attention). */
  family: string;
  /** The op of the backend table it runs (`attention`, `attentionBackward`, …). */
  op: string;
  /** The element type of its inputs. */
  dtype: DType;
  /** The query/key head dim it is compiled for; 0 when the kernel takes any (merge). */
  headDim: number;
  /** The value head dim; 0 when the kernel takes any. */
  valueHeadDim: number;
  /** The mask policy it is compiled for (`dense`: full, causal, sliding window). */
  policy: string;
  /** Query tile rows, key tile columns, warps per CTA (absent for a family without tiles: merge). */
  tile?: { bm: number; bn: number; warps: number };
  /** Its name in the family's dispatch table, e.g. `fmha fwd dense f16 d64`. */
  kernel: string;
  /** Its translation units and the dynamic shared memory (bytes) each kernel launches with. */
  units: { file: string; dynamicSmem: number }[];
}

interface KernelsJson {
  families: { family: string; ops: { op: string; kernels: Omit<CudaKernel, 'family' | 'op'>[] }[] }[];
}

let listed: CudaKernel[] | undefined;
/** Every kernel of the list (native/cuda/generated/kernels.json, written by scripts/gen-instantiations.mjs). */
function listedKernels(): CudaKernel[] {
  if (!listed) {
    const doc = JSON.parse(readFileSync(join(packageRoot(), 'native', 'cuda', 'generated', 'kernels.json'), 'utf8')) as KernelsJson;
    listed = doc.families.flatMap((f) => f.ops.flatMap((o) => o.kernels.map((k) => ({ family: f.family, op: o.op, ...k }))));
  }
  return listed;
}

/**
 * The CUDA kernels this build runs: the rows of the generated list that the backend table accepts
 * on CUDA (`native.supports`), so none in a build without CUDA and the whole list in a CUDA build.
 */
export function cudaKernels(): CudaKernel[] {
  return listedKernels().filter(
    (k) => native.supports(k.op, 0, { dtype: DTYPES[k.dtype].code, B: 1, Nq: 64, Nk: 64, H: 1, Hkv: 1, D: k.headDim, Dv: k.valueHeadDim }) === '',
  );
}

/** What {@link info} reports: the package version, the CPU backend and the CUDA backend. */
export interface Info {
  /** The package version (package.json). */
  version: string;
  /** The CPU kernel level in use, the level the CPU supports, and the compute threads. */
  cpu: { isa: string; detectedIsa: string; threads: number };
  /** The CUDA backend of this build and machine. */
  cuda: {
    /** The CUDA runtime module is compiled into this build. */
    compiled: boolean;
    /** A driver and at least one device are present. */
    available: boolean;
    /** Number of CUDA devices (0 when unavailable). */
    deviceCount: number;
    /** Why CUDA is unavailable ("" when it is available). */
    reason: string;
    /** The architectures the kernels are compiled for (e.g. `sm_80`). */
    archs: string[];
    /** The dense attention CUDA kernels are part of this build. */
    attentionKernels: boolean;
    /** The CUDA kernels this build runs, one row per op, dtype, head dim and policy (see cudaKernels). */
    kernels: CudaKernel[];
    /** Name, compute capability, memory (bytes) and multiprocessors of each device. */
    devices: { name: string; computeCapability: string; memory: number; multiprocessors: number }[];
  };
}

/**
 * Version, CPU kernel level in use, threads, and CUDA status.
 *
 * @example
 * ```ts
 * import { info } from 'attnkit';
 * const i = info();
 * console.log(i.cpu.isa, i.cpu.threads, i.cuda.available ? i.cuda.devices[0]?.name : i.cuda.reason);
 * console.log(i.cuda.kernels.map((k) => k.kernel)); // the CUDA kernels this build runs
 * ```
 */
export function info(): Info {
  const n = native.info();
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return {
    version: pkg.version,
    cpu: { isa: n.isa, detectedIsa: n.detectedIsa, threads: n.threads },
    cuda: {
      compiled: n.cuda.compiled,
      available: n.cuda.available,
      deviceCount: n.cuda.deviceCount,
      reason: n.cuda.reason,
      archs: n.cuda.archs ? n.cuda.archs.split(',') : [],
      attentionKernels: n.cuda.attentionKernels,
      kernels: cudaKernels(),
      devices: n.cuda.devices,
    },
  };
}

/** The CUDA runtime module. */
export const cuda = {
  /** True when a CUDA driver and at least one device are present and this build has CUDA. */
  available(): boolean {
    return native.info().cuda.available;
  },
  /** Number of CUDA devices (0 when unavailable). */
  deviceCount(): number {
    return native.info().cuda.deviceCount;
  },
  /** Why CUDA is unavailable ("" when it is available). */
  reason(): string {
    return native.info().cuda.reason;
  },
  /**
   * Device memory of a CUDA device: `allocated`, the bytes of attnkit's live tensors there (as
   * `memory()` reports), and the stream-ordered allocator's default pool: `reserved` (held from
   * the driver; attnkit keeps freed memory for reuse) and `used` (not yet freed in stream order).
   */
  memoryStats(device: Device = 'cuda:0'): { allocated: number; reserved: number; used: number } {
    const d = parseDevice('memoryStats', 'device', device);
    if (d === 'cpu')
      throw new AttnkitError('ERR_ATTNKIT_DEVICE', 'memoryStats', "memoryStats: expected 'device' to be a CUDA device ('cuda:N'), received 'cpu'", 'device');
    const stats = native.cudaMemoryStats(Number(d.slice(5)));
    if (!stats) throw new AttnkitError('ERR_ATTNKIT_CUDA', 'memoryStats', `memoryStats: the memory pool of ${d} could not be queried`);
    return stats;
  },
};

/** CPU backend controls. */
export const cpu = {
  /** SIMD levels, lowest first: generic < avx2 < avx512 < avx512bf16 < amx. */
  levels: ['generic', 'avx2', 'avx512', 'avx512bf16', 'amx'] as const,
  /** The levels this CPU can run (the detected one and every lower one). */
  availableLevels(): string[] {
    const best = native.info().detectedIsa;
    const all = ['generic', 'avx2', 'avx512', 'avx512bf16', 'amx'];
    return all.slice(0, all.indexOf(best) + 1);
  },
  /** The kernel level in use. */
  isa(): string {
    return native.info().isa;
  },
  /**
   * Forces a kernel level (for testing and benchmarking); returns false when the CPU cannot run it.
   * Process-wide; read when a task starts, so it also affects queued tasks that have not started.
   */
  setIsa(level: 'generic' | 'avx2' | 'avx512' | 'avx512bf16' | 'amx'): boolean {
    if (!(cpu.levels as readonly unknown[]).includes(level))
      throw argError('ERR_ATTNKIT_ARGUMENT', 'cpu.setIsa', 'level', `to be one of ${cpu.levels.map((x) => `'${x}'`).join(', ')}`, show(level));
    return native.setIsa(level);
  },
};
