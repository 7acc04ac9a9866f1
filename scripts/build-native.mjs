#!/usr/bin/env node
/**
 * Builds the native addon from source into build/Release/attnkit.node, where node-gyp-build looks
 * first (a local build shadows the prebuilds).
 *
 *   node scripts/build-native.mjs            cmake-js when cmake is on PATH (CPU + CUDA when nvcc is
 *                                            found), otherwise node-gyp and binding.gyp (CPU only)
 *   node scripts/build-native.mjs --cmake    cmake-js only (fails without cmake)
 *   node scripts/build-native.mjs --gyp      node-gyp only (CPU only)
 *   node scripts/build-native.mjs --prepare  what `npm install` runs in a clone (the "prepare"
 *                                            script): as above, but no build under `npm pack` /
 *                                            `npm publish` (they ship prebuilds/; publish refuses
 *                                            to go without one) or when ATTNKIT_SKIP_NATIVE_BUILD=1
 *   --jobs N                                 parallel compile jobs (default: the CPU count)
 *
 * Ships in the npm tarball, so that a consumer without a matching prebuild can run it from
 * node_modules/attnkit (docs/install.md). Needs no package besides the build tools it drives: it
 * runs before anything of attnkit is built, and in consumer projects where only attnkit's runtime
 * dependencies exist.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, platform } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LINUX_LINK_FLAGS } from './binary-check.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));

function usage(code) {
  console.error('usage: node scripts/build-native.mjs [--cmake | --gyp] [--prepare] [--jobs N]');
  process.exit(code);
}

const args = process.argv.slice(2);
let mode = 'auto';
let prepare = false;
let jobs = availableParallelism();
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--cmake') mode = 'cmake';
  else if (a === '--gyp') mode = 'gyp';
  else if (a === '--prepare') prepare = true;
  else if (a === '--jobs' || a === '-j') jobs = Number(args[++i]);
  else if (a === '--help' || a === '-h') usage(0);
  else usage(2);
}
if (!Number.isInteger(jobs) || jobs < 1) usage(2);

const say = (msg) => console.error(`attnkit: ${msg}`);

if (prepare) {
  const cmd = process.env.npm_command;
  if (cmd === 'pack' || cmd === 'publish') {
    say(`npm ${cmd}: not building the addon (the tarball ships prebuilds/, made by \`npm run prebuild\`)`);
    const dir = join(root, 'prebuilds');
    const found = existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, 'attnkit.node'))) : [];
    if (found.length > 0) say(`prebuilds: ${found.join(', ')}`);
    else if (cmd === 'publish') {
      say('no prebuilds/<platform>-<arch>/attnkit.node: run `npm run prebuild` before publishing');
      process.exit(1);
    } else say('warning: no prebuilds/<platform>-<arch>/attnkit.node, so this tarball needs a source build everywhere');
    process.exit(0);
  }
  if (process.env.ATTNKIT_SKIP_NATIVE_BUILD === '1') {
    say('ATTNKIT_SKIP_NATIVE_BUILD=1: not building the addon');
    process.exit(0);
  }
}

/** The first executable called `name` on PATH, or null. */
function which(name) {
  const exts = platform() === 'win32' ? (process.env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const p = join(dir, name + ext);
      try {
        if (statSync(p).isFile()) return p;
      } catch {
        /* not here */
      }
    }
  }
  return null;
}

/** A JS entry point of a package, resolved from attnkit's folder (so a consumer's copy is found). */
function resolveFrom(request) {
  try {
    return require.resolve(request);
  } catch {
    return null;
  }
}

/** node-gyp: attnkit's devDependency in a clone, or the copy npm bundles (npm exports its path). */
function nodeGyp() {
  const candidates = [
    resolveFrom('node-gyp/bin/node-gyp.js'),
    process.env.npm_config_node_gyp,
    process.env.npm_execpath && join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((p) => p && existsSync(p)) ?? null;
}

function run(argv, env = process.env) {
  say(argv.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' '));
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: 'inherit', env });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

const missingAddonApi = !resolveFrom('node-addon-api');
const installHint =
  'install the build tools next to attnkit first: `npm install --no-save cmake-js@8 node-addon-api@8` ' +
  '(they are devDependencies of attnkit, not runtime dependencies; docs/install.md)';

/**
 * The release link flags (scripts/binary-check.mjs) when the compiler has a static libstdc++: then
 * a local build needs the same GLIBC versions as a prebuild, and CI checks what ships. Without one
 * (Fedora/RHEL without libstdc++-static) the addon links libstdc++.so, which is fine on the machine
 * that built it.
 */
function linkDefines() {
  if (platform() !== 'linux') return [];
  const cxx = process.env.CXX || 'c++';
  const r = spawnSync(cxx, ['-print-file-name=libstdc++.a'], { encoding: 'utf8' });
  const lib = (r.stdout ?? '').trim();
  if (r.status !== 0 || !lib.startsWith('/') || !existsSync(lib)) {
    say(`no static libstdc++ for ${cxx}: linking libstdc++.so (the binary then needs this machine's libstdc++)`);
    return [];
  }
  return [`--CDCMAKE_SHARED_LINKER_FLAGS=${LINUX_LINK_FLAGS}`];
}

function buildCmake() {
  const cmakeJs = resolveFrom('cmake-js/bin/cmake-js');
  if (!cmakeJs || missingAddonApi) {
    say(`cmake-js${missingAddonApi ? ' / node-addon-api' : ''} not found: ${installHint}`);
    return 1;
  }
  // configure, then build: `cmake-js compile` would skip the configure step (and so ignore the
  // definitions) whenever build/ is already configured. Re-configuring an existing build/ takes
  // about a second and rebuilds only what changed.
  const status = run([process.execPath, cmakeJs, 'configure', ...linkDefines()]);
  return status !== 0 ? status : run([process.execPath, cmakeJs, 'build', '--parallel', String(jobs)]);
}

function buildGyp() {
  const gyp = nodeGyp();
  if (!gyp || missingAddonApi) {
    say(`${gyp ? 'node-addon-api' : 'node-gyp'} not found: ${installHint}`);
    return 1;
  }
  // node-gyp downloads Node's headers unless told where they are. Official Node builds and most
  // distribution packages ship them next to the binary (<prefix>/include/node): use those, so
  // the build also works offline.
  const extra = [];
  const prefix = dirname(dirname(process.execPath));
  if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) extra.push(`--nodedir=${prefix}`);
  return run([process.execPath, gyp, 'rebuild', '-j', String(jobs), ...extra]);
}

/** Exactly one .node file in build/Release: node-gyp-build loads the first one it lists. */
function built() {
  const dir = join(root, 'build', 'Release');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  return files.length === 1 ? join(dir, files[0]) : null;
}

let status;
if (mode === 'cmake' || (mode === 'auto' && which('cmake'))) {
  status = buildCmake();
} else {
  if (mode === 'auto') say('cmake not found on PATH: building the CPU-only addon with node-gyp (binding.gyp), without CUDA');
  status = buildGyp();
}

if (status !== 0 || !built()) {
  say(
    'the native build failed. Needs a C++17 compiler, plus CMake >= 3.18 for the full build ' +
      '(`--cmake`, CUDA when nvcc is found) or Python 3 and make for the CPU-only node-gyp build ' +
      '(`--gyp`). See docs/install.md.',
  );
  process.exit(status || 1);
}
say(`built ${built()}`);
