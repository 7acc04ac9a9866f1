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
 *   attnkit mask --svg <file> [options]
 *                             a block mask drawn as SVG, with its block counts
 *
 * `attnkit bench` with no --op runs the main benchmark: attention in float32 and bfloat16, without
 * and with the causal mask, forward and backward, at the default shape [B, N, H, D] = [1, 4096, 4,
 * 64]. With `--op attention` the other options choose what to time (default: float32, no mask,
 * forward, N in 1024, 2048, 4096). With `--op na1d|na2d|na3d` it times neighborhood attention and
 * dense attention on the same tokens (src/bench/neighborhood.ts); without --input, the
 * configurations of the neighborhood issue for that op, in float32 and bfloat16.
 *
 * The library is imported only once the arguments are parsed, so that `--threads` can set
 * ATTNKIT_NUM_THREADS before the native thread pool starts: the command modules load it with
 * `await import(...)` (test/layering.test.ts checks that no static import reaches the addon).
 *
 * This file wires the program; each command lives in its own module (info.ts, bench.ts, mask.ts,
 * sim.ts) and the option parsers and defaults in options.ts.
 */
import { Command, Option } from 'commander';
import { benchCommand } from './bench.js';
import { infoCommand } from './info.js';
import { maskCommand } from './mask.js';
import {
  DEFAULT_N,
  DEFAULT_REPEATS,
  DTYPE_CHOICES,
  intList,
  NA_DEFAULT_HEAD_DIM,
  NA_DEFAULT_HEADS,
  NA_OPS,
  OPS,
  packageVersion,
  parseAxes,
  parseCausal,
  parseDensities,
  parseDeviceArg,
  parseShape,
  positiveInt,
  QUICK_N,
  QUICK_REPEATS,
  SWEEP_N,
} from './options.js';
import { simCommand } from './sim.js';

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
  .option('--window <left,right>', 'window: left,right (-1 = unbounded)', intList(-1))
  .option('--docs <lengths>', 'documents: sequence lengths', intList(0))
  .option('--input <X[,Y[,Z]]>', 'neighborhood: grid', parseAxes)
  .option('--kernel <k>', 'neighborhood: kernel size, one for every axis or one per axis', parseAxes)
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