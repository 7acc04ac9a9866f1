#!/usr/bin/env node
/**
 * The `attnkit` command (DESIGN §10).
 *
 *   attnkit info [--json] [--kernels]
 *                             version, CPU kernel level (in use and detected), threads, CUDA status;
 *                             with --kernels the compile-gate report of the CUDA kernels (registers,
 *                             shared memory, spills per kernel and arch; build/compile-gate/*.json)
 *   attnkit bench [options]   validated timings of the ops, as a table or JSON; --device cuda[:N]
 *                             times attention on a GPU with CUDA events (skipped, with the reason,
 *                             where CUDA is unavailable)
 *   attnkit sim [options]     upper bounds of the neighborhood-attention speedup over dense attention
 *                             (FLOP ratio, tile level) and whether the tiles are fully block-sparse
 *
 * `attnkit bench` with no --op runs the main benchmark: attention in float32 and bfloat16, without
 * and with the causal mask, forward and backward, at the default shape [B, N, H, D] = [1, 4096, 4,
 * 64]. With `--op attention` the other options choose what to time (default: float32, no mask,
 * forward, N in 1024, 2048, 4096). With `--op na1d|na2d|na3d` it times neighborhood attention and
 * dense attention on the same tokens (bench/neighborhood.ts); without --input, the configurations of
 * the neighborhood issue for that op, in float32 and bfloat16.
 *
 * The library is imported only once the arguments are parsed, so that `--threads` can set
 * ATTNKIT_NUM_THREADS before the native thread pool starts.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Presets, SingleBar } from 'cli-progress';
import type { FloatDType } from '../dtype.js';
import type { AttentionBenchReport, BenchShape, MaskName } from '../../bench/attention.js';
import type { NaBenchConfig, NaOp, NaProblem } from '../../bench/neighborhood.js';
import type { CudaBenchReport, CudaDType } from '../../bench/cuda.js';
// bench/common.ts does not load the addon, so it can be imported before --threads applies.
import { fmt, formatTable, PEAK_GFLOPS_PER_THREAD } from '../../bench/common.js';

const DTYPE_CHOICES = ['float32', 'bfloat16', 'float16'] as const;
const OPS = ['attention', 'na1d', 'na2d', 'na3d', 'blocksparse', 'moba', 'xattention', 'linear'] as const;
const BS_OPS = ['blocksparse', 'moba', 'xattention'] as const;
const NA_OPS = ['na1d', 'na2d', 'na3d'] as const;
const NA_DEFAULT_HEADS = 4;
const NA_DEFAULT_HEAD_DIM = 64;
const NA_DEFAULT_REPEATS = 5;
// Dense attention at N = 32768 takes seconds per run: its timed runs stop after this budget.
const NA_DENSE_BUDGET_MS = 3000;
const DEFAULT_SHAPE = { B: 1, H: 4, D: 64 } as const;
const DEFAULT_N = 4096;
const SWEEP_N = [1024, 2048, 4096] as const;
const QUICK_N = 1024;
const DEFAULT_REPEATS = 10;
const QUICK_REPEATS = 3;
const WARMUP = 1;

/** The package root (the folder holding package.json), found without loading the native addon. */
function packageDir(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
  return dir;
}

/** The package version, read without loading the native addon. */
function packageVersion(): string {
  const dir = packageDir();
  if (dir === null) return 'unknown';
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}

/** A device for --device: cpu, cuda or cuda:N (checked against the machine later). */
function parseDeviceArg(value: string): string {
  const v = value.trim();
  if (!/^(cpu|cuda(:\d+)?)$/.test(v)) throw new InvalidArgumentError("expected 'cpu', 'cuda' or 'cuda:N'.");
  return v === 'cuda' ? 'cuda:0' : v;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError('expected a positive integer.');
  return n;
}

function parseShape(value: string): BenchShape {
  const parts = value.split(',').map((x) => x.trim());
  const nums = parts.map(Number);
  if (parts.length !== 4 || parts.some((x) => !/^\d+$/.test(x)) || nums.some((n) => n < 1))
    throw new InvalidArgumentError('expected four positive integers B,N,H,D (e.g. 1,4096,4,64).');
  const [B, N, H, D] = nums as [number, number, number, number];
  return { B, N, H, D };
}

/** A comma-separated list of positive integers: one per axis, or one for every axis. */
function parseAxes(value: string): number[] {
  const parts = value.split(',').map((x) => x.trim());
  if (parts.length < 1 || parts.length > 3 || parts.some((x) => !/^\d+$/.test(x) || Number(x) < 1))
    throw new InvalidArgumentError('expected one to three positive integers separated by commas (e.g. 56,56).');
  return parts.map(Number);
}

/** Per-axis causal flags: 1/0/true/false, comma-separated; a bare flag means every axis. */
function parseCausal(value: string | true): boolean[] | true {
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

interface NaCliOpts {
  op?: string;
  input?: number[];
  kernel?: number[];
  stride?: number[];
  dilation?: number[];
  causal?: boolean[] | true;
  tile?: number[];
}

/** The neighborhood problem of the command line (rank from --op). */
function naProblem(o: NaCliOpts, dflt?: { input: number[]; kernel: number[] }): NaProblem {
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

/** Estimated peak GFLOP/s of this machine, per compute kind, or null when unknown. */
function peakEstimate(isa: string, threads: number): Record<string, number> | null {
  const perThread = PEAK_GFLOPS_PER_THREAD[isa];
  if (!perThread) return null;
  return Object.fromEntries(Object.entries(perThread).map(([k, v]) => [k, v * threads]));
}

// ------------------------------------------------------------------ info

/** One row of a compile-gate report (scripts/compile-gate.mjs). */
interface GateKernel {
  kernel: string;
  arch: string;
  entry: boolean;
  registers: number | null;
  smem: number;
  dynamicSmem: number;
  spillStores: number;
  spillLoads: number;
  stackFrame: number;
  mma: number;
  tensorCore: boolean;
  violations: string[];
}
interface GateReport {
  file: string;
  nvcc?: string;
  archs?: string[];
  ok?: boolean;
  kernels?: GateKernel[];
  violations?: string[];
  error?: string;
}

/**
 * The compile-gate reports: every JSON file in $ATTNKIT_COMPILE_GATE_DIR, else in the package's
 * build/compile-gate/ (where scripts/compile-gate.mjs writes them). An unreadable file is listed
 * with its error.
 */
function compileGateReports(): { dir: string; reports: GateReport[] } {
  const dir = process.env.ATTNKIT_COMPILE_GATE_DIR ?? join(packageDir() ?? process.cwd(), 'build', 'compile-gate');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
  const reports = files.map((file): GateReport => {
    try {
      const r = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Omit<GateReport, 'file'>;
      if (!r || typeof r !== 'object' || !Array.isArray(r.kernels)) return { file, error: 'not a compile-gate report (no "kernels" list)' };
      return { file, ...r };
    } catch (e) {
      return { file, error: (e as Error).message };
    }
  });
  return { dir, reports };
}

/** The compile-gate section of `attnkit info --kernels`, as text. */
function kernelLines(gate: { dir: string; reports: GateReport[] }): string[] {
  const lines = ['CUDA kernels (compile gate)'];
  if (gate.reports.length === 0) {
    lines.push(
      `  no compile-gate report in ${gate.dir}`,
      '  (reports are written by `node scripts/compile-gate.mjs` in a build with nvcc; this install has none)',
    );
    return lines;
  }
  for (const r of gate.reports) {
    if (r.error) {
      lines.push(`  ${r.file}: unreadable: ${r.error}`);
      continue;
    }
    const violations = r.violations ?? [];
    lines.push(
      `  ${r.file}: nvcc ${r.nvcc ?? '?'}, ${(r.archs ?? []).join(', ') || 'no arch'}: ` +
        (r.ok ? 'passed' : `FAILED (${violations.length} violation${violations.length === 1 ? '' : 's'})`),
    );
    const entries = (r.kernels ?? []).filter((k) => k.entry);
    if (entries.length > 0) {
      const rows = [
        ['arch', 'regs', 'smem', '+dyn', 'spill st/ld', 'stack', 'mma', 'kernel'],
        ...entries.map((k) => [
          k.arch,
          String(k.registers ?? '?'),
          String(k.smem),
          String(k.dynamicSmem),
          `${k.spillStores}/${k.spillLoads}`,
          String(k.stackFrame),
          String(k.mma),
          // the demangled name without its parameter list
          k.kernel.replace(/\(.*\)$/, '') + (k.tensorCore ? '  [tensor core]' : ''),
        ]),
      ];
      lines.push(...formatTable(rows, new Set([1, 2, 3, 4, 5, 6])).split('\n').map((l) => `    ${l}`));
    } else {
      lines.push('    no kernels');
    }
    for (const v of violations) lines.push(`    violation: ${v.replace(/\n/g, '\n      ')}`);
  }
  return lines;
}

async function infoCommand(opts: { json?: boolean; kernels?: boolean }): Promise<void> {
  const ak = await import('../index.js');
  const i = ak.info();
  const peak = peakEstimate(i.cpu.isa, i.cpu.threads);
  const env: Record<string, string> = {};
  for (const key of ['ATTNKIT_CPU_ISA', 'ATTNKIT_NUM_THREADS', 'ATTNKIT_CUDA', 'ATTNKIT_CUDA_ARCHS'])
    if (process.env[key] !== undefined) env[key] = process.env[key]!;
  const gate = opts.kernels ? compileGateReports() : null;
  if (opts.json) {
    const out = {
      ...i,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      peakGflopsEstimate: peak,
      env,
      ...(gate ? { compileGate: gate } : {}),
    };
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const lines = [
    `attnkit ${i.version}  (node ${process.version}, ${process.platform}-${process.arch})`,
    'CPU',
    `  kernel level     ${i.cpu.isa} (detected: ${i.cpu.detectedIsa})`,
    `  threads          ${i.cpu.threads}`,
    `  peak (estimate)  ${
      peak
        ? Object.entries(peak)
            .map(([k, v]) => `${k} ${v} GFLOP/s`)
            .join(', ')
        : 'unknown for this kernel level'
    }`,
    'CUDA',
    `  compiled         ${yes(i.cuda.compiled)}`,
    `  archs            ${i.cuda.archs.length ? i.cuda.archs.join(', ') : '-'}`,
    `  available        ${i.cuda.available ? 'yes' : `no: ${i.cuda.reason}`}`,
    `  devices          ${i.cuda.deviceCount}`,
    ...i.cuda.devices.map(
      (d, n) =>
        `    cuda:${n}         ${d.name} (compute capability ${d.computeCapability}, ` +
        `${(d.memory / 2 ** 30).toFixed(1)} GiB, ${d.multiprocessors} SMs)`,
    ),
    `  attention        ${i.cuda.attentionKernels ? 'fused kernels compiled (float16, bfloat16)' : i.cuda.compiled ? 'no CUDA attention kernels in this build' : '-'}`,
  ];
  if (Object.keys(env).length)
    lines.push(
      'Environment',
      ...Object.entries(env).map(([k, v]) => `  ${k}=${v}`),
    );
  if (gate) lines.push(...kernelLines(gate));
  console.log(lines.join('\n'));
}

// ------------------------------------------------------------------ block-sparse bench and mask

function parseDensities(value: string): number[] {
  const d = value.split(',').map((x) => Number(x.trim()));
  if (d.length === 0 || d.some((x) => !Number.isFinite(x) || x < 0 || x > 1))
    throw new InvalidArgumentError('expected densities in [0, 1], comma separated (e.g. 0.05,0.1,1).');
  return d;
}

/** `bench --op blocksparse|moba|xattention`: bench/block-sparse.ts (validated before timing). */
async function bsBenchCommand(opts: BenchOpts): Promise<void> {
  const bs = await import('../../bench/block-sparse.js');
  const sweep = opts.op === 'blocksparse';
  const report = await bs.benchBlockSparse({
    densities: opts.density ?? bs.DEFAULT_DENSITIES,
    dtypes: opts.dtype ? [opts.dtype] : undefined,
    backward: opts.backward ?? sweep,
    skipDensity: !sweep,
    moba: opts.op === 'xattention' ? [] : opts.op === 'moba' ? bs.DEFAULT_MOBA : undefined,
    xattention: opts.op === 'moba' ? [] : opts.op === 'xattention' ? bs.DEFAULT_XATTN : undefined,
    repeats: opts.repeats ?? (opts.quick ? 2 : 3),
    N: opts.quick ? 2048 : undefined,
    onStep: (label: string) => {
      if (!opts.json && process.stderr.isTTY) process.stderr.write(`  ${label}\r`);
    },
  });
  process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${bs.formatBlockSparseReport(report)}\n`);
}

/** `bench --op linear`: bench/linear.ts (H = 8, D = 64, fixed B*N, N = 1K ... 64K, crossover). */
async function linearBenchCommand(opts: BenchOpts): Promise<void> {
  const lb = await import('../../bench/linear.js');
  const rep = await lb.benchLinear(
    opts.quick
      ? { Ns: [1024, 16384], crossoverNs: [128, 256], repeats: 2, denseMaxN: 1024, backward: opts.backward ?? false }
      : { backward: opts.backward ?? false, ...(opts.repeats ? { repeats: opts.repeats } : {}) },
  );
  process.stdout.write(opts.json ? `${JSON.stringify(rep, null, 2)}\n` : `${lb.formatLinearReport(rep)}\n`);
}

interface MaskOpts {
  svg: string;
  kind: 'causal' | 'window' | 'documents' | 'neighborhood';
  n?: number;
  nk?: number;
  blockQ?: number;
  blockK?: number;
  window?: number[];
  docs?: number[];
  input?: number[];
  kernel?: number[];
}

/** `attnkit mask --svg out.svg`: draws a mask built by one of the builders. */
async function maskCommand(o: MaskOpts): Promise<void> {
  const ak = await import('../index.js');
  const { maskToSvg } = await import('./mask-svg.js');
  const { writeFileSync } = await import('node:fs');
  const blocks = { blockQ: o.blockQ ?? 16, blockK: o.blockK ?? 16 };
  const n = o.n ?? 256;
  let mask;
  switch (o.kind) {
    case 'causal':
      mask = ak.BlockMask.causal(n, o.nk ?? n, blocks);
      break;
    case 'window': {
      const [left, right] = o.window ?? [32, 0];
      mask = ak.BlockMask.slidingWindow(n, o.nk ?? n, left!, right ?? left!, blocks);
      break;
    }
    case 'documents':
      mask = ak.BlockMask.documents(o.docs ?? [40, 1, 0, 90, 125], blocks);
      break;
    case 'neighborhood':
      mask = ak.BlockMask.neighborhood({ size: o.input ?? [16, 16], kernelSize: o.kernel ?? (o.input ?? [16, 16]).map(() => 5) }, blocks);
      break;
  }
  const svg = await maskToSvg(mask, { title: `${o.kind} mask, blocks ${blocks.blockQ}x${blocks.blockK}` });
  writeFileSync(o.svg, svg);
  const c = await mask.counts();
  process.stdout.write(`wrote ${o.svg}: ${mask.Nq}x${mask.Nk} tokens, ${c.full} full and ${c.partial} partial blocks, density ${(await mask.density()).toFixed(3)}\n`);
}

// ------------------------------------------------------------------ bench

interface BenchOpts extends NaCliOpts {
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

async function benchCommand(opts: BenchOpts): Promise<void> {
  if (opts.threads !== undefined) process.env.ATTNKIT_NUM_THREADS = String(opts.threads);
  if (opts.device !== undefined && opts.device !== 'cpu') return cudaBenchCommand(opts);
  if (opts.op !== undefined && (NA_OPS as readonly string[]).includes(opts.op)) return naBenchCommand(opts);
  if (opts.op !== undefined && (BS_OPS as readonly string[]).includes(opts.op)) return bsBenchCommand(opts);
  if (opts.op === 'linear') return linearBenchCommand(opts);
  if (opts.density !== undefined) throw new Error(`--density applies to --op blocksparse only.`);
  for (const key of ['input', 'kernel', 'stride', 'dilation', 'tile', 'heads', 'headDim'] as const)
    if (opts[key] !== undefined)
      throw new Error(`--${key === 'headDim' ? 'head-dim' : key} applies to --op ${NA_OPS.join('|')} only.`);
  if (Array.isArray(opts.causal)) throw new Error('--causal takes no value for --op attention.');
  const ak = await import('../index.js');
  const { benchAttention, countSteps, ValidationFailure, VALIDATION_N } = await import('../../bench/attention.js');

  const i = ak.info();
  if (opts.threads !== undefined && i.cpu.threads !== opts.threads)
    process.stderr.write(
      `attnkit bench: asked for ${opts.threads} threads, the pool has ${i.cpu.threads} ` +
        `(it was started before --threads applied)\n`,
    );

  // Plain `attnkit bench` (no --op) is the main benchmark: both dtypes, both masks, both passes.
  const suite = opts.op === undefined;
  const quick = opts.quick === true;
  const shapes: BenchShape[] = opts.shape
    ? [opts.shape]
    : quick
      ? [{ ...DEFAULT_SHAPE, N: QUICK_N }]
      : suite
        ? [{ ...DEFAULT_SHAPE, N: DEFAULT_N }]
        : SWEEP_N.map((N) => ({ ...DEFAULT_SHAPE, N }));
  const dtypes: FloatDType[] = opts.dtype ? [opts.dtype] : suite ? ['float32', 'bfloat16'] : ['float32'];
  const masks: MaskName[] = opts.causal ? ['causal'] : suite ? ['none', 'causal'] : ['none'];
  const backward = opts.backward === true || suite;
  const repeats = opts.repeats ?? (quick ? QUICK_REPEATS : DEFAULT_REPEATS);

  const config = { shapes, dtypes, masks, backward, repeats, warmup: WARMUP };
  const bar =
    process.stdout.isTTY && !opts.json
      ? new SingleBar(
          { format: 'bench [{bar}] {value}/{total}  {task}', clearOnComplete: true, hideCursor: true },
          Presets.shades_classic,
        )
      : null;
  bar?.start(countSteps(config), 0, { task: 'validating' });

  let report: AttentionBenchReport;
  try {
    report = await benchAttention({ ...config, onStep: (task) => bar?.increment(1, { task }) });
  } catch (e) {
    bar?.stop();
    if (e instanceof ValidationFailure) {
      if (opts.json) console.log(JSON.stringify({ ok: false, error: e.message, validation: e.validation }, null, 2));
      process.stderr.write(`attnkit bench: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
  bar?.stop();

  const perThread = PEAK_GFLOPS_PER_THREAD[report.isa] ?? null;
  if (opts.json) {
    console.log(
      JSON.stringify(
        {
          ok: true,
          version: i.version,
          device: 'cpu',
          isa: report.isa,
          detectedIsa: i.cpu.detectedIsa,
          threads: report.threads,
          warmup: WARMUP,
          peak: {
            estimate: true,
            perThreadGflops: perThread,
            note: 'estimated from the kernel level and thread count (Sapphire Rapids figures), not measured',
          },
          validation: report.validation,
          results: report.results,
        },
        null,
        2,
      ),
    );
    return;
  }

  const rows = [
    ['op', 'shape B,N,H,D', 'dtype', 'mask', 'pass', 'median ms', 'min ms', 'GFLOP/s', 'unit', '% peak (est.)'],
    ...report.results.map((r) => [
      r.op,
      r.shape.join(','),
      r.dtype,
      r.mask,
      r.pass === 'forward' ? 'fwd' : 'bwd',
      fmt(r.medianMs, 4),
      fmt(r.minMs, 4),
      fmt(r.gflops, 4),
      r.compute,
      r.peakPercent === null ? '' : `${r.peakPercent.toFixed(1)}%`,
    ]),
  ];
  const worst = (key: string) => Math.max(...report.validation.map((v) => v.errors[key] ?? 0));
  const checked = ['out', 'lse', ...(backward ? ['dq', 'dk', 'dv'] : [])];
  console.log(
    [
      `attnkit ${i.version} bench: cpu, kernel level ${report.isa}, ${report.threads} threads; ` +
        `median of ${repeats} runs after ${WARMUP} warm-up`,
      `validated against the float64 reference (N=${VALIDATION_N}), worst errors ` +
        '(relative to the largest reference value; lse absolute): ' +
        checked.map((k) => `${k} ${worst(k).toExponential(1)}`).join(', '),
      '',
      formatTable(rows, new Set([5, 6, 7, 9])),
      '',
      'FLOP: forward = 4 x visible query-key pairs x D, backward = 2.5 x forward.',
      perThread
        ? `% peak is an ESTIMATE from the kernel level and thread count: ${Object.entries(perThread)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')} GFLOP/s per thread (Sapphire Rapids figures), against the unit that ` +
          'bounds each row; blank where that unit has no estimate.'
        : `% peak: no estimate for kernel level ${report.isa}.`,
    ].join('\n'),
  );
}

// ------------------------------------------------------------------ bench --device cuda

async function cudaBenchCommand(opts: BenchOpts): Promise<void> {
  const device = opts.device!;
  if (opts.op !== undefined && opts.op !== 'attention')
    throw new Error(`--op ${opts.op} runs on the CPU only (not implemented on CUDA yet); --device cuda times --op attention.`);
  for (const key of ['input', 'kernel', 'stride', 'dilation', 'tile', 'heads', 'headDim', 'threads', 'density'] as const)
    if (opts[key] !== undefined)
      throw new Error(`--${key === 'headDim' ? 'head-dim' : key} does not apply to --device ${device}.`);
  if (Array.isArray(opts.causal)) throw new Error('--causal takes no value for --op attention.');
  if (opts.dtype === 'float32')
    throw new Error('--dtype float32: the CUDA kernels take float16 or bfloat16.');
  const ak = await import('../index.js');
  const cb = await import('../../bench/cuda.js');
  const version = ak.info().version;
  const why = cb.cudaBenchUnavailable(device);
  if (why) {
    // Not an error: the CUDA benchmark is for GPU machines; on others it says why and succeeds.
    if (opts.json) console.log(JSON.stringify({ ok: true, skipped: true, version, device, reason: why }, null, 2));
    else console.log(`attnkit bench --device ${device}: skipped: ${why}`);
    return;
  }
  const suite = opts.op === undefined;
  const quick = opts.quick === true;
  const shapes: BenchShape[] = opts.shape ? [opts.shape] : cb.defaultCudaShapes(quick);
  const dtypes: CudaDType[] = opts.dtype ? [opts.dtype as CudaDType] : suite ? [...cb.CUDA_DTYPES] : ['bfloat16'];
  const masks: MaskName[] = opts.causal ? ['causal'] : suite ? ['none', 'causal'] : ['none'];
  const backward = opts.backward === true || suite;
  const repeats = opts.repeats ?? (quick ? QUICK_REPEATS : DEFAULT_REPEATS);
  const config = { device: device as `cuda:${number}`, shapes, dtypes, masks, backward, repeats, warmup: WARMUP };
  const bar =
    process.stdout.isTTY && !opts.json
      ? new SingleBar({ format: 'bench [{bar}] {value}/{total}  {task}', clearOnComplete: true, hideCursor: true }, Presets.shades_classic)
      : null;
  bar?.start(cb.countCudaSteps(config), 0, { task: 'validating' });
  let report: CudaBenchReport;
  try {
    report = await cb.benchCudaAttention({ ...config, onStep: (task) => bar?.increment(1, { task }) });
  } catch (e) {
    bar?.stop();
    if (e instanceof cb.CudaValidationFailure) {
      if (opts.json) console.log(JSON.stringify({ ok: false, error: e.message, validation: e.validation }, null, 2));
      process.stderr.write(`attnkit bench: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
  bar?.stop();
  if (opts.json) {
    console.log(
      JSON.stringify(
        { ok: true, version, device, deviceName: report.deviceName, timing: 'cuda-events', warmup: WARMUP, validation: report.validation, results: report.results },
        null,
        2,
      ),
    );
    return;
  }
  const rows = [
    ['op', 'shape B,N,H,D', 'dtype', 'mask', 'pass', 'median ms', 'min ms', 'TFLOP/s', 'vs dense'],
    ...report.results.map((r) => [
      r.op,
      r.shape.join(','),
      r.dtype,
      r.mask,
      r.pass === 'forward' ? 'fwd' : 'bwd',
      fmt(r.medianMs, 4),
      fmt(r.minMs, 4),
      fmt(r.tflops, 4),
      r.speedupVsDense === null ? '' : `${fmt(r.speedupVsDense, 3)}x`,
    ]),
  ];
  const worst = (key: string) => Math.max(...report.validation.map((v) => v.errors[key] ?? 0));
  const checked = ['out', 'lse', ...(backward ? ['dq', 'dk', 'dv'] : [])];
  console.log(
    [
      `attnkit ${version} bench: ${device} (${report.deviceName}); CUDA-event time, median of ${repeats} runs after ${WARMUP} warm-up`,
      'validated against the float64 reference (N=150), worst errors (relative to the largest reference value; lse absolute): ' +
        checked.map((k) => `${k} ${worst(k).toExponential(1)}`).join(', '),
      '',
      formatTable(rows, new Set([5, 6, 7, 8])),
      '',
      'FLOP: forward = 4 x visible query-key pairs x D, backward = 2.5 x forward; vs dense = dense ms / causal ms on the same shape.',
    ].join('\n'),
  );
}

// ------------------------------------------------------------------ neighborhood: sim and bench

const axesStr = (xs: readonly (number | boolean)[]) => xs.map((x) => (typeof x === 'boolean' ? (x ? 1 : 0) : x)).join('x');

async function simCommand(opts: NaCliOpts & { json?: boolean }): Promise<void> {
  const p = naProblem(opts);
  const { simulate } = await import('../../bench/neighborhood.js');
  const r = simulate(p, opts.tile);
  if (opts.json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const s = r.selected;
  const lines = [
    `attnkit sim: ${p.op} input ${axesStr(p.input)}, kernel ${axesStr(p.kernel)}, stride ${axesStr(p.stride)}, ` +
      `dilation ${axesStr(p.dilation)}, causal ${axesStr(p.causal)}`,
    `tokens ${r.tokens}, visible pairs ${r.visible} (${fmt(r.visible / r.tokens, 4)} per query)`,
    `FLOP-ratio upper bound (N^2 / visible):             ${fmt(r.flopBound, 4)}x`,
    `tile ${axesStr(s.tile)}${opts.tile ? '' : ' (the kernel\'s choice)'}: ${s.fullPairs} full + ${s.partialPairs} partial tile pairs ` +
      `of ${s.densePairs} dense`,
    `tile-level upper bound (dense / visited tile pairs): ${fmt(s.tileBound, 4)}x`,
    `fully block-sparse: ${yes(s.fullyBlockSparse)}${s.fullyBlockSparse ? ' (no element masking)' : ` (${s.partialPairs} tile pairs need element masks)`}`,
  ];
  if (r.candidates.length > 1) {
    const rows = [
      ['tile', 'full', 'partial', 'tile bound', 'block-sparse', 'note'],
      ...r.candidates.map((c) => [
        axesStr(c.tile),
        String(c.fullPairs),
        String(c.partialPairs),
        `${fmt(c.tileBound, 4)}x`,
        yes(c.fullyBlockSparse),
        c.tile.join() === r.chosenTile.join() ? '<- chosen' : '',
      ]),
    ];
    lines.push('', 'every candidate tile shape (64 tokens, powers of two):', formatTable(rows, new Set([1, 2, 3])));
  }
  console.log(lines.join('\n'));
}

async function naBenchCommand(opts: BenchOpts): Promise<void> {
  const ak = await import('../index.js');
  const nb = await import('../../bench/neighborhood.js');
  const op = opts.op as NaOp;
  const custom = opts.input !== undefined || opts.kernel !== undefined;
  const H = opts.heads ?? NA_DEFAULT_HEADS;
  let configs: NaBenchConfig[];
  if (custom) {
    const p = naProblem(opts);
    nb.checkProblem('bench', p);
    configs = [{ ...p, B: 1, H, D: opts.headDim ?? NA_DEFAULT_HEAD_DIM, ...(opts.tile ? { tile: opts.tile } : {}) }];
  } else {
    if (opts.stride || opts.dilation || opts.causal)
      throw new Error('--stride, --dilation and --causal need --input and --kernel.');
    configs = nb.DEFAULT_CONFIGS[op].map((c) => ({
      ...c,
      ...(opts.heads ? { H: opts.heads } : {}),
      ...(opts.headDim ? { D: opts.headDim } : {}),
      ...(opts.tile ? { tile: opts.tile } : {}),
    }));
  }
  for (const c of configs)
    if (c.tile && (c.tile.length !== c.input.length || c.tile.reduce((a, b) => a * b, 1) !== 64))
      throw new Error(`--tile must have ${c.input.length} entries holding 64 tokens (their product).`);
  const dtypes: FloatDType[] = opts.dtype ? [opts.dtype] : ['float32', 'bfloat16'];
  const repeats = opts.repeats ?? (opts.quick ? QUICK_REPEATS : NA_DEFAULT_REPEATS);
  const config = { configs, dtypes, backward: opts.backward === true, repeats, warmup: WARMUP, denseBudgetMs: NA_DENSE_BUDGET_MS };
  const bar =
    process.stdout.isTTY && !opts.json
      ? new SingleBar({ format: 'bench [{bar}] {value}/{total}  {task}', clearOnComplete: true, hideCursor: true }, Presets.shades_classic)
      : null;
  bar?.start(nb.countNaSteps(config), 0, { task: 'validating' });
  let report;
  try {
    report = await nb.benchNeighborhood({ ...config, onStep: (task) => bar?.increment(1, { task }) });
  } catch (e) {
    bar?.stop();
    if (e instanceof nb.NaValidationFailure) {
      if (opts.json) console.log(JSON.stringify({ ok: false, error: e.message, validation: e.validation }, null, 2));
      process.stderr.write(`attnkit bench: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
  bar?.stop();
  const i = ak.info();
  if (opts.json) {
    console.log(
      JSON.stringify(
        { ok: true, version: i.version, device: 'cpu', isa: report.isa, threads: report.threads, warmup: WARMUP, validation: report.validation, results: report.results },
        null,
        2,
      ),
    );
    return;
  }
  const rows = [
    ['op', 'input', 'kernel', 'stride', 'dil', 'causal', 'tile', 'dtype', 'pass', 'NA ms', 'GFLOP/s', 'dense ms', 'runs', 'speedup', 'tile bound', 'ratio', 'best', 'bwd/fwd'],
    ...report.results.map((r) => [
      r.op,
      axesStr(r.input),
      axesStr(r.kernel),
      axesStr(r.stride),
      axesStr(r.dilation),
      axesStr(r.causal),
      axesStr(r.tile),
      r.dtype,
      r.pass === 'forward' ? 'fwd' : 'bwd',
      fmt(r.na.medianMs, 4),
      fmt(r.na.gflops, 4),
      fmt(r.dense.medianMs, 4),
      String(r.dense.repeats),
      `${fmt(r.speedup, 3)}x`,
      `${fmt(r.tileBound, 3)}x${r.fullyBlockSparse ? '*' : ''}`,
      `${Math.round(100 * r.ratio)}%`,
      `${Math.round(100 * r.ratioBest)}%`,
      r.backwardOverForward === null ? '' : `${fmt(r.backwardOverForward, 3)}x`,
    ]),
  ];
  const worst = (key: string) => Math.max(...report.validation.map((v) => v.errors[key] ?? 0));
  const checked = ['out', 'lse', ...(config.backward ? ['dq', 'dk', 'dv'] : [])];
  console.log(
    [
      `attnkit ${i.version} bench: cpu, kernel level ${report.isa}, ${report.threads} threads; B=1, H=${configs[0]!.H}; ` +
        `neighborhood: median of ${repeats} runs after ${WARMUP} warm-up; dense attention on the same tokens: ` +
        `median of the runs column (stopped after ${NA_DENSE_BUDGET_MS / 1000} s)`,
      'validated against the float64 reference on a small instance of each configuration, worst errors ' +
        '(relative to the largest reference value; lse absolute): ' +
        checked.map((k) => `${k} ${worst(k).toExponential(1)}`).join(', '),
      '',
      formatTable(rows, new Set([9, 10, 11, 12, 13, 14, 15, 16, 17])),
      '',
      'GFLOP/s counts visible pairs only: forward = 4 x visible pairs x D, backward = 2.5 x forward.',
      'speedup = dense ms / NA ms; tile bound = dense tile pairs / visited tile pairs (`attnkit sim`, * = fully ' +
        'block-sparse); ratio = speedup / tile bound (medians); best = the same from the fastest run of each.',
    ].join('\n'),
  );
}

// ------------------------------------------------------------------ program

const program = new Command();
program
  .name('attnkit')
  .description('Fused attention kernels for Node.js: machine information, benchmarks and the neighborhood simulator.')
  .version(packageVersion())
  .showHelpAfterError('(add --help for usage)');

program
  .command('info')
  .description('version, CPU kernel level and threads, CUDA build and availability; --kernels: the CUDA compile-gate report')
  .option('--json', 'machine-readable output')
  .option('--kernels', 'the compile-gate report of the CUDA kernels: registers, shared memory and spills per kernel and arch')
  .action(infoCommand);

program
  .command('bench')
  .description(
    'validate, then time an op; with no --op: attention in float32 and bfloat16, without and ' +
      `with the causal mask, forward and backward, at [B,N,H,D] = [1,${DEFAULT_N},4,64]`,
  )
  .addOption(new Option('--op <name>', 'operation to benchmark').choices(OPS))
  .option(
    '--device <device>',
    'cpu (default), or cuda[:N]: attention on a GPU timed with CUDA events (skipped, with the reason, without CUDA)',
    parseDeviceArg,
  )
  .addOption(new Option('--dtype <dtype>', 'element type (default float32; neighborhood: float32 and bfloat16)').choices(DTYPE_CHOICES))
  .option('--causal [axes]', 'causal mask; neighborhood: per axis (1,0), bare = every axis', parseCausal)
  .option('--backward', 'time the backward as well')
  .option('--input <X[,Y[,Z]]>', 'neighborhood: input size per axis (default: the issue configurations)', parseAxes)
  .option('--kernel <k>', 'neighborhood: kernel size, one or per axis', parseAxes)
  .option('--stride <s>', 'neighborhood: stride, one or per axis (default 1)', parseAxes)
  .option('--dilation <d>', 'neighborhood: dilation, one or per axis (default 1)', parseAxes)
  .option('--tile <t>', 'neighborhood: tile shape, 64 tokens (default: the one the kernel picks)', parseAxes)
  .option('--heads <H>', `neighborhood: heads (default ${NA_DEFAULT_HEADS})`, positiveInt)
  .option('--head-dim <D>', `neighborhood: head dim (default ${NA_DEFAULT_HEAD_DIM})`, positiveInt)
  .option(
    '--shape <B,N,H,D>',
    `one shape instead of the default (N in ${SWEEP_N.join(', ')} with B=1, H=4, D=64)`,
    parseShape,
  )
  .option('--density <list>', 'blocksparse: block densities to sweep (default 0.05,0.1,0.25,0.5,1)', parseDensities)
  .option('--repeats <n>', `timed runs per measurement (default ${DEFAULT_REPEATS}, ${QUICK_REPEATS} with --quick)`, positiveInt)
  .option('--threads <n>', 'compute threads (sets ATTNKIT_NUM_THREADS)', positiveInt)
  .option('--json', 'machine-readable output')
  .option('--quick', `a short run: N = ${QUICK_N} only, ${QUICK_REPEATS} repeats`)
  .action(benchCommand);

program
  .command('mask')
  .description('draw a block mask as SVG: block grid with full/partial/empty shading, element pattern inside partial blocks when small')
  .requiredOption('--svg <file>', 'output SVG file')
  .addOption(new Option('--kind <kind>', 'which builder').choices(['causal', 'window', 'documents', 'neighborhood']).default('causal'))
  .option('--n <N>', 'query tokens (default 256)', positiveInt)
  .option('--nk <N>', 'key tokens (default: --n)', positiveInt)
  .option('--block-q <b>', 'query block size (default 16)', positiveInt)
  .option('--block-k <b>', 'key block size (default 16)', positiveInt)
  .option('--window <left,right>', 'window: left,right (-1 = unbounded)', (v: string) => v.split(',').map(Number))
  .option('--docs <lengths>', 'documents: sequence lengths', (v: string) => v.split(',').map(Number))
  .option('--input <X[,Y[,Z]]>', 'neighborhood: grid', parseAxes)
  .option('--kernel <k>', 'neighborhood: kernel size per axis', parseAxes)
  .action(maskCommand);

program
  .command('sim')
  .description(
    'neighborhood attention: upper bounds of the speedup over dense attention (FLOP ratio and ' +
      'tile level) for the tile shapes the kernel uses, and whether the configuration is fully block-sparse',
  )
  .addOption(new Option('--op <name>', 'neighborhood op').choices(NA_OPS).makeOptionMandatory())
  .requiredOption('--input <X[,Y[,Z]]>', 'input size per axis', parseAxes)
  .requiredOption('--kernel <k>', 'kernel size, one or per axis', parseAxes)
  .option('--stride <s>', 'stride, one or per axis (default 1)', parseAxes)
  .option('--dilation <d>', 'dilation, one or per axis (default 1)', parseAxes)
  .option('--causal [axes]', 'causal per axis (1,0); bare = every axis', parseCausal)
  .option('--tile <t>', 'tile shape (64 tokens); default: the one the kernel picks, with every candidate listed', parseAxes)
  .option('--json', 'machine-readable output')
  .action(simCommand);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const err = e as Error & { code?: string };
  process.stderr.write(`attnkit: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
}
