/**
 * The dense fused attention CUDA kernels (native/cuda/fmha/, docs/cuda-kernels.md), verified without a
 * GPU (docs/gpu-verification.md; the instantiation list and its generated files: test/instantiations.test.ts):
 *   - every instantiation runs under the SIMT emulator (native/cuda/fmha/tests/fmha_test.cc, built
 *     here with g++ into build/simt/fmha/ from the generated translation units themselves) against a
 *     float64 reference, every case in forward and reversed thread order, and once under
 *     AddressSanitizer;
 *   - every instantiation passes the compile gate for sm_80 and sm_90: no spills, no local memory,
 *     mma.sync / ldmatrix / cp.async in the PTX of the tensor-core kernels, shared memory within the
 *     99 KiB of sm_86/sm_89; report in build/compile-gate/fmha.json.
 * The emulator suites are skipped visibly without x86-64 Linux, g++ or the CUDA headers, the gate
 * without nvcc.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  COMMON_FLAGS as BASE_FLAGS,
  FLAVOR_FLAGS,
  RUNTIME,
  SIMT,
  exec,
  gxxVersion,
  inParallel,
  inputsDigest,
  root,
  skipReason,
  type Flavor,
} from './simt-toolchain.ts';

const COMMON_FLAGS = [...BASE_FLAGS, `-I${join(root, 'native', 'include')}`];

const FMHA = join(root, 'native', 'cuda', 'fmha');
const GENERATED = join(FMHA, 'generated');
const TEST_SOURCE = join(FMHA, 'tests', 'fmha_test.cc');
const OUT = join(root, 'build', 'simt', 'fmha');
const GATE_REPORT = join(root, 'build', 'compile-gate', 'fmha.json');

interface Instantiation {
  family: string;
  direction: 'fwd' | 'bwd';
  dtype: 'f16' | 'bf16';
  headDim: number;
  policy: string;
}
interface GenModule {
  readList(path?: string): Instantiation[];
}
const gen = (await import(pathToFileURL(join(root, 'scripts', 'gen-instantiations.mjs')).href)) as GenModule;
const list = gen.readList();

// ---------------------------------------------------------------- toolchain

const gateModule = (await import(pathToFileURL(join(root, 'scripts', 'compile-gate.mjs')).href)) as {
  findNvcc(explicit?: string): string | null;
};
const nvcc = gateModule.findNvcc();

/**
 * Builds the emulator runtime, every generated translation unit (as C++) and the test program of each
 * flavor into build/simt/fmha/<flavor>/, named by a digest of inputs, compiler and flags; older
 * digests are removed, and writes go to a temporary name first.
 */
async function build(flavors: Flavor[]): Promise<Record<Flavor, string>> {
  const inputs = inputsDigest();
  const units = readdirSync(GENERATED).filter((f) => f.endsWith('.cu')).sort();
  const out = {} as Record<Flavor, string>;
  const steps: { target: string; args: string[] }[][] = [[], []];
  for (const flavor of flavors) {
    const flags = [...COMMON_FLAGS, ...FLAVOR_FLAGS[flavor]];
    const key = createHash('sha256').update(inputs).update(gxxVersion.stdout).update(flags.join(' ')).digest('hex').slice(0, 16);
    const dir = join(OUT, flavor);
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(dir)) if (!f.includes(key)) rmSync(join(dir, f), { force: true });
    const objects: string[] = [];
    for (const src of RUNTIME) {
      const target = join(dir, `${src.replace(/\.\w+$/, '')}-${key}.o`);
      steps[0]!.push({ target, args: [...flags, '-c', join(SIMT, src), '-o'] });
      objects.push(target);
    }
    for (const u of units) {
      const target = join(dir, `${basename(u, '.cu')}-${key}.o`);
      steps[0]!.push({ target, args: [...flags, '-x', 'c++', '-c', join(GENERATED, u), '-x', 'none', '-o'] });
      objects.push(target);
    }
    const main = join(dir, `fmha_test-${key}.o`);
    steps[0]!.push({ target: main, args: [...flags, '-c', TEST_SOURCE, '-o'] });
    const target = join(dir, `fmha_test-${key}`);
    steps[1]!.push({ target, args: [...flags, main, ...objects, '-ldl', '-o'] });
    out[flavor] = target;
  }
  for (const step of steps) {
    const results = await inParallel(
      step
        .filter((s) => !existsSync(s.target))
        .map((s) => async () => {
          const tmp = `${s.target}.tmp-${process.pid}`;
          const r = await exec('g++', [...s.args, tmp]);
          if (r.status !== 0) return `g++ ${s.args.join(' ')} ${tmp}\n${r.output}`;
          renameSync(tmp, s.target);
          return null;
        }),
    );
    const errors = results.filter((e): e is string => e !== null);
    if (errors.length > 0) throw new Error(`building the fused-attention emulator tests failed:\n${errors.join('\n')}`);
  }
  return out;
}

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function runProgram(bin: string, args: string[], env: Record<string, string> = {}, timeout = 300_000): Run {
  const t0 = performance.now();
  const r = spawnSync(bin, args, { cwd: root, encoding: 'utf8', timeout, env: { ...process.env, ...env } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, seconds: (performance.now() - t0) / 1000 };
}

function notes(r: Run): Record<string, string> {
  return Object.fromEntries([...r.stdout.matchAll(/^note (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
}

// One emulator case per instantiation (named as the generated dispatch table names it), plus the
// hand-written cases of the program.
const instantiationCases = list.map((e) => `fmha_${e.direction}_${e.policy}_${e.dtype}_d${e.headDim}`);
const extraCases = [...readFileSync(TEST_SOURCE, 'utf8').matchAll(/^SIMT_TEST\((\w+)\)/gm)].map((m) => m[1]!);
const ALL_CASES = [...instantiationCases, ...extraCases];
const ORDERS = ['forward', 'reverse'] as const;

// ---------------------------------------------------------------- the emulator

describe.skipIf(skipReason !== null)(`fused attention kernels under the SIMT emulator${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let bins: Record<Flavor, string>;
  const errors = new Map<string, { err: number; ratio: number }>();  // "<tensor> <dtype>" -> worst
  const timings: string[] = [];

  beforeAll(async () => {
    const t0 = performance.now();
    bins = await build(['opt', 'asan']);
    timings.push(`build ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 900_000);

  afterAll(() => {
    if (errors.size === 0) return;
    const rows = [...errors.entries()].sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `  ${k.padEnd(10)} max error ${v.err.toPrecision(3).padStart(9)}   (x${v.ratio.toFixed(2)} the naive low-precision error)`);
    console.log(`fused attention under the emulator, ${ALL_CASES.length} cases x 2 orders + ASan (${timings.join(', ')}):\n${rows.join('\n')}`);
  });

  it('the program runs exactly the expected cases: one per instantiation, plus its own', () => {
    const r = runProgram(bins.opt, ['--list']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n').sort()).toEqual([...ALL_CASES].sort());
  });

  for (const order of ORDERS) {
    describe(`${order} thread order`, () => {
      let seconds = 0;
      afterAll(() => void timings.push(`${order} ${seconds.toFixed(1)} s`));
      for (const c of ALL_CASES) {
        it(c, () => {
          const r = runProgram(bins.opt, [c], { SIMT_ORDER: order });
          seconds += r.seconds;
          expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
          expect(r.stdout).toContain(`ok ${c}\n`);
          const m = /^fmha_\w+?_(f16|bf16)_d\d+$/.exec(c);
          if (m) {
            for (const [key, value] of Object.entries(notes(r))) {
              const t = /^max_err_(\w+)$/.exec(key);
              if (!t) continue;
              const k = `${t[1]} ${m[1]}`;
              const prev = errors.get(k) ?? { err: 0, ratio: 0 };
              const ratio = Number(notes(r)[`naive_ratio_${t[1]}`] ?? 0);
              errors.set(k, { err: Math.max(prev.err, Number(value)), ratio: Math.max(prev.ratio, ratio) });
            }
          }
        }, 300_000);
      }
    });
  }

  it('every case once under AddressSanitizer', () => {
    const r = runProgram(bins.asan, [], {}, 900_000);
    timings.push(`ASan ${r.seconds.toFixed(1)} s`);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stderr).not.toContain('AddressSanitizer');
    expect(r.stdout).toContain(`${ALL_CASES.length} case(s), 0 failed`);
  }, 900_000);
});

// ---------------------------------------------------------------- the compile gate

interface GateRow {
  kernel: string;
  file: string;
  arch: string;
  entry: boolean;
  registers: number;
  smem: number;
  dynamicSmem: number;
  spillStores: number;
  spillLoads: number;
  stackFrame: number;
  mma: number;
  ldmatrix: number;
  cpAsync: number;
  tensorCore: boolean;
}

describe.skipIf(nvcc === null)(`fused attention kernels: compile gate${nvcc === null ? ' (skipped: nvcc not found)' : ''}`, () => {
  it('every instantiation for sm_80 and sm_90: no spills, no local memory, tensor cores in the PTX, smem <= 99 KiB', () => {
    const manifest = join(GENERATED, 'gate.json');
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'compile-gate.mjs'), '--manifest', manifest,
      '--arch', '80,90', '--out', GATE_REPORT, '--quiet'], { cwd: root, encoding: 'utf8', timeout: 1_200_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const report = JSON.parse(readFileSync(GATE_REPORT, 'utf8')) as { ok: boolean; archs: string[]; kernels: GateRow[] };
    expect(report.ok).toBe(true);
    expect(report.archs).toEqual(['sm_80', 'sm_90']);
    const files = (JSON.parse(readFileSync(manifest, 'utf8')) as { entries: { file: string }[] }).entries.map((e) => e.file);
    const rows = report.kernels.filter((k) => k.entry);
    expect(rows).toHaveLength(files.length * 2);  // one kernel per translation unit and arch
    for (const f of files)
      for (const arch of ['sm_80', 'sm_90'])
        expect(rows.filter((k) => k.file.endsWith(`/${f}`) && k.arch === arch), `${f} ${arch}`).toHaveLength(1);
    for (const k of report.kernels) expect(k, k.kernel).toMatchObject({ spillStores: 0, spillLoads: 0, stackFrame: 0 });
    for (const k of rows) {
      expect(k.smem + k.dynamicSmem, k.kernel).toBeLessThanOrEqual(101376);
      if (/fmha_(fwd|bwd_dkdv|bwd_dq)_kernel/.test(k.kernel)) {
        expect(k.tensorCore, k.kernel).toBe(true);
        expect(k.mma, k.kernel).toBeGreaterThan(0);
        expect(k.ldmatrix, k.kernel).toBeGreaterThan(0);
        expect(k.cpAsync, k.kernel).toBeGreaterThan(0);
      }
    }
    const short = (k: GateRow) => k.kernel.replace(/^void /, '').replace(/attnkit::cuda::fmha::/g, '').replace(/\(.*$/, '')
      .replace(/attnkit::isa_generic::/g, '').replace(/Traits<(\w+), (\d+)>/, '$1, $2');
    console.log('compile gate, fused attention (build/compile-gate/fmha.json):\n' + rows.map((k) =>
      `  ${k.arch} ${String(k.registers).padStart(3)} regs ${String(k.smem + k.dynamicSmem).padStart(6)} B smem ` +
      `spills ${k.spillStores}/${k.spillLoads} mma ${String(k.mma).padStart(3)}  ${short(k)}`).join('\n'));
  }, 1_200_000);

  it('the host side compiles under nvcc: launch.cu and a generated unit with its <<<>>> launch', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-fmha-host-'));
    try {
      for (const src of [join(FMHA, 'launch.cu'), join(GENERATED, 'fmha_fwd_dense_f16_d64.cu')]) {
        const r = spawnSync(nvcc!, ['-c', '-std=c++17', '-arch=sm_80', `-I${join(root, 'native', 'include')}`, src, '-o',
          join(dir, `${basename(src, '.cu')}.o`)], { cwd: root, encoding: 'utf8', timeout: 300_000 });
        expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
