/**
 * The dense fused attention CUDA kernels (native/cuda/fmha/, docs/cuda-kernels.md), verified without a
 * GPU (docs/gpu-verification.md; the instantiation list and its generated files: test/instantiations.test.ts):
 *   - every instantiation runs under the SIMT emulator (native/cuda/fmha/tests/fmha_test.cc, built
 *     here with g++ into build/simt/fmha/ from the generated translation units themselves) against a
 *     float64 reference, every case in each thread order (forward, reversed, warps running ahead) with
 *     the shared-memory hazard check on, and once under AddressSanitizer;
 *   - every instantiation passes the compile gate for sm_80 and sm_90: no spills, no local memory,
 *     mma.sync / ldmatrix / cp.async in the PTX of the tensor-core kernels, shared memory within the
 *     99 KiB of sm_86/sm_89; report in build/compile-gate/<family>.json (every family with instantiations).
 * The emulator suites are skipped visibly without x86-64 Linux, g++ or the CUDA headers, the gate
 * without nvcc.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FAMILIES,
  boundaryResidues,
  denseEdges,
  denseOffsetShapes,
  readInstantiations,
  shapesFile,
  type EmulatedFamily,
  type ListedFamily,
} from './simt-families.ts';
import {
  COMMON_FLAGS as BASE_FLAGS,
  FLAVOR_FLAGS,
  ORDERS,
  RUNTIME,
  SIMT,
  buildKey,
  inputsDigest,
  prepareDir,
  root,
  runSteps,
  skipReason,
  type BuildStep,
  type Flavor,
} from './simt-toolchain.ts';

const COMMON_FLAGS = [...BASE_FLAGS, `-I${join(root, 'native', 'include')}`];


// ---------------------------------------------------------------- toolchain

const gateModule = (await import(pathToFileURL(join(root, 'scripts', 'compile-gate.mjs')).href)) as {
  findNvcc(explicit?: string): string | null;
};
const nvcc = gateModule.findNvcc();

/**
 * Builds the emulator runtime, a family's translation units (as C++) and its test program for each
 * flavor into build/simt/<family>/<flavor>/, named by a digest of inputs, compiler and flags; older
 * digests are removed, and writes go to a temporary name first.
 */
async function build(family: EmulatedFamily, listed: ListedFamily, flavors: Flavor[]): Promise<Record<Flavor, string>> {
  const inputs = inputsDigest();
  const units = family.units(listed);
  const out = {} as Record<Flavor, string>;
  const steps: BuildStep[][] = [[], []];
  for (const flavor of flavors) {
    const flags = [...COMMON_FLAGS, ...FLAVOR_FLAGS[flavor]];
    const key = buildKey(inputs, flags);
    const dir = join(root, 'build', 'simt', family.family, flavor);
    prepareDir(dir, key);
    const objects: string[] = [];
    for (const src of RUNTIME) {
      const target = join(dir, `${src.replace(/\.\w+$/, '')}-${key}.o`);
      steps[0]!.push({ target, args: [...flags, '-c', join(SIMT, src), '-o'] });
      objects.push(target);
    }
    for (const u of units) {
      const target = join(dir, `${basename(u, '.cu')}-${key}.o`);
      steps[0]!.push({ target, args: [...flags, '-x', 'c++', '-c', join(root, u), '-x', 'none', '-o'] });
      objects.push(target);
    }
    const name = basename(family.program).replace(/\.\w+$/, '');
    const main = join(dir, `${name}-${key}.o`);
    steps[0]!.push({ target: main, args: [...flags, '-c', join(root, family.program), '-o'] });
    const target = join(dir, `${name}-${key}`);
    steps[1]!.push({ target, args: [...flags, main, ...objects, '-ldl', '-o'] });
    out[flavor] = target;
  }
  await runSteps(steps, `the ${family.family} emulator tests`);
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


// ---------------------------------------------------------------- the emulator

// One driver for every family of the list: each instantiation is a case of the family's program (which
// compares with its float64 reference under its tolerance rule), run with the offset-class shapes of
// test/simt-families.ts added, in every thread order with the shared-memory hazard check, and once
// under AddressSanitizer.
const listed = readInstantiations();

describe('the emulator driver knows every family of the instantiation list', () => {
  it(`reads ${listed.path}`, () => {
    expect(listed.families.map((f) => f.family)).toContain('fmha');
  });
  for (const f of listed.families)
    it(`${f.family}: ${f.instantiations.length} instantiation(s)${f.instantiations.length > 0 ? ', driven by test/simt-families.ts' : ' (nothing to run yet)'}`, () => {
      if (f.instantiations.length > 0) expect(FAMILIES.map((d) => d.family), `no emulator driver entry for ${f.family}`).toContain(f.family);
    });

  it('the dense offset-class shapes put each mask edge in every boundary residue class of the key tile', () => {
    for (const f of listed.families.filter((x) => x.instantiations.some((e) => e.policy === 'dense'))) {
      const shapes = denseOffsetShapes(f.tile);
      const want = boundaryResidues(f.tile.bn);
      const sorted = (xs: Iterable<number>) => [...xs].sort((a, b) => a - b);
      const seen = { right: new Set<number>(), left: new Set<number>(), causal: new Set<number>() };
      for (const s of shapes) {
        const e = denseEdges(s, f.tile.bn);
        if (e.right !== undefined) (s.causal ? seen.causal : seen.right).add(e.right);
        if (e.left !== undefined) seen.left.add(e.left);
        expect(s.Nq, s.what).toBeLessThanOrEqual(3 * f.tile.bm);
        expect(s.Nk, s.what).toBeLessThanOrEqual(4 * f.tile.bn);
      }
      expect(sorted(seen.causal), `${f.family} causal diagonal`).toEqual(sorted(want.right));
      expect(sorted(seen.right), `${f.family} right window edge`).toEqual(sorted(want.right));
      expect(sorted(seen.left), `${f.family} left window edge`).toEqual(sorted(want.left));
      // both signs of Nk - Nq, and tails into a tile and one short of it
      expect(shapes.some((s) => s.causal && s.Nk > s.Nq) && shapes.some((s) => s.causal && s.Nk < s.Nq)).toBe(true);
      expect(shapes.map((s) => s.Nk % f.tile.bn)).toEqual(expect.arrayContaining([1, f.tile.bn - 1]));
    }
  });
});

for (const family of FAMILIES) {
  const f = listed.families.find((x) => x.family === family.family);
  const instantiationCases = (f?.instantiations ?? []).map((e) => family.caseName(e));
  // the program's hand-written cases (an instantiation's case may be written out as a SIMT_TEST too)
  const extraCases = [...readFileSync(join(root, family.program), 'utf8').matchAll(/^SIMT_TEST\((\w+)\)/gm)]
    .map((m) => m[1]!).filter((c) => !instantiationCases.includes(c));
  const ALL_CASES = [...instantiationCases, ...extraCases];
  const skip = skipReason ?? (f === undefined || f.instantiations.length === 0 ? 'no instantiations in the list' : null);
  const rows = f ? family.shapes(f) : [];

  describe.skipIf(skip !== null)(`${family.family} kernels under the SIMT emulator${skip ? ` (skipped: ${skip})` : ''}`, () => {
    let bins: Record<Flavor, string>;
    let env: Record<string, string>;
    const errors = new Map<string, { err: number; ratio: number }>();  // "<tensor> <dtype>" -> worst
    const timings: string[] = [];

    beforeAll(async () => {
      const t0 = performance.now();
      bins = await build(family, f!, ['opt', 'asan']);
      const shapes = join(root, 'build', 'simt', family.family, 'shapes.txt');
      writeFileSync(shapes, shapesFile(rows));
      env = { SIMT_SHAPES: shapes };
      timings.push(`build ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }, 900_000);

    afterAll(() => {
      if (errors.size === 0) return;
      const table = [...errors.entries()].sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `  ${k.padEnd(10)} max error ${v.err.toPrecision(3).padStart(9)}   (x${v.ratio.toFixed(2)} the naive low-precision error)`);
      console.log(`${family.family} under the emulator, ${ALL_CASES.length} cases x ${ORDERS.length} orders + ASan, ` +
        `${rows.length} driver shapes (${timings.join(', ')}); tolerance: ${family.tolerance}:\n${table.join('\n')}`);
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
        for (const e of f?.instantiations ?? []) {
          const c = family.caseName(e);
          it(c, () => {
            const r = runProgram(bins.opt, [c], { ...env, SIMT_ORDER: order });
            seconds += r.seconds;
            expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
            expect(r.stdout).toContain(`ok ${c}\n`);
            const n = notes(r);
            // the driver's shapes ran, and the program reported its errors against the reference
            expect(Number(n.driver_shapes), 'driver shapes run').toBe(rows.filter((s) => s.dir === e.direction).length);
            expect(Object.keys(n).some((k) => k.startsWith('max_err_')), 'max_err notes').toBe(true);
            for (const [key, value] of Object.entries(n)) {
              const t = /^max_err_(\w+)$/.exec(key);
              if (!t) continue;
              const k = `${t[1]} ${e.dtype}`;
              const prev = errors.get(k) ?? { err: 0, ratio: 0 };
              const ratio = Number(n[`naive_ratio_${t[1]}`] ?? 0);
              errors.set(k, { err: Math.max(prev.err, Number(value)), ratio: Math.max(prev.ratio, ratio) });
            }
          }, 300_000);
        }
        for (const c of extraCases) {
          it(c, () => {
            const r = runProgram(bins.opt, [c], { SIMT_ORDER: order });
            seconds += r.seconds;
            expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
            expect(r.stdout).toContain(`ok ${c}\n`);
          }, 300_000);
        }
      });
    }

    it('every case once under AddressSanitizer', () => {
      const r = runProgram(bins.asan, [], env, 900_000);
      timings.push(`ASan ${r.seconds.toFixed(1)} s`);
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stderr).not.toContain('AddressSanitizer');
      expect(r.stdout).toContain(`${ALL_CASES.length} case(s), 0 failed`);
    }, 900_000);
  });
}

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

for (const f of listed.families.filter((x) => x.instantiations.length > 0))
describe.skipIf(nvcc === null)(`${f.family} kernels: compile gate${nvcc === null ? ' (skipped: nvcc not found)' : ''}`, () => {
  const generated = join(root, f.dir, 'generated');
  const report = join(root, 'build', 'compile-gate', `${f.family}.json`);
  it('every instantiation for sm_80 and sm_90: no spills, no local memory, tensor cores in the PTX, smem <= 99 KiB', () => {
    const manifest = join(generated, 'gate.json');
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'compile-gate.mjs'), '--manifest', manifest,
      '--arch', '80,90', '--out', report, '--quiet'], { cwd: root, encoding: 'utf8', timeout: 1_200_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as { ok: boolean; archs: string[]; kernels: GateRow[] };
    expect(rep.ok).toBe(true);
    expect(rep.archs).toEqual(['sm_80', 'sm_90']);
    const files = (JSON.parse(readFileSync(manifest, 'utf8')) as { entries: { file: string }[] }).entries.map((e) => e.file);
    const rows = rep.kernels.filter((k) => k.entry);
    expect(rows).toHaveLength(files.length * 2);  // one kernel per translation unit and arch
    for (const f of files)
      for (const arch of ['sm_80', 'sm_90'])
        expect(rows.filter((k) => k.file.endsWith(`/${f}`) && k.arch === arch), `${f} ${arch}`).toHaveLength(1);
    for (const k of rep.kernels) expect(k, k.kernel).toMatchObject({ spillStores: 0, spillLoads: 0, stackFrame: 0 });
    for (const k of rows) {
      expect(k.smem + k.dynamicSmem, k.kernel).toBeLessThanOrEqual(101376);
      if (/fmha_(fwd|bwd_dkdv|bwd_dq)_kernel/.test(k.kernel)) {
        expect(k.tensorCore, k.kernel).toBe(true);
        expect(k.mma, k.kernel).toBeGreaterThan(0);
        expect(k.ldmatrix, k.kernel).toBeGreaterThan(0);
        expect(k.cpAsync, k.kernel).toBeGreaterThan(0);
      }
    }
    const short = (k: GateRow) => k.kernel.replace(/^void /, '').replace(/attnkit::cuda::\w+::/g, '').replace(/\(.*$/, '')
      .replace(/attnkit::isa_generic::/g, '').replace(/Traits<(\w+), (\d+)>/, '$1, $2');
    console.log(`compile gate, ${f.family} (build/compile-gate/${f.family}.json):\n` + rows.map((k) =>
      `  ${k.arch} ${String(k.registers).padStart(3)} regs ${String(k.smem + k.dynamicSmem).padStart(6)} B smem ` +
      `spills ${k.spillStores}/${k.spillLoads} mma ${String(k.mma).padStart(3)}  ${short(k)}`).join('\n'));
  }, 1_200_000);

  it('the host side compiles under nvcc: the launchers and a generated unit with its <<<>>> launch', () => {
    const dir = mkdtempSync(join(tmpdir(), `attnkit-${f.family}-host-`));
    const sources = (JSON.parse(readFileSync(join(root, 'native', 'cuda', 'instantiations.json'), 'utf8')) as {
      families: { family: string; sources?: string[] }[];
    }).families.find((x) => x.family === f.family)!.sources ?? [];
    const unit = FAMILIES.find((x) => x.family === f.family)!.units(f)[0]!;
    try {
      for (const src of [...sources.map((s) => join(root, f.dir, s)), join(root, unit)]) {
        const r = spawnSync(nvcc!, ['-c', '-std=c++17', '-arch=sm_80', `-I${join(root, 'native', 'include')}`, src, '-o',
          join(dir, `${basename(src, '.cu')}.o`)], { cwd: root, encoding: 'utf8', timeout: 300_000 });
        expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
