#!/usr/bin/env node
/**
 * Builds the fake-CUDA addon, build/fake-cuda/attnkit.node (docs/gpu-verification.md, "The fake-CUDA
 * addon"): the addon of the CMake build (`npm run build:native`; its CPU, binding, ops and runtime
 * objects are reused) linked once more with the CUDA runtime of native/cuda/ compiled by g++ against
 * the real cuda_runtime.h and a fake device (test/fake-cuda/runtime.cc) instead of cudart, and every
 * device source of the addon compiled by g++ for the SIMT emulator (native/simt/): the runtime's
 * kernels (native/cuda/device_kernels.cu, launched in stream order by test/fake-cuda/launch_shim.h)
 * and the attention kernels behind their real launchers (native/cuda/fmha/). With
 * ATTNKIT_ADDON=build/fake-cuda/attnkit.node any program runs the CUDA path of the public API on
 * 'cuda:0' (and 'cuda:1') without a GPU, slowly.
 *
 * Objects are cached in build/fake-cuda/obj-<digest>/ by a digest of every input (sources, headers,
 * flags, compiler); the addon is linked again only when an object or a CMake object changed, and
 * replaced atomically (a process that has the old file loaded keeps it).
 *
 * Usage: node scripts/build-fake-cuda.mjs [--quiet]   (npm run build:fake-cuda)
 * Needs x86-64 Linux, g++, the CUDA headers (CUDA_PATH or /usr/local/cuda) and the CMake build.
 * Exit status: 0 built (or up to date), 1 a compile or link failed, 2 a prerequisite is missing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const FAKE = join(root, 'test', 'fake-cuda');
const CUDA = join(root, 'native', 'cuda');
export const OUT = join(root, 'build', 'fake-cuda');
export const ADDON = join(OUT, 'attnkit.node');
const CMAKE_OBJECTS = join(root, 'build', 'CMakeFiles', 'attnkit.dir', 'native');

function files(dir, ext) {
  return existsSync(dir) ? readdirSync(dir).filter((f) => ext.test(f)).sort().map((f) => join(dir, f)) : [];
}

/** Files under dir and its subfolders whose name matches ext, in a stable order. */
function tree(dir, ext) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1)).flatMap((e) =>
    e.isDirectory() ? tree(join(dir, e.name), ext) : ext.test(e.name) ? [join(dir, e.name)] : []);
}

function cudaInclude() {
  return [process.env.CUDA_PATH, process.env.CUDA_HOME, '/usr/local/cuda']
    .filter(Boolean)
    .map((d) => join(d, 'include'))
    .find((d) => existsSync(join(d, 'cuda_runtime.h'))) ?? null;
}

function cmakeObjects() {
  return ['cpu', 'napi', 'ops', 'runtime'].flatMap((d) => files(join(CMAKE_OBJECTS, d), /\.o$/));
}

/** Why the fake-CUDA addon cannot be built here, or '' when it can. */
export function fakeCudaSkipReason() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs x86-64 Linux (the SIMT emulator)';
  if (spawnSync('g++', ['--version']).status !== 0) return 'g++ not found';
  if (!cudaInclude()) return 'CUDA headers not found (set CUDA_PATH)';
  if (cmakeObjects().length === 0) return 'no CMake build of the addon (build/CMakeFiles; run npm run build:native)';
  return '';
}

function exec(cmd, args) {
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd: root });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => done({ status: -1, output: output + String(e) }));
    child.on('close', (status) => done({ status, output }));
  });
}

async function parallel(tasks) {
  const errors = [];
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const e = await tasks[next++]();
      if (e) errors.push(e);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, availableParallelism()) }, worker));
  return errors;
}

/** The translation units of the fake device and the emulated kernels, with their g++ flags. */
function units() {
  const cudaInc = cudaInclude();
  const require = createRequire(import.meta.url);
  const napiInc = require('node-addon-api').include_dir;
  const nodeInc = join(dirname(dirname(process.execPath)), 'include', 'node');
  const base = ['-std=c++17', '-O2', '-g', '-fPIC', '-pthread', `-I${cudaInc}`, `-I${join(root, 'native', 'include')}`];
  const runtimeFlags = [...base, `-I${FAKE}`, `-I${CUDA}`, `-I${napiInc}`, `-I${nodeInc}`, '-fvisibility=hidden',
    '-DNAPI_VERSION=9', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS', '-DATTNKIT_CUDA_ARCHS="fake"', '-DATTNKIT_HAVE_FMHA_CUDA'];
  const rename = ['-Dattention_forward=attention_forward_emulated', '-Dattention_backward=attention_backward_emulated'];
  const fmha = join(CUDA, 'fmha');
  return [
    // the runtime exactly as shipped, compiled as C++ against the fake device
    ...['runtime.cu', 'device_stream.cu', 'device_attention.cu'].map((f) => ({ src: join(CUDA, f), args: [...runtimeFlags, '-x', 'c++'] })),
    { src: join(FAKE, 'runtime.cc'), args: runtimeFlags },
    // the runtime's kernels on the emulator, launched in stream order on the fake device
    { src: join(CUDA, 'device_kernels.cu'), args: [...runtimeFlags, '-include', join(FAKE, 'launch_shim.h'), '-x', 'c++'] },
    // the attention kernels on the emulator, behind the real launchers
    ...['runtime.cc', 'fiber.cc', 'switch_x86_64.S'].map((f) => ({ src: join(root, 'native', 'simt', f), args: base })),
    ...files(join(fmha, 'generated'), /\.cu$/).map((src) => ({ src, args: [...base, '-x', 'c++'] })),
    { src: join(fmha, 'launch.cu'), args: [...base, ...rename, '-x', 'c++'] },
    { src: join(FAKE, 'attention.cc'), args: [...base, ...rename, `-I${CUDA}`] },
    // every other kernel family of native/cuda/instantiations.json: its launchers as shipped, its
    // generated units with ATTNKIT_LAUNCH enqueued in stream order on the fake device (launch_shim.h)
    ...otherFamilies().flatMap((f) => [
      ...f.sources.map((s) => ({ src: join(root, f.dir, s), args: [...runtimeFlags, '-x', 'c++'] })),
      ...files(join(root, f.dir, 'generated'), /\.cu$/).map((src) => ({
        src, args: [...runtimeFlags, '-include', join(FAKE, 'launch_shim.h'), '-x', 'c++'],
      })),
    ]),
  ];
}

/** The kernel families with instantiations other than fmha (whose launchers are renamed above). */
function otherFamilies() {
  const text = JSON.parse(readFileSync(join(CUDA, 'instantiations.json'), 'utf8'));
  return text.families.filter((f) => f.family !== 'fmha' && f.dir && f.instantiations.length > 0)
    .map((f) => ({ dir: f.dir, sources: f.sources ?? [] }));
}

/** A digest of every input of the compiled objects: compiler, flags, sources and the headers they may include. */
function digestOf(list) {
  const h = createHash('sha256').update(spawnSync('g++', ['--version'], { encoding: 'utf8' }).stdout ?? '');
  for (const u of list) h.update(u.src).update(u.args.join(' '));
  const inputs = [
    ...files(FAKE, /\.(cc|h)$/),
    ...tree(CUDA, /\.(cu|cuh|h)$/),  // with fmha/, its generated units and any later family
    ...files(join(root, 'native', 'simt'), /\.(cc|h|S)$/),
    ...files(join(root, 'native', 'include', 'attnkit'), /\.h$/),
    ...files(join(root, 'native', 'runtime'), /\.h$/),
  ];
  for (const f of inputs) h.update(f).update(readFileSync(f));
  return h.digest('hex').slice(0, 16);
}

/**
 * Compiles what is missing and (re)links build/fake-cuda/attnkit.node when an input changed.
 * Returns {path, built: whether anything was compiled or linked}; throws on a failure (the message
 * carries the compiler's output), or when a prerequisite is missing.
 */
export async function buildFakeCuda({ log = () => {} } = {}) {
  const why = fakeCudaSkipReason();
  if (why) throw Object.assign(new Error(`cannot build the fake-CUDA addon: ${why}`), { prerequisite: true });
  const list = units();
  const key = digestOf(list);
  const dir = join(OUT, `obj-${key}`);
  mkdirSync(dir, { recursive: true });
  for (const d of readdirSync(OUT)) {
    if (d !== `obj-${key}` && !d.startsWith('attnkit.node')) rmSync(join(OUT, d), { recursive: true, force: true });
  }
  const objects = list.map((u, i) => join(dir, `${i}-${basename(u.src).replace(/\.\w+$/, '')}.o`));
  const missing = list.map((_, i) => i).filter((i) => !existsSync(objects[i]));
  if (missing.length > 0) log(`compiling ${missing.length} of ${list.length} units for the fake device (build/fake-cuda/obj-${key})`);
  const errors = await parallel(missing.map((i) => async () => {
    const tmp = `${objects[i]}.tmp-${process.pid}`;
    const r = await exec('g++', [...list[i].args, '-c', list[i].src, '-o', tmp]);
    if (r.status !== 0) return `g++ ${list[i].src}:\n${r.output}`;
    renameSync(tmp, objects[i]);
    return null;
  }));
  if (errors.length > 0) throw new Error(`building the fake-CUDA addon failed:\n${errors.join('\n')}`);

  // The CMake objects change with every native build: the link is keyed by all objects' identities.
  const cmake = cmakeObjects();
  const linkKey = createHash('sha256');
  for (const o of [...cmake, ...objects]) {
    const s = statSync(o);
    linkKey.update(`${o} ${s.size} ${s.mtimeMs}\n`);
  }
  const link = linkKey.digest('hex');
  const keyFile = `${ADDON}.key`;
  if (missing.length === 0 && existsSync(ADDON) && existsSync(keyFile) && readFileSync(keyFile, 'utf8') === link) {
    return { path: ADDON, built: false };
  }
  const tmp = `${ADDON}.tmp-${process.pid}`;
  // -z nodelete: the emulator's worker threads and the fake streams outlive a dlclose at exit.
  const r = await exec('g++', ['-shared', '-o', tmp, ...cmake, ...objects, '-pthread', '-ldl', '-Wl,-z,nodelete']);
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`linking the fake-CUDA addon failed:\n${r.output}`);
  }
  renameSync(tmp, ADDON);
  writeFileSync(keyFile, link);
  log(`linked ${ADDON}`);
  return { path: ADDON, built: true };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const quiet = process.argv.includes('--quiet');
  buildFakeCuda({ log: quiet ? () => {} : (m) => console.log(`build-fake-cuda: ${m}`) }).then(
    ({ path, built }) => {
      if (!quiet) console.log(`build-fake-cuda: ${built ? 'built' : 'up to date'}: ${path}\n  ATTNKIT_ADDON=${path} node your-program.mjs`);
    },
    (e) => {
      console.error(`build-fake-cuda: ${e.message}`);
      process.exit(e.prerequisite ? 2 : 1);
    },
  );
}
