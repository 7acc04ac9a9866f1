/**
 * `attnkit bench`: validated timings of the ops, as a table or JSON. With no --op, the main
 * benchmark (attention in float32 and bfloat16, without and with the causal mask, forward and
 * backward, at [B, N, H, D] = [1, 4096, 4, 64]); `--op attention` times what the other options
 * choose; `--op na1d|na2d|na3d` neighborhood attention against dense attention on the same tokens;
 * `--op blocksparse|moba|xattention` and `--op linear` their benchmarks; `--device cuda[:N]`
 * attention on a GPU with CUDA events. The implementations are in src/bench/; each is imported
 * only when it runs, after --threads has set ATTNKIT_NUM_THREADS.
 */
import { Presets, SingleBar } from 'cli-progress';
import type { FloatDType } from '../dtype.js';
import type { AttentionBenchReport, BenchShape, MaskName } from '../bench/attention.js';
import type { NaBenchConfig, NaOp } from '../bench/neighborhood.js';
import type { CudaBenchReport, CudaDType } from '../bench/cuda.js';
import { fmt, formatTable, PEAK_GFLOPS_PER_THREAD } from '../bench/common.js';
import {
  axesStr,
  BS_OPS,
  DEFAULT_N,
  DEFAULT_REPEATS,
  DEFAULT_SHAPE,
  NA_DEFAULT_HEAD_DIM,
  NA_DEFAULT_HEADS,
  NA_DEFAULT_REPEATS,
  NA_DENSE_BUDGET_MS,
  NA_OPS,
  naProblem,
  QUICK_N,
  QUICK_REPEATS,
  SWEEP_N,
  WARMUP,
  type BenchOpts,
} from './options.js';

/**
 * Runs a benchmark that validates before it times, behind a progress bar on a terminal (not with
 * --json) that `steps` onStep calls fill. When validation fails (a `failure`), prints why (as JSON
 * too with --json), sets exit code 1 and returns null.
 */
async function validatedRun<R>(
  opts: BenchOpts,
  steps: number,
  failure: abstract new (...args: never[]) => Error & { validation: unknown },
  run: (onStep: (task: string) => void) => Promise<R>,
): Promise<R | null> {
  const bar =
    process.stdout.isTTY && !opts.json
      ? new SingleBar(
          { format: 'bench [{bar}] {value}/{total}  {task}', clearOnComplete: true, hideCursor: true },
          Presets.shades_classic,
        )
      : null;
  bar?.start(steps, 0, { task: 'validating' });
  let report: R;
  try {
    report = await run((task) => bar?.increment(1, { task }));
  } catch (e) {
    bar?.stop();
    if (!(e instanceof failure)) throw e;
    if (opts.json) console.log(JSON.stringify({ ok: false, error: e.message, validation: e.validation }, null, 2));
    process.stderr.write(`attnkit bench: ${e.message}\n`);
    process.exitCode = 1;
    return null;
  }
  bar?.stop();
  return report;
}


export async function benchCommand(opts: BenchOpts): Promise<void> {
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
  const { benchAttention, countSteps, ValidationFailure, VALIDATION_N } = await import('../bench/attention.js');

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
  const report = await validatedRun<AttentionBenchReport>(opts, countSteps(config), ValidationFailure, (onStep) =>
    benchAttention({ ...config, onStep }),
  );
  if (report === null) return;

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
  const cb = await import('../bench/cuda.js');
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
  const report = await validatedRun<CudaBenchReport>(opts, cb.countCudaSteps(config), cb.CudaValidationFailure, (onStep) =>
    cb.benchCudaAttention({ ...config, onStep }),
  );
  if (report === null) return;
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

async function naBenchCommand(opts: BenchOpts): Promise<void> {
  const ak = await import('../index.js');
  const nb = await import('../bench/neighborhood.js');
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
  const report = await validatedRun(opts, nb.countNaSteps(config), nb.NaValidationFailure, (onStep) =>
    nb.benchNeighborhood({ ...config, onStep }),
  );
  if (report === null) return;
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

/** `bench --op blocksparse|moba|xattention`: src/bench/block-sparse.ts (validated before timing). */
async function bsBenchCommand(opts: BenchOpts): Promise<void> {
  const bs = await import('../bench/block-sparse.js');
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

/** `bench --op linear`: src/bench/linear.ts (H = 8, D = 64, fixed B*N, N = 1K ... 64K, crossover). */
async function linearBenchCommand(opts: BenchOpts): Promise<void> {
  const lb = await import('../bench/linear.js');
  const rep = await lb.benchLinear(
    opts.quick
      ? { Ns: [1024, 16384], crossoverNs: [128, 256], repeats: 2, denseMaxN: 1024, backward: opts.backward ?? false }
      : { backward: opts.backward ?? false, ...(opts.repeats ? { repeats: opts.repeats } : {}) },
  );
  process.stdout.write(opts.json ? `${JSON.stringify(rep, null, 2)}\n` : `${lb.formatLinearReport(rep)}\n`);
}
