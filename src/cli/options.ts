/**
 * What the `attnkit` commands share: the option choices and defaults, the option parsers commander
 * calls, and the package version. Nothing here loads the native addon (src/cli/index.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';
import type { FloatDType } from '../dtype.js';
import type { BenchShape } from '../bench/attention.js';
import type { NaOp, NaProblem } from '../bench/neighborhood.js';

export const DTYPE_CHOICES = ['float32', 'bfloat16', 'float16'] as const;
export const OPS = ['attention', 'na1d', 'na2d', 'na3d', 'blocksparse', 'moba', 'xattention', 'linear'] as const;
export const BS_OPS = ['blocksparse', 'moba', 'xattention'] as const;
export const NA_OPS = ['na1d', 'na2d', 'na3d'] as const;
export const NA_DEFAULT_HEADS = 4;
export const NA_DEFAULT_HEAD_DIM = 64;
export const NA_DEFAULT_REPEATS = 5;
// Dense attention at N = 32768 takes seconds per run: its timed runs stop after this budget.
export const NA_DENSE_BUDGET_MS = 3000;
export const DEFAULT_SHAPE = { B: 1, H: 4, D: 64 } as const;
export const DEFAULT_N = 4096;
export const SWEEP_N = [1024, 2048, 4096] as const;
export const QUICK_N = 1024;
export const DEFAULT_REPEATS = 10;
export const QUICK_REPEATS = 3;
export const WARMUP = 1;

/** The package root (the folder holding package.json), found without loading the native addon. */
export function packageDir(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
  return dir;
}

/** The package version, read without loading the native addon. */
export function packageVersion(): string {
  const dir = packageDir();
  if (dir === null) return 'unknown';
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}

/** A device for --device: cpu, cuda or cuda:N (checked against the machine later). */
export function parseDeviceArg(value: string): string {
  const v = value.trim();
  if (!/^(cpu|cuda(:\d+)?)$/.test(v)) throw new InvalidArgumentError("expected 'cpu', 'cuda' or 'cuda:N'.");
  return v === 'cuda' ? 'cuda:0' : v;
}

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError('expected a positive integer.');
  return n;
}

export function parseShape(value: string): BenchShape {
  const parts = value.split(',').map((x) => x.trim());
  const nums = parts.map(Number);
  if (parts.length !== 4 || parts.some((x) => !/^\d+$/.test(x)) || nums.some((n) => n < 1))
    throw new InvalidArgumentError('expected four positive integers B,N,H,D (e.g. 1,4096,4,64).');
  const [B, N, H, D] = nums as [number, number, number, number];
  return { B, N, H, D };
}

/** A comma-separated list of positive integers: one per axis, or one for every axis. */
export function parseAxes(value: string): number[] {
  const parts = value.split(',').map((x) => x.trim());
  if (parts.length < 1 || parts.length > 3 || parts.some((x) => !/^\d+$/.test(x) || Number(x) < 1))
    throw new InvalidArgumentError('expected one to three positive integers separated by commas (e.g. 56,56).');
  return parts.map(Number);
}

/** A comma-separated list of integers >= `min` (--window: -1 = unbounded; --docs: lengths >= 0). */
export function intList(min: number): (value: string) => number[] {
  return (value: string) => {
    const parts = value.split(',').map((x) => x.trim());
    if (parts.some((x) => !/^-?\d+$/.test(x) || !Number.isSafeInteger(Number(x)) || Number(x) < min))
      throw new InvalidArgumentError(`expected integers >= ${min} separated by commas.`);
    return parts.map(Number);
  };
}

/** Per-axis causal flags: 1/0/true/false, comma-separated; a bare flag means every axis. */
export function parseCausal(value: string | true): boolean[] | true {
  if (value === true) return true;
  const parts = value.split(',').map((x) => x.trim().toLowerCase());
  if (parts.length > 3 || parts.some((x) => !['1', '0', 'true', 'false'].includes(x)))
    throw new InvalidArgumentError('expected 1, 0, true or false per axis, separated by commas (e.g. 1,0).');
  return parts.map((x) => x === '1' || x === 'true');
}

/** One value per axis: `v` given for every axis (one entry) or per axis; `dflt` when absent. */
function perAxis<T>(name: string, v: T[] | undefined, dflt: T, rank: number): T[] {
  if (v === undefined) return new Array<T>(rank).fill(dflt);
  if (v.length === 1) return new Array<T>(rank).fill(v[0]!);
  if (v.length !== rank) throw new Error(`${name} has ${v.length} entries, expected 1 or ${rank} (one per axis).`);
  return v;
}

export interface NaCliOpts {
  op?: string;
  input?: number[];
  kernel?: number[];
  stride?: number[];
  dilation?: number[];
  causal?: boolean[] | true;
  tile?: number[];
}

/** The neighborhood problem of the command line (rank from --op). */
export function naProblem(o: NaCliOpts, dflt?: { input: number[]; kernel: number[] }): NaProblem {
  const op = o.op as NaOp;
  const rank = op === 'na1d' ? 1 : op === 'na2d' ? 2 : 3;
  const input = o.input ?? dflt?.input;
  const kernel = o.kernel ?? dflt?.kernel;
  if (!input) throw new Error(`--input is required for --op ${op}.`);
  if (!kernel) throw new Error(`--kernel is required for --op ${op}.`);
  const causal = o.causal === true ? [true] : o.causal;
  return {
    op,
    input: perAxis('--input', input, 0, rank),
    kernel: perAxis('--kernel', kernel, 0, rank),
    stride: perAxis('--stride', o.stride, 1, rank),
    dilation: perAxis('--dilation', o.dilation, 1, rank),
    causal: perAxis('--causal', causal, false, rank),
  };
}

export function parseDensities(value: string): number[] {
  const d = value.split(',').map((x) => Number(x.trim()));
  if (d.length === 0 || d.some((x) => !Number.isFinite(x) || x < 0 || x > 1))
    throw new InvalidArgumentError('expected densities in [0, 1], comma separated (e.g. 0.05,0.1,1).');
  return d;
}

export interface BenchOpts extends NaCliOpts {
  op?: (typeof OPS)[number];
  density?: number[];
  device?: string;
  dtype?: FloatDType;
  causal?: boolean[] | true;
  backward?: boolean;
  heads?: number;
  headDim?: number;
  shape?: BenchShape;
  repeats?: number;
  threads?: number;
  json?: boolean;
  quick?: boolean;
}

/** Per-axis values as the tables print them: 56x56, causal flags as 1/0. */
export const axesStr = (xs: readonly (number | boolean)[]) => xs.map((x) => (typeof x === 'boolean' ? (x ? 1 : 0) : x)).join('x');
