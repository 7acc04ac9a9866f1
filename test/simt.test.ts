/**
 * The SIMT host emulator (native/simt/, docs/gpu-verification.md) and the host paths of
 * native/cuda/ptx.cuh, through their C++ test programs in native/simt/tests/: built here with g++
 * into build/simt/ (cached by a hash of every source, header and flag), every case run in each thread
 * order (forward, reversed, warps running ahead), every program run once more under AddressSanitizer, plus the diagnostics
 * that end a process (an out-of-bounds shared-memory write under ASan, a fiber stack overflow).
 * Skipped visibly without x86-64 Linux, g++ or the CUDA headers (cuda_fp16.h).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  COMMON_FLAGS,
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

const TESTS = join(SIMT, 'tests');
const OUT = join(root, 'build', 'simt');

const PROGRAMS = ['selftest', 'ptx_test', 'gemm_tile_test', 'crash_test'] as const;
type Program = (typeof PROGRAMS)[number];

/**
 * Builds the runtime objects, then the programs, of each flavor into build/simt/<flavor>/, named by
 * a digest of inputs, compiler and flags: unchanged sources cost nothing, and files of older digests
 * are removed. Writes go to a temporary name first, so an interrupted build never leaves a binary.
 */
async function build(flavors: Flavor[]): Promise<Record<Flavor, Record<Program, string>>> {
  const inputs = inputsDigest();
  const out = {} as Record<Flavor, Record<Program, string>>;
  const steps: BuildStep[][] = [[], []];
  for (const flavor of flavors) {
    const flags = [...COMMON_FLAGS, ...FLAVOR_FLAGS[flavor]];
    const key = buildKey(inputs, flags);
    const dir = join(OUT, flavor);
    prepareDir(dir, key);
    const objects = RUNTIME.map((src) => {
      const target = join(dir, `${src.replace(/\.\w+$/, '')}-${key}.o`);
      steps[0]!.push({ target, args: [...flags, '-c', join(SIMT, src), '-o'] });
      return target;
    });
    out[flavor] = {} as Record<Program, string>;
    for (const p of PROGRAMS) {
      const target = join(dir, `${p}-${key}`);
      steps[1]!.push({ target, args: [...flags, join(TESTS, `${p}.cc`), ...objects, '-ldl', '-o'] });
      out[flavor][p] = target;
    }
  }
  await runSteps(steps, 'the emulator tests');
  return out;
}

/** The case names of a test program, from its SIMT_TEST(name) lines. */
function cases(p: Program): string[] {
  const text = readFileSync(join(TESTS, `${p}.cc`), 'utf8');
  return [...text.matchAll(/^SIMT_TEST\((\w+)\)/gm)].map((m) => m[1]!);
}

/** The line of `marker` in a test source (for expectations on reported file:line). */
function lineOf(p: Program, marker: string): number {
  const lines = readFileSync(join(TESTS, `${p}.cc`), 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(marker));
  if (i < 0) throw new Error(`${marker} not found in ${p}.cc`);
  return i + 1;
}

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runProgram(bin: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(bin, args, {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function notes(r: Run): Record<string, string> {
  return Object.fromEntries([...r.stdout.matchAll(/^note (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
}

const SUITES: Program[] = ['selftest', 'ptx_test', 'gemm_tile_test'];

describe.skipIf(skipReason !== null)(`SIMT emulator${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let bins: Record<Flavor, Record<Program, string>>;

  beforeAll(async () => {
    bins = await build(['opt', 'asan']);
  }, 600_000);

  for (const order of ORDERS) {
    describe(`${order} thread order`, () => {
      for (const p of SUITES) {
        for (const c of cases(p)) {
          it(`${p}: ${c}`, () => {
            const r = runProgram(bins.opt[p], [c], { SIMT_ORDER: order });
            expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
            expect(r.stdout).toContain(`ok ${c}\n`);
          });
        }
      }
    });
  }

  /** The notes of one selftest run per thread order. */
  const notesByOrder = (names: string[]) =>
    Object.fromEntries(ORDERS.map((order) => {
      const r = runProgram(bins.opt.selftest, names, { SIMT_ORDER: order });
      expect(r.status, r.stdout).toBe(0);
      return [order, notes(r)];
    })) as Record<(typeof ORDERS)[number], Record<string, string>>;

  it('a missing __syncthreads before a read gives a wrong result in at least one thread order', () => {
    const seen = notesByOrder(['race_missing_barrier', 'reduction_with_barriers']);
    expect(ORDERS.map((o) => seen[o].race_missing_barrier)).toContain('wrong');
  });

  it('a missing barrier before a stage is refilled: lockstep orders miss it, warps running ahead do not', () => {
    const seen = notesByOrder(['ring_without_trailing_barrier', 'ring_with_trailing_barrier']);
    // Recorded, not wished for: this is the hole the ahead order closes.
    expect(seen.forward.ring_without_trailing_barrier).toBe('right');
    expect(seen.reverse.ring_without_trailing_barrier).toBe('right');
    expect(seen.ahead.ring_without_trailing_barrier).toBe('wrong');
  });

  it('the shared-memory hazard check reports a race from the side that comes second, in every order', () => {
    const seen = notesByOrder(['hazard_write_after_read', 'hazard_read_after_write']);
    expect(seen.forward).toMatchObject({ hazard_write_after_read: 'war', hazard_read_after_write: 'raw' });
    expect(seen.reverse).toMatchObject({ hazard_write_after_read: 'raw', hazard_read_after_write: 'war' });
    for (const o of ORDERS) expect(Object.keys(seen[o]).sort()).toEqual(['hazard_read_after_write', 'hazard_write_after_read']);
  });

  it('SIMT_HAZARDS=0 turns the hazard check off', () => {
    const r = runProgram(bins.opt.selftest, ['hazard_write_after_read'], { SIMT_HAZARDS: '0' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('expected the launch to fail');
  });

  it('the emulator runs the sample GEMM tile at a useful speed', () => {
    const r = runProgram(bins.opt.gemm_tile_test, ['gemm_tile_throughput'], { SIMT_WORKERS: '1' });
    expect(r.status, r.stdout).toBe(0);
    const rate = Number(notes(r).warp_mmas_per_second);
    console.log(`SIMT emulator: ${rate} warp-MMAs/s on one core (gemm_tile, cp.async + ldmatrix + mma.sync)`);
    expect(rate).toBeGreaterThan(5_000);
  });

  it('a fiber stack overflow names the CUDA thread, then the process dies of SIGSEGV', () => {
    const r = runProgram(bins.opt.crash_test, ['stack_overflow']);
    expect(r.signal).toBe('SIGSEGV');
    expect(r.stderr).toContain("simt: fiber stack overflow in kernel 'k', block (0,0,0), thread 7 (7,0,0)");
    expect(r.stdout).not.toContain('not detected');
  });

  it('rejects an unknown SIMT_ORDER', () => {
    const r = runProgram(bins.opt.selftest, ['builtins'], { SIMT_ORDER: 'sideways' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain("SIMT_ORDER must be 'forward', 'reverse' or 'ahead', not 'sideways'");
  });

  describe('under AddressSanitizer', () => {
    for (const p of SUITES) {
      it(`${p}: every case, one run`, () => {
        const r = runProgram(bins.asan[p], []);
        expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
        expect(r.stderr).not.toContain('AddressSanitizer');
        expect(r.stdout).toContain(`${cases(p).length} case(s), 0 failed`);
      });
    }

    it('an out-of-bounds shared-memory write is reported at the kernel line', () => {
      const r = runProgram(bins.asan.crash_test, ['oob_shared_write']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('ERROR: AddressSanitizer: heap-buffer-overflow');
      expect(r.stderr).toContain('WRITE of size 4');
      expect(r.stderr).toMatch(new RegExp(`in oob_shared_kernel .*crash_test\\.cc:${lineOf('crash_test', 'OOB_WRITE')}`));
      expect(r.stdout).not.toContain('not detected');
    });
  });
});
