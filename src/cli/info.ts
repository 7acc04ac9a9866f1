/**
 * `attnkit info [--json] [--kernels]`: version, CPU kernel level (in use and detected), threads,
 * CUDA status; with --kernels the compile-gate report of the CUDA kernels (registers, shared
 * memory, spills per kernel and arch; build/compile-gate/*.json). The machine facts come from
 * src/info.ts.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatTable, PEAK_GFLOPS_PER_THREAD } from '../bench/common.js';
import { packageDir } from './options.js';

/** Estimated peak GFLOP/s of this machine, per compute kind, or null when unknown. */
function peakEstimate(isa: string, threads: number): Record<string, number> | null {
  const perThread = PEAK_GFLOPS_PER_THREAD[isa];
  if (!perThread) return null;
  return Object.fromEntries(Object.entries(perThread).map(([k, v]) => [k, v * threads]));
}

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

/** One line per op with CUDA kernels in this build: its dtypes and head dims (from info().cuda.kernels). */
function cudaOpLines(i: import('../info.js').Info): string[] {
  if (!i.cuda.compiled) return ['  kernels          -'];
  if (i.cuda.kernels.length === 0) return ['  kernels          none in this build'];
  const ops = [...new Set(i.cuda.kernels.map((k) => k.op))];
  return ops.map((op, n) => {
    const ks = i.cuda.kernels.filter((k) => k.op === op);
    const dtypes = [...new Set(ks.map((k) => k.dtype))].join(', ');
    const dims = [...new Set(ks.map((k) => k.headDim))];
    const d = dims.includes(0) ? 'any head dim' : `head dims ${dims.join(', ')}`;
    return `  ${n === 0 ? 'kernels ' : '        '}         ${op}: ${dtypes}; ${d}`;
  });
}

export async function infoCommand(opts: { json?: boolean; kernels?: boolean }): Promise<void> {
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
    ...cudaOpLines(i),
  ];
  if (Object.keys(env).length)
    lines.push(
      'Environment',
      ...Object.entries(env).map(([k, v]) => `  ${k}=${v}`),
    );
  if (gate) lines.push(...kernelLines(gate));
  console.log(lines.join('\n'));
}
