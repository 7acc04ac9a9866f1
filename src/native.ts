/**
 * Loads the native addon with node-gyp-build (build/Release, then prebuilds/<platform>-<arch>) and
 * describes the binding's surface. Only this module and the classes that wrap handles talk to it.
 */
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AttnkitError } from './errors.js';

export interface NativeStorage {
  readonly bytes: number;
  dispose(): void;
  write(src: ArrayBufferView, srcDtypeCode: number): void;
}

export interface ShapeParams {
  B: number;
  Nq: number;
  Nk: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
}

/** What an op asks of a backend (ops::Request): dtype code and the sizes the op has. */
export interface SupportRequest extends Partial<ShapeParams> {
  dtype: number;
  /** mergeAttention(Backward): the number of parts */
  parts?: number;
}

export interface AttentionParams extends ShapeParams {
  scale: number;
  causal: boolean;
  left: number;
  right: number;
}

export interface NativeStream {
  synchronize(): Promise<void>;
  read(s: NativeStorage, asFloat32: boolean): Promise<ArrayBuffer>;
  injectFailure(message: string, outputs?: NativeStorage[]): void;
  sleep(ms: number): void;
}

export interface NativeInfo {
  isa: string;
  detectedIsa: string;
  threads: number;
  cuda: {
    compiled: boolean;
    available: boolean;
    deviceCount: number;
    reason: string;
    archs: string;
    runtimeVersion: number;
    driverVersion: number;
    /** The dense attention CUDA kernels (native/cuda/fmha/) are part of this build. */
    attentionKernels: boolean;
    /** The devices (when available). */
    devices: { name: string; computeCapability: string; memory: number; multiprocessors: number }[];
  };
}

/** The tensors of every fused attention backward, in the binding's order (dlse may be null). */
export type BackwardTensors = [
  q: NativeStorage,
  k: NativeStorage,
  v: NativeStorage,
  out: NativeStorage,
  lse: NativeStorage,
  dout: NativeStorage,
  dlse: NativeStorage | null,
  dq: NativeStorage,
  dk: NativeStorage,
  dv: NativeStorage,
];

/** A CUDA timing event (opaque), from cudaRecordEvent. */
export type NativeEvent = { readonly __nativeEvent: unique symbol };

export interface NativeBinding {
  /** Host memory; device memory (stream-ordered) when `stream` is a CUDA stream. */
  NativeStorage: new (dtypeCode: number, numel: number, zero?: boolean, stream?: NativeStream, op?: string) => NativeStorage;
  /** A CPU stream, or a CUDA stream on cuda:`device`. */
  NativeStream: new (device?: number) => NativeStream;
  /** Every op binds the same way: fn(stream, tensors..., params) (native/ops/dispatch.h). */
  randn(stream: NativeStream, out: NativeStorage, seed: number): void;
  convert(stream: NativeStream, src: NativeStorage, dst: NativeStorage): void;
  attentionForward(
    stream: NativeStream,
    q: NativeStorage,
    k: NativeStorage,
    v: NativeStorage,
    out: NativeStorage,
    lse: NativeStorage,
    p: AttentionParams,
  ): void;
  attentionBackward(stream: NativeStream, ...args: [...BackwardTensors, p: AttentionParams]): void;
  mergeForward(
    stream: NativeStream,
    outs: NativeStorage[],
    lses: NativeStorage[],
    out: NativeStorage,
    lse: NativeStorage,
    p: { rows: number; dv: number },
  ): void;
  mergeBackward(
    stream: NativeStream,
    outs: NativeStorage[],
    lses: NativeStorage[],
    out: NativeStorage,
    lse: NativeStorage,
    dout: NativeStorage,
    dlse: NativeStorage | null,
    douts: NativeStorage[],
    dlses: NativeStorage[],
    p: { rows: number; dv: number },
  ): void;
  /** out = a + b elementwise (same dtype and size). */
  add(stream: NativeStream, a: NativeStorage, b: NativeStorage, out: NativeStorage): void;
  /** "" when the backend of `device` (-1: the CPU, N: cuda:N) runs `op` on this request, else why not. */
  supports(op: string, device: number, request: SupportRequest): string;
  /** Which backend has a kernel for each op (native/ops/ops.cc). */
  opTable(): { op: string; cpu: boolean; cuda: boolean }[];
  info(): NativeInfo;
  setIsa(name: string): boolean;
  /** Live bytes: `cpu`, and `cuda:N` for each CUDA device. */
  memory(): Record<string, number>;
  /** Wraps device memory attnkit does not own (src/tensor.ts fromDevicePointer). */
  fromDevicePointer(
    ptr: bigint,
    dtypeCode: number,
    numel: number,
    stream: NativeStream,
    foreignStream: bigint | null,
    keepAlive: object | undefined,
    op: string,
  ): NativeStorage;
  /** The device address of a CUDA storage. */
  devicePointer(s: NativeStorage): bigint;
  /** dst = src on a CUDA stream: host to device, device to host, device to device, peer. */
  cudaCopy(stream: NativeStream, src: NativeStorage, dst: NativeStorage): void;
  /** A timing event recorded when the stream reaches this point. */
  cudaRecordEvent(stream: NativeStream): NativeEvent;
  /** Milliseconds between two completed events. */
  cudaEventElapsed(start: NativeEvent, end: NativeEvent): number;
  /** Device memory of cuda:device: attnkit's live bytes and the default pool's reserved and used bytes. */
  cudaMemoryStats(device: number): { allocated: number; reserved: number; used: number } | null;
  /** Test hook: a kernel that makes an illegal memory access (the device context is lost). */
  cudaTestFault(stream: NativeStream): void;
  /**
   * Test hook: arms the next n allocation failures of host tensor storage and of CPU kernel
   * scratch (0 disarms); reports the waits not yet settled or discarded, process-wide.
   */
  testHooks(arm?: { storage?: number; scratch?: number }): {
    liveCompletions: number;
    armed: { storage: number; scratch: number };
  };
  /** Test hook: the dense mask policy on every element and tile (tile classes 0 skip, 1 full, 2 partial). */
  denseMaskProbe(
    Nq: number,
    Nk: number,
    causal: boolean,
    left: number,
    right: number,
    tq: number,
    tk: number,
  ): { allows: Uint8Array; classes: Int32Array; keyRanges: Int32Array; queryRanges: Int32Array };
  /** Linear attention forward (src/ops/linear.ts); states may be null. */
  linearForward(
    stream: NativeStream,
    q: NativeStorage,
    k: NativeStorage,
    v: NativeStorage,
    initialState: NativeStorage | null,
    out: NativeStorage,
    finalState: NativeStorage | null,
    p: LinearParams,
    gate?: NativeStorage | null,
  ): void;
  linearBackward(
    stream: NativeStream,
    q: NativeStorage,
    k: NativeStorage,
    v: NativeStorage,
    initialState: NativeStorage | null,
    dOut: NativeStorage,
    dFinalState: NativeStorage | null,
    dq: NativeStorage,
    dk: NativeStorage,
    dv: NativeStorage,
    dInitialState: NativeStorage | null,
    p: LinearParams,
    gate?: NativeStorage | null,
    dGate?: NativeStorage | null,
  ): void;
  /** One decode step (p.N = 1); `state` may be null (zero), `newState` must be a fresh tensor. */
  linearStep(
    stream: NativeStream,
    q: NativeStorage,
    k: NativeStorage,
    v: NativeStorage,
    state: NativeStorage | null,
    out: NativeStorage,
    newState: NativeStorage,
    p: LinearParams,
    gate?: NativeStorage | null,
  ): void;
  /** Neighborhood attention (src/ops/neighborhood.ts); `p`: sizes, per-axis options, tile. */
  naForward(s: NativeStream, q: NativeStorage, k: NativeStorage, v: NativeStorage, out: NativeStorage, lse: NativeStorage, p: object): void;
  naBackward(s: NativeStream, ...args: [...BackwardTensors, p: object]): void;
  /** Tile-level statistics of the neighborhood policy (what `attnkit sim` prints). */
  naPlan(p: NaParams): NeighborhoodPlan;
  /** Test hook: the neighborhood policy on every position and tile pair, per dilation group. */
  naMaskProbe(p: NaParams): NaProbeGroup[];
  /** Block-sparse attention (src/ops/block-sparse.ts); `mask`: the five BlockMask buffers. */
  bsForward(s: NativeStream, q: NativeStorage, k: NativeStorage, v: NativeStorage, out: NativeStorage, lse: NativeStorage, mask: NativeStorage[], p: object): void;
  bsBackward(s: NativeStream, ...args: [...BackwardTensors, mask: NativeStorage[], p: object]): void;
  /** Int32 elements of a CUDA BlockMask's device plan (native/cuda/block_sparse/plan.h) for its geometry and list capacity. */
  bsPlanInts(p: { maskB: number; maskH: number; Nq: number; Nk: number; blockQ: number; blockK: number; listed: number }): number;
  /** Block selection (src/ops/selection.ts): scores, selected blocks and the mask's five buffers. */
  mobaSelect(s: NativeStream, q: NativeStorage, k: NativeStorage, scores: NativeStorage, selected: NativeStorage, mask: NativeStorage[], p: object): void;
  xattnSelect(s: NativeStream, q: NativeStorage, k: NativeStorage, scores: NativeStorage, selected: NativeStorage, mask: NativeStorage[], p: object): void;
}

/** Problem descriptor of the linear-attention family (native/include/attnkit/linear.h). */
export interface LinearParams {
  B: number;
  N: number;
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  normalize: boolean;
  causal: boolean;
  /** 0 identity, 1 elu1, 2 relu */
  featureMap: number;
  scale: number;
  eps: number;
  /** [H] per query head, in (0, 1] */
  decay: Float64Array;
}

/** Parameters of the native neighborhood policy: per-axis arrays of length rank. */
export interface NaParams {
  rank: number;
  size: number[];
  kernel: number[];
  stride: number[];
  dilation: number[];
  causal: boolean[];
  tile: number[];
}

/** Tile-level statistics of a neighborhood problem (per batch and head). */
export interface NeighborhoodPlan {
  /** Tile pairs a dense kernel visits over the same tokens. */
  densePairs: number;
  /** Visited tile pairs that need no element masking. */
  fullPairs: number;
  /** Visited tile pairs with element masking. */
  partialPairs: number;
  /** Visible (query, key) pairs. */
  visible: number;
}

/** What naMaskProbe reports for one dilation group (test/neighborhood-policy.test.ts). */
export interface NaProbeGroup {
  /** position -> token, -1 for padding */
  tokens: Int32Array;
  /** class of every (query tile, key tile) pair: 0 skip, 1 full, 2 partial */
  classes: Int32Array;
  /** row mask of every (query position, key tile) */
  rowMasks: BigUint64Array;
  /** key tiles of every query tile (forward, dQ) */
  kvLists: Int32Array[];
  /** query tiles of every key tile (dK/dV) */
  qLists: Int32Array[];
  qTiles: number;
  kTiles: number;
}

/** The package root (the folder holding package.json), from src/ or dist/src/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('attnkit: package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** Where node-gyp-build looked for the addon, in its order, and what each place held. */
function searchedPlaces(root: string): string[] {
  const tuple = `${process.platform}-${process.arch}`;
  const lines: string[] = [];
  const nodeFiles = (dir: string): string => {
    if (!existsSync(dir)) return 'missing';
    const files = readdirSync(dir).filter((f) => f.endsWith('.node'));
    return files.length > 0 ? `found ${files.join(', ')}` : 'no .node file';
  };
  let dir = root;
  const override = process.env.ATTNKIT_PREBUILD;
  if (override) {
    lines.push(`ATTNKIT_PREBUILD=${override} (searched instead of ${root})`);
    dir = override;
  }
  if (process.env.PREBUILDS_ONLY) lines.push('build/Release and build/Debug: skipped (PREBUILDS_ONLY is set)');
  else for (const d of ['build/Release', 'build/Debug']) lines.push(`${join(dir, d)}: ${nodeFiles(join(dir, d))}`);
  lines.push(`${join(dir, 'prebuilds', tuple)}: ${nodeFiles(join(dir, 'prebuilds', tuple))}`);
  const nearby = join(dirname(process.execPath), 'prebuilds', tuple);
  lines.push(`${nearby}: ${nodeFiles(nearby)}`);
  return lines;
}

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  // An explicit addon file, for testing (test/cuda-fake-device.test.ts loads a build against a fake
  // CUDA device this way); no search, no fallback.
  const explicit = process.env.ATTNKIT_ADDON;
  if (explicit) {
    try {
      return require(explicit) as NativeBinding;
    } catch (e) {
      throw new AttnkitError('ERR_ATTNKIT_LOAD', 'load', `attnkit: could not load ATTNKIT_ADDON=${explicit}: ${(e as Error).message}`);
    }
  }
  const root = packageRoot();
  const gypBuild = require('node-gyp-build') as (dir: string) => NativeBinding;
  try {
    return gypBuild(root);
  } catch (e) {
    const cause = (e as Error).message.trim();
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    const glibc = header?.glibcVersionRuntime;
    const hints: string[] = [];
    if (/GLIBC(XX)?_[0-9.]+' not found/.test(cause))
      hints.push(`This system's C library is too old for the binary${glibc ? ` (glibc ${glibc})` : ''}: the linux-x64 prebuild needs glibc >= 2.34. Build from source (below).`);
    if (process.platform === 'linux' && glibc === undefined)
      hints.push('This looks like a musl system (Alpine): the shipped prebuild is for glibc. Build from source (below).');
    throw new AttnkitError(
      'ERR_ATTNKIT_LOAD',
      'load',
      [
        `attnkit: could not load the native addon for ${process.platform}-${process.arch} (Node ${process.version}).`,
        'Looked in, in this order:',
        ...searchedPlaces(root).map((l) => `  - ${l}`),
        `Cause: ${cause.replace(/\s*\n\s*/g, ' ')}`,
        ...hints,
        'Prebuilt binaries ship for linux-x64 (glibc >= 2.34). Elsewhere, build from source:',
        '  - in a git clone: `npm install` (or `npm run build:native`; CMake >= 3.18 and a C++17 compiler, CUDA when nvcc is found;',
        '    without CMake it falls back to the CPU-only node-gyp build, also `npm run build:gyp`);',
        `  - as a dependency: \`npm install --no-save cmake-js@8 node-addon-api@8\`, then \`node ${join(root, 'scripts', 'build-native.mjs')}\``,
        '    (add --gyp for the CPU-only node-gyp build when CMake is missing).',
        'Details: docs/install.md.',
      ].join('\n'),
    );
  }
}

/** The loaded binding. */
export const native: NativeBinding = load();
