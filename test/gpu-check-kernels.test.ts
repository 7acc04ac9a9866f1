/**
 * Step b of the one-command GPU check (issue 15, docs/gpu-verification.md): scripts/gpu-check-kernels.sh
 * builds the kernel test programs of every family from the same sources the emulator suite
 * (test/cuda-kernels.test.ts) builds, runs every case and writes kernels/results.json. Here:
 *   - the driver shapes the GPU run reads (native/cuda/<family>/tests/driver-shapes.txt, no Node.js
 *     there) are what test/simt-families.ts generates now (ATTNKIT_UPDATE_SHAPES=1 rewrites them);
 *   - the rehearsal (`--rehearse`: g++ against the SIMT emulator) runs every case of every family and
 *     its results.json says so, case by case, with the driver's shapes and the error notes; a case
 *     name no program has fails it;
 *   - the nvcc build of every program links for sm_80 and sm_90, lists the same cases, and runs its
 *     host-only cases here (skipped without nvcc). Running the kernels needs the GPU.
 * Objects are cached in build/gpu-check-kernels/ (named by a digest of the sources and flags).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { FAMILIES, readInstantiations, shapesFile } from './simt-families.ts';
import { root, skipReason } from './simt-toolchain.ts';

interface CaseRow {
  name: string;
  ok: boolean;
  seconds: number;
  notes?: Record<string, string>;
  detail?: string;
}
interface Results {
  mode: string;
  arch: string[];
  ok: boolean;
  seconds: number;
  unmatchedCases?: string[];
  programs: {
    family: string;
    program: string;
    build: { ok: boolean; seconds: number; units?: number };
    cases: CaseRow[];
    sanitizer: { skipped?: string; memcheck?: CaseRow[]; racecheck?: CaseRow[] };
  }[];
}

const SCRIPT = join(root, 'scripts', 'gpu-check-kernels.sh');
const listed = readInstantiations();
const withKernels = listed.families.filter((f) => f.instantiations.length > 0);
const tmp: string[] = [];
afterAll(() => tmp.forEach((d) => rmSync(d, { recursive: true, force: true })));

function runScript(args: string[], timeout: number, env: Record<string, string> = {}): { status: number | null; output: string; results: Results | null; kernels: string } {
  const out = mkdtempSync(join(tmpdir(), 'attnkit-gpu-kernels-'));
  tmp.push(out);
  const r = spawnSync('bash', [SCRIPT, ...args, out], { cwd: root, encoding: 'utf8', timeout, env: { ...process.env, ...env } });
  const path = join(out, 'kernels', 'results.json');
  const results = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Results) : null;
  return { status: r.status, output: `${r.stdout}${r.stderr}`, results, kernels: join(out, 'kernels') };
}

/** Every case a family's program must have: one per instantiation, plus its hand-written SIMT_TESTs. */
function expectedCases(family: string): { instantiation: Map<string, string>; all: string[] } {
  const d = FAMILIES.find((x) => x.family === family)!;
  const f = withKernels.find((x) => x.family === family)!;
  const instantiation = new Map(f.instantiations.map((e) => [d.caseName(e), e.direction]));
  const extra = [...readFileSync(join(root, d.program), 'utf8').matchAll(/^SIMT_TEST\((\w+)\)/gm)]
    .map((m) => m[1]!).filter((c) => !instantiation.has(c));
  return { instantiation, all: [...instantiation.keys(), ...extra] };
}

describe('the driver shapes the GPU run reads', () => {
  for (const f of withKernels) {
    const family = FAMILIES.find((x) => x.family === f.family);
    const file = family ? family.program.replace(/[^/]+$/, 'driver-shapes.txt') : '(no emulator driver entry)';
    it(`${f.family}: ${family && family.shapes(f).length === 0 ? `no driver shapes, no ${file}` : `${file} is current`}`, () => {
      expect(family, `no entry for ${f.family} in test/simt-families.ts`).toBeDefined();
      const path = join(root, family!.program.replace(/[^/]+$/, 'driver-shapes.txt'));
      const rows = family!.shapes(f);
      const want = rows.length === 0 ? null : '# The shapes test/simt-families.ts adds for this family (SIMT_SHAPES), for runs without Node.js\n' +
        '# (scripts/gpu-check-kernels.sh). Generated: ATTNKIT_UPDATE_SHAPES=1 npx vitest run test/gpu-check-kernels.test.ts\n' +
        shapesFile(rows);
      if (process.env.ATTNKIT_UPDATE_SHAPES === '1') {
        if (want === null) rmSync(path, { force: true });
        else writeFileSync(path, want);
      }
      const got = existsSync(path) ? readFileSync(path, 'utf8') : null;
      expect(got, `${path} is stale: run ATTNKIT_UPDATE_SHAPES=1 npx vitest run test/gpu-check-kernels.test.ts`).toBe(want);
    });
  }
});

describe.skipIf(skipReason !== null)(`scripts/gpu-check-kernels.sh --rehearse${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const cache = ['--cache', join(root, 'build', 'gpu-check-kernels', 'rehearse')];

  it('builds every family against the emulator, runs every case, and results.json says so', () => {
    const r = runScript(['--rehearse', ...cache], 600_000);
    expect(r.status, r.output).toBe(0);
    const res = r.results!;
    expect(res).toMatchObject({ mode: 'rehearse', ok: true });
    expect(res.programs.map((p) => p.family)).toEqual(withKernels.map((f) => f.family));
    for (const p of res.programs) {
      const f = withKernels.find((x) => x.family === p.family)!;
      const family = FAMILIES.find((x) => x.family === p.family)!;
      expect(p.program).toBe(family.program);
      expect(p.build).toMatchObject({ ok: true, units: family.units(f).length });
      const want = expectedCases(p.family);
      expect(p.cases.map((c) => c.name).sort(), p.family).toEqual([...want.all].sort());
      const rows = family.shapes(f);
      for (const c of p.cases) {
        expect(c, `${p.family} ${c.name}: ${c.detail}`).toMatchObject({ ok: true });
        expect(c.seconds).toBeGreaterThanOrEqual(0);
        const dir = want.instantiation.get(c.name);
        if (dir === undefined) continue;
        // the driver's shapes ran, and the program compared with its reference
        expect(Number(c.notes?.driver_shapes), `${c.name} driver shapes`).toBe(rows.filter((s) => s.dir === dir).length);
        expect(Object.keys(c.notes ?? {}).some((k) => k.startsWith('max_err_')), `${c.name} max_err notes`).toBe(true);
      }
      expect(p.sanitizer.skipped).toMatch(/rehearsal/);
    }
  }, 600_000);

  it('a case no program has fails the run (and one named case runs alone)', () => {
    const one = withKernels[withKernels.length - 1]!;
    const name = FAMILIES.find((x) => x.family === one.family)!.caseName(one.instantiations[0]!);
    const r = runScript(['--rehearse', ...cache, '--cases', `${name},no_such_case`], 600_000);
    expect(r.status, r.output).toBe(1);
    expect(r.results).toMatchObject({ ok: false, unmatchedCases: ['no_such_case'] });
    const cases = r.results!.programs.flatMap((p) => p.cases);
    expect(cases).toEqual([expect.objectContaining({ name, ok: true })]);
  }, 600_000);

  it('the compute-sanitizer subset: the first case of the first direction and the last of the last direction of each family, each tool; a finding fails the run', () => {
    // a stand-in for compute-sanitizer: logs its arguments, finds a "race" in every racecheck run, and
    // runs the program for memcheck
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-fake-sanitizer-'));
    tmp.push(dir);
    const fake = join(dir, 'compute-sanitizer');
    const log = join(dir, 'calls.txt');
    writeFileSync(fake, `#!/bin/sh\necho "$*" >> '${log}'\n` +
      `[ "$1 $2 $3 $4" = "--tool racecheck --error-exitcode 3" ] && { echo "========= ERROR SUMMARY: 1 error"; exit 3; }\n` +
      'shift 4\nexec "$@"\n', { mode: 0o755 });
    const r = runScript(['--rehearse', ...cache], 600_000, { COMPUTE_SANITIZER: fake });
    expect(r.status, r.output).toBe(1);
    expect(r.results).toMatchObject({ ok: false });
    const calls = readFileSync(log, 'utf8').trim().split('\n');
    for (const p of r.results!.programs) {
      const inst = expectedCases(p.family).instantiation;  // case -> direction, in list order
      const names = [...inst.keys()], dirs = [...inst.values()];
      const subset = [names.find((n) => inst.get(n) === dirs[0])!, names.filter((n) => inst.get(n) === dirs[dirs.length - 1]).pop()!];
      expect(p.cases.every((c) => c.ok), p.family).toBe(true);
      expect(p.sanitizer.memcheck, p.family).toEqual(subset.map((name) => expect.objectContaining({ name, ok: true })));
      expect(p.sanitizer.racecheck, p.family).toEqual(subset.map((name) => expect.objectContaining({ name, ok: false })));
      for (const name of subset)
        for (const tool of ['memcheck', 'racecheck'])
          expect(calls).toContainEqual(expect.stringMatching(new RegExp(`^--tool ${tool} --error-exitcode 3 \\S+/${p.family}_test ${name}$`)));
    }
  }, 600_000);
});

const gate = (await import(pathToFileURL(join(root, 'scripts', 'compile-gate.mjs')).href)) as { findNvcc(): string | null };
const nvcc = gate.findNvcc();

describe.skipIf(nvcc === null)(`the GPU build of the kernel test programs${nvcc === null ? ' (skipped: nvcc not found)' : ''}`, () => {
  it('every program compiles and links with nvcc for sm_80 and sm_90, with the same cases; host-only cases pass', () => {
    const r = runScript(['--build-only', '--arch', '80,90', '--cache', join(root, 'build', 'gpu-check-kernels', 'nvcc')], 1_800_000);
    expect(r.status, r.output).toBe(0);
    expect(r.results).toMatchObject({ mode: 'gpu', arch: ['sm_80', 'sm_90'], ok: true });
    for (const p of r.results!.programs) {
      expect(p.build, p.family).toMatchObject({ ok: true });
      const bin = join(r.kernels, 'bin', `${p.family}_test`);
      const list = spawnSync(bin, ['--list'], { encoding: 'utf8' });
      expect(list.status, list.stderr).toBe(0);
      const want = expectedCases(p.family);
      expect(list.stdout.trim().split('\n').sort()).toEqual([...want.all].sort());
      // the hand-written dispatch cases launch nothing: they run on a machine without a GPU too
      for (const c of want.all.filter((x) => !want.instantiation.has(x) && /dispatch/.test(x))) {
        const run = spawnSync(bin, [c], { encoding: 'utf8', timeout: 60_000 });
        expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
        expect(run.stdout).toContain(`ok ${c}\n`);
      }
    }
  }, 1_800_000);
});
