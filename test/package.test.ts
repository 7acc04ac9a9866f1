/**
 * Distribution (docs/install.md): the npm tarball ships the linux-x64 prebuild, the compiled JS and
 * types and what a source build needs, and no tests; it installs into an empty project on a PATH
 * with no compiler, no cmake and no nvcc, and attention runs on the CPU; the binary needs neither
 * libcudart nor libcuda, and no glibc newer than the documented floor.
 *
 * The tarball is packed from a copy of the package in a temp folder, so the repository is never
 * modified. Its prebuild is prebuilds/linux-x64/attnkit.node when `npm run prebuild` has made one
 * that is newer than the native sources; otherwise (CI) it is the build/Release/attnkit.node that `npm install` just built, stripped into
 * the same place by `scripts/prebuild.mjs --from-build`: the same compiler, link flags and CUDA
 * architectures as a release build, without the second full compile.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORBIDDEN_NEEDED, GLIBC_FLOOR, compareVersions } from '../scripts/binary-check.mjs';
import { native } from '../src/native.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
const PREBUILD = 'prebuilds/linux-x64/attnkit.node';

/** Top-level paths never copied into the staged package (build outputs, dependencies, VCS). */
const NOT_STAGED = new Set(['node_modules', 'build', 'build-prebuild', '.git', '.vitest', 'test-results.json']);

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

let tmp = '';
let pack: PackResult;
let tarball = '';
let prebuildSource = '';
let installed = '';
let sanitizedEnv: NodeJS.ProcessEnv = {};
let installMode = '';
let installSeconds = 0;

function run(cmd: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
}

function must(r: SpawnSyncReturns<string>, what: string): string {
  if (r.error || r.status !== 0)
    throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** npm's own entry point (npm-cli.js), found on the normal PATH. */
function npmCli(): string {
  const fromEnv = process.env.npm_execpath;
  if (fromEnv && basename(fromEnv) === 'npm-cli.js') return fromEnv;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, 'npm');
    if (dir && existsSync(p)) return realpathSync(p);
  }
  throw new Error('npm not found on PATH');
}

/** The newest modification time among the files a native build compiles from. */
function newestNativeSource(): number {
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
  return Math.max(...[...walk(join(root, 'native')), join(root, 'CMakeLists.txt')].map((f) => statSync(f).mtimeMs));
}

describe.skipIf(!linuxX64)('npm package (linux-x64)', () => {
  beforeAll(() => {
    if (!existsSync(join(root, 'dist/src/index.js')))
      throw new Error('dist/ is missing: run `npm install` (or `npm run build:ts`) first');
    tmp = mkdtempSync(join(tmpdir(), 'attnkit-package-'));

    // 1. Stage the package: a copy of the repository without build outputs and dependencies.
    const stage = join(tmp, 'attnkit');
    mkdirSync(stage);
    for (const entry of readdirSync(root)) {
      if (NOT_STAGED.has(entry) || entry.endsWith('.tgz')) continue;
      cpSync(join(root, entry), join(stage, entry), { recursive: true });
    }
    if (existsSync(join(root, PREBUILD)) && statSync(join(root, PREBUILD)).mtimeMs >= newestNativeSource()) {
      prebuildSource = `${PREBUILD} (npm run prebuild)`;
    } else {
      // No release prebuild, or one older than the native sources (it would test stale code).
      rmSync(join(stage, PREBUILD), { force: true });
      const built = join(root, 'build/Release/attnkit.node');
      if (!existsSync(built)) throw new Error(`neither ${PREBUILD} nor build/Release/attnkit.node exists: run \`npm install\` first`);
      must(run(process.execPath, ['scripts/prebuild.mjs', '--from-build', built, '--out', join(stage, 'prebuilds')], root), 'prebuild --from-build');
      prebuildSource = 'build/Release/attnkit.node, stripped (scripts/prebuild.mjs --from-build)';
    }

    // 2. Pack it (scripts ignored: dist/ is already built; a tarball is what it contains).
    const packed = must(run(process.execPath, [npmCli(), 'pack', '--json', '--ignore-scripts', '--pack-destination', tmp], stage), 'npm pack');
    pack = (JSON.parse(packed) as PackResult[])[0]!;
    tarball = join(tmp, pack.filename);

    // 3. Install it into an empty project, on a PATH that holds node and npm and nothing else.
    const bin = join(tmp, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli(), join(bin, 'npm'));
    const cache = process.env.npm_config_cache ?? must(run(process.execPath, [npmCli(), 'config', 'get', 'cache'], root), 'npm config get cache').trim();
    sanitizedEnv = {
      PATH: bin,
      HOME: homedir(),
      TMPDIR: tmpdir(),
      LANG: 'C',
      npm_config_cache: cache,
      npm_config_update_notifier: 'false',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
    };
    const consumer = join(tmp, 'consumer');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
    const t0 = Date.now();
    let r = run(join(bin, 'npm'), ['install', '--offline', tarball], consumer, sanitizedEnv);
    installMode = 'offline (npm cache only)';
    if (r.status !== 0 && /ENOTCACHED/.test(r.stderr + r.stdout)) {
      // A cache that lacks a dependency (not the case after `npm install` in the clone).
      r = run(join(bin, 'npm'), ['install', '--prefer-offline', tarball], consumer, sanitizedEnv);
      installMode = 'prefer-offline (cache, then registry)';
    }
    must(r, 'npm install <tarball> with a sanitized PATH');
    installSeconds = (Date.now() - t0) / 1000;
    installed = join(consumer, 'node_modules', 'attnkit');
    console.log(
      `[package] tarball ${pack.filename}: ${pack.size} bytes packed, ${pack.unpackedSize} unpacked, ` +
        `${pack.files.length} files; prebuild from ${prebuildSource}; installed ${installMode} in ${installSeconds.toFixed(1)} s`,
    );
  }, 600_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('the tarball holds the prebuild, the compiled JS and types, and the sources of the fallback builds', () => {
    const files = new Set(pack.files.map((f) => f.path));
    for (const f of [
      PREBUILD,
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'LICENSE',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/native.js',
      'dist/src/cli/index.js',
      'dist/src/bench/attention.js', // `attnkit bench` runs the compiled benchmarks (src/bench/)
      'docs/install.md',
      'CMakeLists.txt',
      'binding.gyp',
      'native/napi/exports.map',
      'scripts/build-native.mjs',
      'scripts/binary-check.mjs',
    ])
      expect(files.has(f), f).toBe(true);

    // Every source either build compiles, and every header under native/ (the builds include them).
    const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8').replace(/^\s*#.*$/gm, '')) as {
      targets: { sources: string[] }[];
    };
    const cmake = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
    const cmakeSources = [...cmake.matchAll(/\bnative\/[\w./-]+\.(?:cc|cu|cpp)\b/g)].map((m) => m[0]);
    const headers = (function walk(dir: string): string[] {
      return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
        e.isDirectory()
          ? ['native/simt', 'native/cuda/fmha/tests'].includes(`${dir}/${e.name}`) ? [] : walk(`${dir}/${e.name}`)
          : /\.(h|cuh|inc)$/.test(e.name) ? [`${dir}/${e.name}`] : [],
      );
    })('native');
    for (const f of [...gyp.targets.flatMap((t) => t.sources), ...cmakeSources, ...headers]) expect(files.has(f), `${f} (needed by a source build)`).toBe(true);
  });

  it('the tarball holds no tests, TypeScript sources, source maps, build outputs or dev scripts', () => {
    const bad = pack.files
      .map((f) => f.path)
      .filter(
        (p) =>
          /^(test|src|bench|build|build-prebuild|node_modules|\.ci|\.github)\//.test(p) ||
          p.startsWith('native/simt/') ||
          /^native\/cuda\/[^/]+\/tests\//.test(p) ||
          /\.(js\.map|tgz)$/.test(p) ||
          (p.endsWith('.ts') && !p.endsWith('.d.ts')) ||
          p === 'test-results.json' ||
          p === 'scripts/prebuild.mjs' ||
          p.startsWith('prebuilds/.'),
      );
    expect(bad).toEqual([]);
    // The only binary is the prebuild: a source build's output never leaks into the tarball.
    expect(pack.files.filter((f) => f.path.endsWith('.node')).map((f) => f.path)).toEqual([PREBUILD]);
    const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { scripts?: Record<string, string>; gypfile?: boolean };
    // No install-time compile (docs/decisions.md): no install hooks, and npm must not add its implicit
    // `node-gyp rebuild` for the shipped binding.gyp.
    for (const hook of ['preinstall', 'install', 'postinstall']) expect(pkg.scripts?.[hook], hook).toBeUndefined();
    expect(pkg.gypfile).toBe(false);
  });

  it('installs with no compiler, cmake or nvcc on PATH and runs attention on the CPU from the prebuild', () => {
    expect(readdirSync(join(tmp, 'bin')).sort()).toEqual(['node', 'npm']);
    expect(existsSync(join(installed, PREBUILD))).toBe(true);
    expect(existsSync(join(installed, 'build'))).toBe(false); // nothing was compiled at install time
    const script = `
      import { createRequire } from 'node:module';
      import { dirname } from 'node:path';
      import { attention, randn, cuda, info, reference } from 'attnkit';
      const require = createRequire(import.meta.url);
      const pkgDir = dirname(require.resolve('attnkit/package.json'));
      const shape = [1, 37, 2, 16];
      const [q, k, v] = [1, 2, 3].map((seed) => randn(shape, { seed }));
      const r = attention(q, k, v, { causal: true });
      const out = await r.out.toArray();
      const ref = reference.referenceAttention(
        { B: 1, Nq: 37, Nk: 37, H: 2, Hkv: 2, D: 16, Dv: 16, q: await q.toArray(), k: await k.toArray(), v: await v.toArray() },
        { causal: true },
      );
      let maxErr = 0;
      for (let i = 0; i < out.length; i++) maxErr = Math.max(maxErr, Math.abs(out[i] - ref.out[i]));
      console.log(JSON.stringify({
        loadedFrom: require('node-gyp-build').resolve(pkgDir),
        maxErr,
        isa: info().cpu.isa,
        cudaCompiled: info().cuda.compiled,
        cudaArchs: info().cuda.archs.join(';'),
        cudaAvailable: cuda.available(),
        cudaReason: cuda.reason(),
      }));
    `;
    const consumer = dirname(dirname(installed));
    writeFileSync(join(consumer, 'smoke.mjs'), script);
    const res = JSON.parse(must(run(join(tmp, 'bin', 'node'), ['smoke.mjs'], consumer, sanitizedEnv), 'smoke.mjs').trim()) as {
      loadedFrom: string;
      maxErr: number;
      cudaAvailable: boolean;
      cudaReason: string;
    };
    console.log(`[package] consumer: ${JSON.stringify({ ...res, loadedFrom: relative(consumer, res.loadedFrom) })}`);
    expect(realpathSync(res.loadedFrom)).toBe(realpathSync(join(installed, PREBUILD)));
    expect(res.maxErr).toBeLessThan(1e-4);
    // The same answer as this process's addon gives on this machine: false here without a driver
    // (`cuda.available() === false`, with the reason), true on a GPU runner.
    const here = native.info().cuda;
    expect(res.cudaAvailable).toBe(here.available);
    if (!res.cudaAvailable) expect(res.cudaReason.length).toBeGreaterThan(0);
  });

  it('when nothing loads, the error lists each place tried and how to build', () => {
    const consumer = dirname(dirname(installed));
    const script = `import('attnkit').then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })));`;
    const empty = join(tmp, 'empty');
    mkdirSync(empty, { recursive: true });
    const out = must(run(join(tmp, 'bin', 'node'), ['-e', script], consumer, { ...sanitizedEnv, ATTNKIT_PREBUILD: empty }), 'load failure').trim();
    const e = JSON.parse(out) as { code: string; message: string };
    expect(e.code).toBe('ERR_ATTNKIT_LOAD');
    for (const place of ['build/Release', 'build/Debug', 'prebuilds/linux-x64']) expect(e.message).toContain(join(empty, place));
    expect(e.message).toContain(join(installed, 'scripts', 'build-native.mjs'));
    expect(e.message).toContain(`glibc >= ${GLIBC_FLOOR}`);
  });

  it(`the prebuild needs neither libcudart nor libcuda, and no GLIBC newer than ${GLIBC_FLOOR}`, () => {
    const file = join(installed, PREBUILD);
    const needed = [...execFileSync('readelf', ['-d', '-W', file], { encoding: 'utf8' }).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map(
      (m) => m[1]!,
    );
    const imports = execFileSync('objdump', ['-T', '-w', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter((l) => l.includes('*UND*'))
      .join('\n');
    const versions = (prefix: string) => [...imports.matchAll(new RegExp(`\\b${prefix}_([0-9.]+)\\b`, 'g'))].map((m) => m[1]!).sort(compareVersions);
    const glibc = versions('GLIBC').at(-1) ?? null;
    const glibcxx = versions('GLIBCXX').at(-1) ?? null;
    const sections = execFileSync('readelf', ['-S', '-W', file], { encoding: 'utf8' });
    console.log(
      `[package] ${PREBUILD}: ${statSync(file).size} bytes; NEEDED ${needed.join(', ')}; ` +
        `GLIBC ${glibc} (floor ${GLIBC_FLOOR}); GLIBCXX ${glibcxx ?? 'none'}; CUDA fatbin ${/\s\.nv_fatbin\s/.test(sections)}`,
    );
    expect(needed.length).toBeGreaterThan(0);
    expect(needed.filter((l) => FORBIDDEN_NEEDED.test(l))).toEqual([]);
    expect(needed.some((l) => /^libc\.so/.test(l))).toBe(true);
    expect(glibc).not.toBeNull();
    expect(compareVersions(glibc!, GLIBC_FLOOR), `needs GLIBC_${glibc}`).toBeLessThanOrEqual(0);
    expect(sections).not.toMatch(/\s\.symtab\s/); // stripped
    if (native.info().cuda.compiled) expect(sections).toMatch(/\s\.nv_fatbin\s/);
  });

  it('the documented glibc floor is the one the checks enforce', () => {
    for (const doc of ['docs/install.md', 'README.md']) expect(readFileSync(join(root, doc), 'utf8'), doc).toContain(`glibc ${GLIBC_FLOOR}`);
    expect(readFileSync(join(root, 'src/native.ts'), 'utf8')).toContain(`glibc >= ${GLIBC_FLOOR}`);
  });
});
