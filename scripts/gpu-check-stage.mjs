#!/usr/bin/env node
/**
 * `npm run gpu-check:stage`: everything a GPU machine without Node.js needs to run scripts/gpu-check.sh,
 * in the ignored folder gpu-check-stage/ (docs/gpu-verification.md "The one-command GPU check"):
 *
 *   gpu-check-stage/
 *     node/node.xz                    this Node.js binary (process.execPath), xz -9; unpacked there
 *                                     with `xz -dc` or, without xz, Python's lzma module (UNPACK below)
 *     package/                        the package as a user installs it: package.json, dist/, the
 *                                     production node_modules (npm ls --omit=dev), the generated kernel
 *                                     list info() reads, and build/Release/attnkit.node: the CUDA addon
 *                                     built for sm_80 and sm_90
 *     manifest.json                   sizes (bytes) of each part, the total, the node version, the archs
 *
 *   node scripts/gpu-check-stage.mjs [--jobs N] [--archs "80-real;90-real"] [--skip-build] [--out DIR]
 *
 * The addon is built with cmake-js into build/gpu-check-stage/ (the normal build/Release is left
 * alone), CUDA required (ATTNKIT_CUDA=ON), for ATTNKIT_CUDA_ARCHS (default 80-real;90-real), with
 * the release link flags (static libstdc++: the GPU machine's libstdc++ may be older). dist/ must be
 * built (`npm run build:ts`). Fails when the folder is 60 MiB or more: the device tool carries 64 MiB.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LINUX_LINK_FLAGS } from './binary-check.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMIT = 60 * 2 ** 20;
/** How gpu-check.sh unpacks the node binary on the GPU machine (kept here for the manifest and docs). */
export const UNPACK = {
  xz: 'xz -dc gpu-check-stage/node/node.xz > node && chmod +x node',
  python: `python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' gpu-check-stage/node/node.xz node`,
};

const args = process.argv.slice(2);
let jobs = availableParallelism();
let archs = process.env.ATTNKIT_CUDA_ARCHS || '80-real;90-real';
let skipBuild = false;
let out = join(root, 'gpu-check-stage');
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--jobs') jobs = Number(args[++i]);
  else if (a === '--archs') archs = args[++i];
  else if (a === '--skip-build') skipBuild = true;
  else if (a === '--out') out = resolve(args[++i]);
  else {
    console.error('usage: node scripts/gpu-check-stage.mjs [--jobs N] [--archs "80-real;90-real"] [--skip-build] [--out DIR]');
    process.exit(2);
  }
}
const say = (m) => console.error(`gpu-check:stage: ${m}`);
const fail = (m) => {
  say(m);
  process.exit(1);
};
function run(argv, opts = {}) {
  say(argv.join(' '));
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: opts.capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', env: opts.env ?? process.env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) fail(`${argv[0]}: ${r.error.message}`);
  if (r.status !== 0) fail(`${argv.join(' ')} exited with ${r.status}`);
  return r.stdout;
}
function sizeOf(p) {
  const st = statSync(p);
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((n, f) => n + sizeOf(join(p, f)), 0);
}
const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;

// ------------------------------------------------------------------ the CUDA addon, sm_80 + sm_90
const buildDir = join(root, 'build', 'gpu-check-stage');
const addon = join(buildDir, 'Release', 'attnkit.node');
if (!skipBuild) {
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  if (!existsSync(cmakeJs)) fail('cmake-js not found: run `npm install` (it is a devDependency)');
  const env = { ...process.env, ATTNKIT_CUDA: 'ON', ATTNKIT_CUDA_ARCHS: archs };
  const t0 = performance.now();
  run([process.execPath, cmakeJs, 'configure', '-O', relative(root, buildDir), `--CDCMAKE_SHARED_LINKER_FLAGS=${LINUX_LINK_FLAGS}`], { env });
  run([process.execPath, cmakeJs, 'build', '-O', relative(root, buildDir), '--parallel', String(jobs)], { env });
  say(`addon built in ${((performance.now() - t0) / 1000).toFixed(0)} s with ${jobs} jobs`);
}
if (!existsSync(addon)) fail(`no ${relative(root, addon)} (run without --skip-build)`);
const dist = join(root, 'dist', 'src', 'index.js');
if (!existsSync(dist)) fail('no dist/src/index.js: run `npm run build:ts` first');

// ------------------------------------------------------------------ the package
rmSync(out, { recursive: true, force: true });
const pkgOut = join(out, 'package');
mkdirSync(join(pkgOut, 'build', 'Release'), { recursive: true });
const pkgJson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
// package.json without the scripts: the staged package is run, never built
const { scripts: _scripts, devDependencies: _dev, ...runtimePkg } = pkgJson;
writeFileSync(join(pkgOut, 'package.json'), JSON.stringify(runtimePkg, null, 2) + '\n');
cpSync(join(root, 'dist', 'src'), join(pkgOut, 'dist', 'src'), { recursive: true, filter: (p) => !p.endsWith('.map') });
cpSync(addon, join(pkgOut, 'build', 'Release', 'attnkit.node'));
// info() reads the generated kernel list (src/info.ts)
mkdirSync(join(pkgOut, 'native', 'cuda', 'generated'), { recursive: true });
cpSync(join(root, 'native', 'cuda', 'generated', 'kernels.json'), join(pkgOut, 'native', 'cuda', 'generated', 'kernels.json'));

// The production dependencies, as npm resolves them (their dependencies too), copied from node_modules.
const tree = JSON.parse(run(['npm', 'ls', '--omit=dev', '--all', '--json', '--long'], { capture: true }));
const paths = new Set();
(function walk(deps) {
  for (const d of Object.values(deps ?? {})) {
    if (d.path && !paths.has(d.path)) {
      paths.add(d.path);
      walk(d.dependencies);
    }
  }
})(tree.dependencies);
if (paths.size === 0) fail('npm ls --omit=dev listed no dependencies');
for (const p of paths) {
  const rel = relative(root, p);
  if (rel.startsWith('..')) fail(`dependency outside the tree: ${p}`);
  cpSync(p, join(pkgOut, rel), { recursive: true, filter: (f) => !/[\\/]node_modules$/.test(f) || f === p });
}

// ------------------------------------------------------------------ node, xz -9
mkdirSync(join(out, 'node'), { recursive: true });
const nodeXz = join(out, 'node', 'node.xz');
const t1 = performance.now();
run(['sh', '-c', `xz -9 -T${jobs} -c "${process.execPath}" > "${nodeXz}"`]);
say(`node compressed in ${((performance.now() - t1) / 1000).toFixed(0)} s`);

// ------------------------------------------------------------------ manifest and the size limit
const parts = {
  'node/node.xz': sizeOf(nodeXz),
  'package/build/Release/attnkit.node': sizeOf(join(pkgOut, 'build', 'Release', 'attnkit.node')),
  'package/dist': sizeOf(join(pkgOut, 'dist')),
  'package/node_modules': sizeOf(join(pkgOut, 'node_modules')),
  'package/package.json + kernels.json': sizeOf(join(pkgOut, 'package.json')) + sizeOf(join(pkgOut, 'native')),
};
const total = sizeOf(out);
const manifest = {
  created: new Date().toISOString(),
  node: { version: process.version, from: process.execPath, bytes: statSync(process.execPath).size, unpack: UNPACK },
  addon: { archs: archs.split(';'), built: relative(root, addon) },
  dependencies: [...paths].map((p) => relative(join(root, 'node_modules'), p)).sort(),
  bytes: parts,
  total,
  limit: LIMIT,
};
writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
for (const [k, v] of Object.entries(parts)) say(`${k.padEnd(38)} ${mib(v)}`);
say(`total ${mib(total)} (limit ${mib(LIMIT)}) in ${relative(root, out) || out}`);
if (total >= LIMIT) fail(`the stage is ${mib(total)}, over the ${mib(LIMIT)} limit`);
