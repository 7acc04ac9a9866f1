/**
 * The g++ toolchain shared by the suites that build programs against the SIMT emulator
 * (test/simt.test.ts, test/cuda-kernels.test.ts): where the CUDA host headers are, why a suite is
 * skipped, build flavors and flags, the digest of every input that must trigger a rebuild, and two
 * small process helpers. Not a test file itself.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SIMT = join(root, 'native', 'simt');

/** The CUDA include directory (its host headers give __half, __nv_bfloat16, dim3 under g++). */
export function cudaInclude(): string | null {
  const dirs = [process.env.CUDA_PATH, process.env.CUDA_HOME, '/usr/local/cuda']
    .filter((d): d is string => !!d)
    .map((d) => join(d, 'include'));
  return dirs.find((d) => existsSync(join(d, 'cuda_fp16.h'))) ?? null;
}

export const cudaInc = cudaInclude();
export const gxxVersion = spawnSync('g++', ['--version'], { encoding: 'utf8' });
/** Why the emulator suites cannot run here, or null. */
export const skipReason =
  process.platform !== 'linux' || process.arch !== 'x64'
    ? 'the emulator runs on x86-64 Linux only'
    : gxxVersion.status !== 0
      ? 'g++ not found'
      : cudaInc === null
        ? 'CUDA headers not found (set CUDA_PATH)'
        : null;

export type Flavor = 'opt' | 'asan';
export const FLAVOR_FLAGS: Record<Flavor, string[]> = {
  opt: ['-O2', '-g'],
  asan: ['-O1', '-g', '-fsanitize=address', '-fno-omit-frame-pointer'],
};
export const COMMON_FLAGS = ['-std=c++17', '-Wall', '-Wextra', '-Wno-unknown-pragmas', '-pthread', `-I${cudaInc}`];
/**
 * The thread orders (SIMT_ORDER) every emulated case runs in: forward and reversed, where the warps of
 * a block advance almost in lockstep, and ahead, where one warp at a time runs to its next barrier (the
 * one that shows a stage refilled while another warp still reads it).
 */
export const ORDERS = ['forward', 'reverse', 'ahead'] as const;
/** The emulator's own sources, in native/simt/. */
export const RUNTIME = ['runtime.cc', 'fiber.cc', 'switch_x86_64.S'];

/** Every file whose change must rebuild: the emulator, its tests, the CUDA sources and headers, the policies. */
export function inputsDigest(): string {
  const h = createHash('sha256');
  const files: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(h|cuh|cc|cu|S|inc)$/.test(e.name)) files.push(p);
    }
  };
  walk(SIMT);
  walk(join(root, 'native', 'cuda'));
  walk(join(root, 'native', 'include'));
  for (const f of files.sort()) h.update(f).update('\0').update(readFileSync(f)).update('\0');
  return h.digest('hex');
}

/** The name under which a flavor's build is cached: a digest of the inputs, the compiler and the flags. */
export function buildKey(inputs: string, flags: string[]): string {
  return createHash('sha256').update(inputs).update(gxxVersion.stdout).update(flags.join(' ')).digest('hex').slice(0, 16);
}

/** Creates `dir` and removes what older builds (other keys) left in it. */
export function prepareDir(dir: string, key: string): void {
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (!f.includes(key)) rmSync(join(dir, f), { force: true });
}

/** One g++ invocation; the output path (a temporary name, renamed to `target` on success) goes last. */
export interface BuildStep {
  target: string;
  args: string[];
}

/**
 * Runs groups of g++ steps, one group after another (objects, then links), the steps of a group in
 * parallel; a target that exists is not rebuilt, and an interrupted build never leaves a target.
 */
export async function runSteps(groups: BuildStep[][], what: string): Promise<void> {
  for (const group of groups) {
    const results = await inParallel(
      group
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
    if (errors.length > 0) throw new Error(`building ${what} failed:\n${errors.join('\n')}`);
  }
}

/** Runs a command in the repository root, collecting stdout and stderr together. */
export function exec(cmd: string, args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => resolve({ status: -1, output: output + String(e) }));
    child.on('close', (status) => resolve({ status, output }));
  });
}

/** Runs tasks with at most one per core at a time; results in task order. */
export async function inParallel<T>(tasks: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(availableParallelism(), tasks.length) }, worker));
  return results;
}
