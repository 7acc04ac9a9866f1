/**
 * The CUDA runtime (native/cuda/device_stream.cu) verified without a GPU: the addon is linked once
 * more, with the runtime's sources compiled by g++ against the real cuda_runtime.h and a fake device
 * (test/fake-cuda/runtime.cc) instead of cudart, and the dense attention kernels run by the SIMT
 * emulator behind the real launchers (native/cuda/fmha/launch.cu). Then the GPU suite of
 * test/cuda-runtime.test.ts runs against it (ATTNKIT_ADDON) in a nested vitest: round trips, stream
 * ordering across CUDA streams and with the CPU, failure propagation, device memory and its
 * stream-ordered release, attention against the CPU backend. The fake device runs each stream's
 * operations in order after random delays and aborts on a use of device memory after its
 * stream-ordered free, so a missing wait in the runtime shows up as a failure here.
 *
 * What it cannot show: the real driver's behaviour (see docs/cuda.md), timings.
 *
 * Needs a CMake build of the addon (its object files are reused), g++ and the CUDA headers; skipped
 * visibly otherwise. Objects are cached in build/fake-cuda/ by a digest of their inputs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const FAKE = join(root, 'test', 'fake-cuda');
const OUT = join(root, 'build', 'fake-cuda');
const CMAKE_OBJECTS = join(root, 'build', 'CMakeFiles', 'attnkit.dir', 'native');
const cudaInc = ['/usr/local/cuda/include', process.env.CUDA_PATH && join(process.env.CUDA_PATH, 'include')].find(
  (d): d is string => !!d && existsSync(join(d, 'cuda_runtime.h')),
);
const gxx = spawnSync('g++', ['--version'], { encoding: 'utf8' });
const objectsOf = (dir: string) =>
  existsSync(join(CMAKE_OBJECTS, dir)) ? readdirSync(join(CMAKE_OBJECTS, dir)).filter((f) => f.endsWith('.o')).map((f) => join(CMAKE_OBJECTS, dir, f)) : [];
const cmakeObjects = [...objectsOf('cpu'), ...objectsOf('napi'), ...objectsOf('ops'), ...objectsOf('runtime')];
const why =
  process.platform !== 'linux' || process.arch !== 'x64'
    ? 'needs x86-64 Linux (the SIMT emulator)'
    : gxx.status !== 0
      ? 'g++ not found'
      : !cudaInc
        ? 'CUDA headers not found'
        : cmakeObjects.length === 0
          ? 'no CMake build of the addon (build/CMakeFiles)'
          : '';

function files(dir: string, ext: RegExp): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => ext.test(f)).sort().map((f) => join(dir, f)) : [];
}

/** Every input of a compiled object: sources and the headers they may include. */
function digestOf(extra: string[]): string {
  const h = createHash('sha256').update(gxx.stdout).update(extra.join(' '));
  const inputs = [
    ...files(FAKE, /\.(cc|h)$/),
    ...files(join(root, 'native', 'cuda'), /\.(cu|cuh|h)$/),
    ...files(join(root, 'native', 'cuda', 'fmha'), /\.(cu|cuh|h)$/),
    ...files(join(root, 'native', 'cuda', 'fmha', 'generated'), /\.(cu|h)$/),
    ...files(join(root, 'native', 'simt'), /\.(cc|h|S)$/),
    ...files(join(root, 'native', 'include', 'attnkit'), /\.h$/),
    join(root, 'native', 'cpu', 'stream.h'),
  ];
  for (const f of inputs) h.update(f).update(readFileSync(f));
  return h.digest('hex').slice(0, 16);
}

function exec(cmd: string, args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (status) => resolve({ status, output }));
  });
}

async function parallel(tasks: (() => Promise<string | null>)[]): Promise<string[]> {
  const errors: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const e = await tasks[next++]!();
      if (e) errors.push(e);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, availableParallelism()) }, worker));
  return errors;
}

/** Compiles what is missing (atomically) and links build/fake-cuda/attnkit-<key>.node. */
async function buildFakeAddon(): Promise<string> {
  const napiInc = (await import('node-addon-api')).default.include_dir as string;
  const nodeInc = join(dirname(dirname(process.execPath)), 'include', 'node');
  const base = ['-std=c++17', '-O2', '-g', '-fPIC', '-pthread', `-I${cudaInc}`, `-I${join(root, 'native', 'include')}`];
  const runtimeFlags = [...base, `-I${FAKE}`, `-I${join(root, 'native', 'cuda')}`, `-I${napiInc}`, `-I${nodeInc}`,
    '-fvisibility=hidden', '-DNAPI_VERSION=9', '-DNAPI_CPP_EXCEPTIONS', '-DATTNKIT_CUDA_ARCHS="fake"', '-DATTNKIT_HAVE_FMHA_CUDA'];
  const rename = ['-Dattention_forward=attention_forward_emulated', '-Dattention_backward=attention_backward_emulated'];
  const key = digestOf([...runtimeFlags, ...rename]);
  const dir = join(OUT, key);
  mkdirSync(dir, { recursive: true });
  for (const d of readdirSync(OUT)) if (d !== key && !d.endsWith('.node')) rmSync(join(OUT, d), { recursive: true, force: true });
  const units: { src: string; args: string[] }[] = [
    // the runtime exactly as shipped, compiled as C++ against the fake device
    ...['runtime.cu', 'device_stream.cu', 'device_attention.cu'].map((f) => ({ src: join(root, 'native', 'cuda', f), args: [...runtimeFlags, '-x', 'c++'] })),
    ...['runtime.cc', 'kernels.cc'].map((f) => ({ src: join(FAKE, f), args: runtimeFlags })),
    // the attention kernels under the SIMT emulator, behind the real launchers
    ...['runtime.cc', 'fiber.cc', 'switch_x86_64.S'].map((f) => ({ src: join(root, 'native', 'simt', f), args: base })),
    ...files(join(root, 'native', 'cuda', 'fmha', 'generated'), /\.cu$/).map((src) => ({ src, args: [...base, '-x', 'c++'] })),
    { src: join(root, 'native', 'cuda', 'fmha', 'launch.cu'), args: [...base, ...rename, '-include', join(FAKE, 'check_shim.h'), '-x', 'c++'] },
    { src: join(FAKE, 'attention.cc'), args: [...base, ...rename, `-I${join(root, 'native', 'cuda')}`] },
  ];
  const objects = units.map((u, i) => join(dir, `${i}-${basename(u.src).replace(/\.\w+$/, '')}.o`));
  const errors = await parallel(
    units.map((u, i) => async () => {
      if (existsSync(objects[i]!)) return null;
      const tmp = `${objects[i]}.tmp-${process.pid}`;
      const r = await exec('g++', [...u.args, '-c', u.src, '-o', tmp]);
      if (r.status !== 0) return `g++ ${u.src}:\n${r.output}`;
      renameSync(tmp, objects[i]!);
      return null;
    }),
  );
  if (errors.length > 0) throw new Error(`building the fake-device addon failed:\n${errors.join('\n')}`);
  // Linked each time: the CMake objects change with every native build.
  const addon = join(OUT, `attnkit-${process.pid}.node`);
  const r = await exec('g++', ['-shared', '-o', addon, ...cmakeObjects, ...objects, '-pthread', '-ldl', '-Wl,-z,nodelete']);
  if (r.status !== 0) throw new Error(`linking the fake-device addon failed:\n${r.output}`);
  return addon;
}

interface JsonReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { assertionResults: { fullName: string; status: string; failureMessages: string[] }[]; message?: string }[];
}

describe.skipIf(why !== '')(`the CUDA runtime on a fake device${why ? ` (skipped: ${why})` : ''}`, () => {
  it('the GPU suite of cuda-runtime.test.ts passes against it', { timeout: 900_000 }, async () => {
    const addon = await buildFakeAddon();
    const tmp = mkdtempSync(join(tmpdir(), 'attnkit-fake-'));
    try {
      const report = join(tmp, 'report.json');
      const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
      const r = await new Promise<{ status: number | null; output: string }>((resolve) => {
        const child = spawn(process.execPath, [vitest, 'run', '--config', join(FAKE, 'vitest.config.ts')], {
          cwd: root,
          env: { ...process.env, ATTNKIT_ADDON: addon, ATTNKIT_FAKE_REPORT: report },
        });
        let output = '';
        child.stdout.on('data', (d) => (output += d));
        child.stderr.on('data', (d) => (output += d));
        child.on('close', (status) => resolve({ status, output }));
      });
      expect(existsSync(report), `no report; vitest said:\n${r.output.slice(-3000)}`).toBe(true);
      const rep = JSON.parse(readFileSync(report, 'utf8')) as JsonReport;
      const results = rep.testResults.flatMap((f) => f.assertionResults);
      const failed = results.filter((a) => a.status === 'failed');
      expect(
        failed.map((a) => `${a.fullName}: ${a.failureMessages.join('\n').slice(0, 600)}`),
        rep.testResults.map((f) => f.message ?? '').join('\n') + r.output.slice(-2000),
      ).toEqual([]);
      expect(r.status).toBe(0);
      // the GPU suite ran (not skipped), attention included
      const gpu = results.filter((a) => a.fullName.startsWith('cuda:0 (runs where a CUDA device is present)'));
      const passed = gpu.filter((a) => a.status === 'passed');
      console.log(`[fake device] ${passed.length} of ${gpu.length} GPU-suite tests passed; ${rep.numPassedTests} passed, ${rep.numPendingTests} skipped in all`);
      expect(passed.length).toBe(gpu.length);
      expect(passed.length).toBeGreaterThanOrEqual(30);
      expect(passed.filter((a) => a.fullName.includes('attention on cuda:0 vs the CPU backend')).length).toBeGreaterThanOrEqual(8);
      // the backend conformance suite ran the CUDA column of the table: every claimed dense combination
      const conf = results.filter((a) => a.fullName.startsWith("backend 'cuda'") && / attention (float16|bfloat16) D=/.test(a.fullName));
      console.log(`[fake device] conformance: ${conf.length} claimed CUDA attention combinations`);
      expect(conf.length).toBeGreaterThanOrEqual(6);
      expect(conf.filter((a) => a.status !== 'passed')).toEqual([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
      rmSync(addon, { force: true });
    }
  });
});
