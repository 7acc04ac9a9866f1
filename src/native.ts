/**
 * Loads the native addon with node-gyp-build (build/Release, then prebuilds/<platform>-<arch>) and
 * describes the binding's surface. Only this module and the classes that wrap handles talk to it.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
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

export interface AttentionParams extends ShapeParams {
  scale: number;
  causal: boolean;
  left: number;
  right: number;
}

export interface NativeStream {
  synchronize(): Promise<void>;
  read(s: NativeStorage, asFloat32: boolean): Promise<ArrayBuffer>;
  randn(out: NativeStorage, seed: number): void;
  convert(src: NativeStorage, dst: NativeStorage): void;
  attentionForward(
    q: NativeStorage,
    k: NativeStorage,
    v: NativeStorage,
    out: NativeStorage,
    lse: NativeStorage,
    p: AttentionParams,
  ): void;
  attentionBackward(
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
    p: AttentionParams,
  ): void;
  mergeForward(
    outs: NativeStorage[],
    lses: NativeStorage[],
    out: NativeStorage,
    lse: NativeStorage,
    p: { rows: number; dv: number },
  ): void;
  mergeBackward(
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
  add(a: NativeStorage, b: NativeStorage, out: NativeStorage): void;
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
  };
}

export interface NativeBinding {
  NativeStorage: new (dtypeCode: number, numel: number, zero?: boolean) => NativeStorage;
  NativeStream: new () => NativeStream;
  info(): NativeInfo;
  setIsa(name: string): boolean;
  memory(): { cpu: number };
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
  ): void;
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
  decay: Float32Array;
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

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const gypBuild = require('node-gyp-build') as (dir: string) => NativeBinding;
  try {
    return gypBuild(root);
  } catch (e) {
    throw new AttnkitError(
      'ERR_ATTNKIT_LOAD',
      'load',
      `attnkit: could not load the native addon from ${root} (looked in build/Release, build/Debug ` +
        `and prebuilds/${process.platform}-${process.arch}). Build it with \`npm run build\` ` +
        `(cmake-js; CUDA when nvcc is found) or \`npm run build:gyp\` (node-gyp, CPU only). ` +
        `Cause: ${(e as Error).message}`,
    );
  }
}

/** The loaded binding. */
export const native: NativeBinding = load();
