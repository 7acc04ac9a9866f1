#!/usr/bin/env node
/**
 * The `attnkit` command (DESIGN §10).
 *
 *   attnkit info [--json]     version, CPU kernel level (in use and detected), threads, CUDA status
 *   attnkit bench [options]   validated timings of the ops, as a table or JSON
 *
 * `attnkit bench` with no --op runs the main benchmark: attention in float32 and bfloat16, without
 * and with the causal mask, forward and backward, at the default shape [B, N, H, D] = [1, 4096, 4,
 * 64]. With `--op attention` the other options choose what to time (default: float32, no mask,
 * forward, N in 1024, 2048, 4096).
 *
 * The library is imported only once the arguments are parsed, so that `--threads` can set
 * ATTNKIT_NUM_THREADS before the native thread pool starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Presets, SingleBar } from 'cli-progress';
import type { FloatDType } from '../dtype.js';
import type { AttentionBenchReport, BenchShape, MaskName } from '../../bench/attention.js';
// bench/common.ts does not load the addon, so it can be imported before --threads applies.
import { fmt, formatTable, PEAK_GFLOPS_PER_THREAD } from '../../bench/common.js';

const DTYPE_CHOICES = ['float32', 'bfloat16', 'float16'] as const;
const OPS = ['attention'] as const;
const DEFAULT_SHAPE = { B: 1, H: 4, D: 64 } as const;
const DEFAULT_N = 4096;
const SWEEP_N = [1024, 2048, 4096] as const;
const QUICK_N = 1024;
const DEFAULT_REPEATS = 10;
const QUICK_REPEATS = 3;
const WARMUP = 1;

/** The package version, read without loading the native addon. */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
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

/** Estimated peak GFLOP/s of this machine, per compute kind, or null when unknown. */
function peakEstimate(isa: string, threads: number): Record<string, number> | null {
  const perThread = PEAK_GFLOPS_PER_THREAD[isa];
  if (!perThread) return null;
  return Object.fromEntries(Object.entries(perThread).map(([k, v]) => [k, v * threads]));
}

// ------------------------------------------------------------------ info

async function infoCommand(opts: { json?: boolean }): Promise<void> {
  const ak = await import('../index.js');
  const i = ak.info();
  const peak = peakEstimate(i.cpu.isa, i.cpu.threads);
  const env: Record<string, string> = {};
  for (const key of ['ATTNKIT_CPU_ISA', 'ATTNKIT_NUM_THREADS', 'ATTNKIT_CUDA', 'ATTNKIT_CUDA_ARCHS'])
    if (process.env[key] !== undefined) env[key] = process.env[key]!;
  if (opts.json) {
    const out = {
      ...i,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      peakGflopsEstimate: peak,
      env,
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
  ];
  if (Object.keys(env).length)
    lines.push(
      'Environment',
      ...Object.entries(env).map(([k, v]) => `  ${k}=${v}`),
    );
  console.log(lines.join('\n'));
}

// ------------------------------------------------------------------ bench

interface BenchOpts {
  op?: (typeof OPS)[number];
  dtype?: FloatDType;
  causal?: boolean;
  backward?: boolean;
  shape?: BenchShape;
  repeats?: number;
  threads?: number;
  json?: boolean;
  quick?: boolean;
}

async function benchCommand(opts: BenchOpts): Promise<void> {
  if (opts.threads !== undefined) process.env.ATTNKIT_NUM_THREADS = String(opts.threads);
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

// ------------------------------------------------------------------ program

const program = new Command();
program
  .name('attnkit')
  .description('Fused attention kernels for Node.js: machine information and benchmarks.')
  .version(packageVersion())
  .showHelpAfterError('(add --help for usage)');

program
  .command('info')
  .description('version, CPU kernel level and threads, CUDA build and availability')
  .option('--json', 'machine-readable output')
  .action(infoCommand);

program
  .command('bench')
  .description(
    'validate, then time an op; with no --op: attention in float32 and bfloat16, without and ' +
      `with the causal mask, forward and backward, at [B,N,H,D] = [1,${DEFAULT_N},4,64]`,
  )
  .addOption(new Option('--op <name>', 'operation to benchmark').choices(OPS))
  .addOption(new Option('--dtype <dtype>', 'element type (default float32)').choices(DTYPE_CHOICES))
  .option('--causal', 'causal mask')
  .option('--backward', 'time the backward as well')
  .option(
    '--shape <B,N,H,D>',
    `one shape instead of the default (N in ${SWEEP_N.join(', ')} with B=1, H=4, D=64)`,
    parseShape,
  )
  .option('--repeats <n>', `timed runs per measurement (default ${DEFAULT_REPEATS}, ${QUICK_REPEATS} with --quick)`, positiveInt)
  .option('--threads <n>', 'compute threads (sets ATTNKIT_NUM_THREADS)', positiveInt)
  .option('--json', 'machine-readable output')
  .option('--quick', `a short run: N = ${QUICK_N} only, ${QUICK_REPEATS} repeats`)
  .action(benchCommand);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const err = e as Error & { code?: string };
  process.stderr.write(`attnkit: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
}
