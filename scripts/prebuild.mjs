#!/usr/bin/env node
/**
 * `npm run prebuild`: the release binary, in the layout node-gyp-build loads without a compiler:
 * prebuilds/<platform>-<arch>/attnkit.node (prebuildify's naming for a Node-API build: the package
 * name and no tags, so it matches every Node version with Node-API 9).
 *
 * prebuildify cannot drive cmake-js (it always spawns node-gyp), so this script does what it would:
 *   1. a release build with cmake-js in build-prebuild/ (the development build in
 *      build/ is left alone): CMAKE_BUILD_TYPE=Release, CUDA required (ATTNKIT_CUDA=ON) with the
 *      release architectures (sm_80/86/89/90 SASS + compute_80 PTX), and on Linux libstdc++
 *      linked statically (LINUX_LINK_FLAGS in scripts/binary-check.mjs);
 *   2. strip --strip-all into prebuilds/<platform>-<arch>/attnkit.node;
 *   3. checks: the file loads in a fresh node, reports the CUDA backend and architectures, needs
 *      neither libcudart nor libcuda, and no GLIBC version above the floor (scripts/binary-check.mjs).
 *
 * Options:
 *   --from-build [FILE]  skip the build and package FILE (default build/Release/attnkit.node),
 *                        e.g. the binary `npm install` just built; CI does this (docs/install.md)
 *   --out DIR            the prebuilds folder to write into (default ./prebuilds)
 *   --cpu-only           build without CUDA (for hosts without nvcc; not a release binary)
 *   --archs LIST         CUDA architectures instead of the release list (CMake syntax, ';'-separated)
 *   --jobs N             parallel compile jobs (default: the CPU count)
 *   --clean              delete build-prebuild/ first (a from-scratch build)
 *   --force              run even when started as npm's automatic pre-hook of `npm run build`
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LINUX_LINK_FLAGS, RELEASE_CUDA_ARCHS, formatReport, inspectElf, violations } from './binary-check.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => console.error(`prebuild: ${msg}`);

function usage(code) {
  console.error(
    'usage: node scripts/prebuild.mjs [--from-build [FILE]] [--out DIR] [--cpu-only] [--archs LIST] [--jobs N] [--clean] [--force]',
  );
  process.exit(code);
}

const args = process.argv.slice(2);
const opt = { fromBuild: null, out: join(root, 'prebuilds'), cpuOnly: false, clean: false, archs: RELEASE_CUDA_ARCHS, jobs: availableParallelism(), force: false };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--from-build') {
    opt.fromBuild = args[i + 1] && !args[i + 1].startsWith('--') ? resolve(args[++i]) : join(root, 'build', 'Release', 'attnkit.node');
  } else if (a === '--out') opt.out = resolve(args[++i] ?? usage(2));
  else if (a === '--cpu-only') opt.cpuOnly = true;
  else if (a === '--archs') opt.archs = args[++i] ?? usage(2);
  else if (a === '--jobs' || a === '-j') opt.jobs = Number(args[++i]);
  else if (a === '--force') opt.force = true;
  else if (a === '--clean') opt.clean = true;
  else if (a === '--help' || a === '-h') usage(0);
  else usage(2);
}
if (!Number.isInteger(opt.jobs) || opt.jobs < 1) usage(2);

// ------------------------------------------------------------------ npm's pre-hook
// npm runs a script called "prebuild" before every `npm run build` (pre<name> hooks), with exactly
// the same environment as a direct `npm run prebuild`. The only difference is the command line of
// the npm process above us, so look at it: a release build must not start on every source build.

/** Parent pid and command-line words of a process, or null. */
function processInfo(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    // npm sets process.title ("npm run build"), which Linux shows as one NUL-padded string.
    const words = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0\s]+/).filter(Boolean);
    return { ppid, words };
  } catch {
    try {
      const out = execFileSync('ps', ['-o', 'ppid=,args=', '-p', String(pid)], { encoding: 'utf8' }).trim();
      const [ppid, ...words] = out.split(/\s+/);
      return { ppid: Number(ppid), words };
    } catch {
      return null;
    }
  }
}

/** The script an ancestor `npm run X` / `yarn [run] X` was asked to run, or null. */
function requestedScript() {
  let pid = process.ppid;
  for (let depth = 0; depth < 6 && pid > 1; depth++) {
    const p = processInfo(pid);
    if (!p) return null;
    const i = p.words.findIndex((w) => /(^|\/)(npm|npm-cli\.js|yarn|yarn\.c?js)$/.test(w));
    if (i >= 0) {
      const rest = p.words.slice(i + 1).filter((w) => !w.startsWith('-'));
      if (['run', 'run-script', 'rum', 'urn'].includes(rest[0])) return rest[1] ?? null;
      if (/yarn/.test(p.words[i])) return rest[0] ?? null;
      return null;
    }
    pid = p.ppid;
  }
  return null;
}

if (!opt.force && process.env.npm_lifecycle_event === 'prebuild' && requestedScript() === 'build') {
  say('skipped: this is npm\'s automatic pre-hook of `npm run build` (run `npm run prebuild` for a release binary)');
  process.exit(0);
}

// ------------------------------------------------------------------ build
const tuple = `${process.platform}-${process.arch}`;
const dest = join(opt.out, tuple, 'attnkit.node');
const release = opt.fromBuild === null && !opt.cpuOnly && opt.archs === RELEASE_CUDA_ARCHS;
let source;

if (opt.fromBuild !== null) {
  source = opt.fromBuild;
  if (!existsSync(source)) {
    say(`${source} does not exist: build it first (\`npm install\` in a clone, or \`npm run build:native\`)`);
    process.exit(1);
  }
} else {
  const require = createRequire(join(root, 'package.json'));
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch {
    say('cmake-js not found: run `npm install` in the clone first');
    process.exit(1);
  }
  const outDir = join(root, 'build-prebuild');
  const defines = ['--CDCMAKE_BUILD_TYPE=Release'];
  if (process.platform === 'linux') defines.push(`--CDCMAKE_SHARED_LINKER_FLAGS=${LINUX_LINK_FLAGS}`);
  const env = { ...process.env, ATTNKIT_CUDA: opt.cpuOnly ? 'OFF' : 'ON', ATTNKIT_CUDA_ARCHS: opt.archs };
  // configure, then build: `compile` alone would keep a cache configured with other options.
  const common = ['--out', outDir, '--config', 'Release'];
  const steps = [
    [process.execPath, cmakeJs, 'configure', ...common, ...defines],
    [process.execPath, cmakeJs, 'build', ...common, '--parallel', String(opt.jobs)],
  ];
  if (opt.clean) rmSync(outDir, { recursive: true, force: true });
  const t0 = Date.now();
  for (const argv of steps) {
    say(`ATTNKIT_CUDA=${env.ATTNKIT_CUDA} ATTNKIT_CUDA_ARCHS="${opt.archs}" cmake-js ${argv.slice(2).join(' ')}`);
    const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: 'inherit', env });
    if (r.status !== 0) {
      say(`cmake-js failed (${r.error?.message ?? `exit ${r.status}`})${opt.cpuOnly ? '' : '; without nvcc, --cpu-only builds a CPU-only binary'}`);
      process.exit(1);
    }
  }
  say(`built in ${Math.round((Date.now() - t0) / 1000)} s`);
  source = join(outDir, 'Release', 'attnkit.node');
}

// ------------------------------------------------------------------ package
mkdirSync(dirname(dest), { recursive: true });
const tmp = `${dest}.tmp-${process.pid}`;
if (process.platform === 'linux') {
  execFileSync('strip', ['--strip-all', '-o', tmp, source]);
} else {
  copyFileSync(source, tmp);
  if (process.platform === 'darwin') execFileSync('strip', ['-Sx', tmp]);
}

// Load it in a fresh process, as a consumer would, and read what it says about itself.
const probe = spawnSync(process.execPath, ['-e', 'const m = { exports: {} }; process.dlopen(m, process.argv[1]); process.stdout.write(JSON.stringify(m.exports.info()))', tmp], {
  encoding: 'utf8',
});
if (probe.status !== 0) {
  rmSync(tmp, { force: true });
  say(`the stripped binary does not load:\n${probe.stderr}`);
  process.exit(1);
}
const info = JSON.parse(probe.stdout);
const problems = [];
if (!opt.cpuOnly && opt.fromBuild === null) {
  if (!info.cuda.compiled) problems.push('the CUDA backend is not compiled in');
  else if (info.cuda.archs !== opt.archs.split(';').join(',')) problems.push(`CUDA architectures are "${info.cuda.archs}", expected "${opt.archs}"`);
}
let report = null;
if (process.platform === 'linux') {
  report = inspectElf(tmp);
  problems.push(...violations(report, { release }));
}
if (problems.length > 0) {
  rmSync(tmp, { force: true });
  for (const p of problems) say(`rejected: ${p}`);
  process.exit(1);
}
renameSync(tmp, dest);

const shown = relative(process.cwd(), dest);
if (report) console.log(formatReport({ ...report, file: shown.startsWith('..') ? dest : shown }));
console.log(`  CPU       ${info.isa} (dispatched at run time; detected ${info.detectedIsa})`);
console.log(`  CUDA      ${info.cuda.compiled ? `compiled for ${info.cuda.archs}` : 'not compiled in'}`);
console.log(`  kind      ${release ? 'release' : opt.fromBuild !== null ? `copied from ${relative(root, source)} (not a release build)` : 'custom build (not a release build)'}`);
