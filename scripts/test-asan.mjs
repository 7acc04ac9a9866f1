#!/usr/bin/env node
/**
 * The addon under AddressSanitizer + UndefinedBehaviorSanitizer (issue 18; docs/decisions.md,
 * "Teardown and sanitizers").
 *
 *   npm run test:asan                     build (if needed), then run the op suites under it
 *   npm run test:asan -- test/x.test.ts   build, then run these suites (any vitest arguments)
 *   node scripts/test-asan.mjs --build    build only
 *
 * The build: CMake (cmake-js) with ATTNKIT_SANITIZE=address,undefined, CPU only, -O1, into
 * build/asan/ (its own build dir; build/Release is untouched), skipped when the digest of its
 * inputs (native/, CMakeLists.txt, the compiler, node) matches build/asan/attnkit.node.key.
 * The run: vitest with ATTNKIT_ADDON = the sanitized addon, and node started with the ASan
 * runtime preloaded (LD_PRELOAD: node itself is not instrumented, and the runtime must come
 * first). Leak detection is off: node and V8 do not free everything at exit, so LSan would report
 * them, not attnkit (the soak and worker tests check attnkit's own memory instead).
 * allocator_may_return_null=1 keeps the huge-tensor tests on attnkit's OOM path instead of ASan's
 * "allocation size too big" report. Any report fails the run (halt on the first error, and the
 * output is checked for reports too).
 *
 * test/asan.test.ts runs a fast subset in CI through the same functions.
 * Exit status: the vitest run's; 1 when a report was found; 2 when the toolchain cannot build it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, platform } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const OUT = join(root, 'build', 'asan');
export const ADDON = join(OUT, 'Release', 'attnkit.node');
const KEY = join(OUT, 'attnkit.node.key');
const SANITIZE = 'address,undefined';

/** The op suites `npm run test:asan` runs by default. */
export const OP_SUITES = [
  'test/attention.test.ts',
  'test/merge.test.ts',
  'test/neighborhood.test.ts',
  'test/block-sparse.test.ts',
  'test/linear.test.ts',
  'test/selection.test.ts',
  'test/tensor.test.ts',
  'test/stream.test.ts',
  'test/errors.test.ts',
  'test/fault.test.ts',
];

const say = (m) => console.error(`test:asan: ${m}`);

function cxx() {
  return process.env.CXX || 'c++';
}

/** The ASan runtime of the compiler (absolute path), or null. */
export function asanRuntime() {
  const r = spawnSync(cxx(), ['-print-file-name=libasan.so'], { encoding: 'utf8' });
  const p = (r.stdout ?? '').trim();
  return r.status === 0 && p.startsWith('/') && existsSync(p) ? p : null;
}

/** '' when this machine can build and run the sanitized addon, else why not. */
export function asanSkipReason() {
  if (platform() !== 'linux' || process.arch !== 'x64') return 'the sanitizer build is set up for x86-64 Linux';
  if (spawnSync('cmake', ['--version']).status !== 0) return 'cmake is not on PATH';
  if (!asanRuntime()) return `${cxx()} has no ASan runtime (libasan.so)`;
  const probe = spawnSync(cxx(), ['-fsanitize=address,undefined', '-x', 'c++', '-', '-o', '/dev/null'], {
    input: 'int main() { return 0; }',
  });
  if (probe.status !== 0) return `${cxx()} cannot link with -fsanitize=address,undefined`;
  return '';
}

function tree(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((e) => (e.isDirectory() ? tree(join(dir, e.name)) : [join(dir, e.name)]));
}

function digest() {
  const h = createHash('sha256');
  h.update(SANITIZE).update(process.version).update(spawnSync(cxx(), ['--version'], { encoding: 'utf8' }).stdout ?? '');
  for (const f of [join(root, 'CMakeLists.txt'), ...tree(join(root, 'native'))])
    h.update(relative(root, f)).update('\0').update(readFileSync(f)).update('\0');
  return h.digest('hex');
}

function run(argv, env) {
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], env });
  return r.status ?? 1;
}

/** Builds build/asan/Release/attnkit.node unless it is up to date. Returns {path, built}. */
export function buildAsan({ jobs = availableParallelism() } = {}) {
  const key = digest();
  if (existsSync(ADDON) && existsSync(KEY) && readFileSync(KEY, 'utf8') === key) return { path: ADDON, built: false };
  mkdirSync(OUT, { recursive: true });
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  const env = { ...process.env, ATTNKIT_CUDA: 'OFF' };
  say(`building ${relative(root, ADDON)} (${SANITIZE}, CPU only)`);
  const common = ['--out', OUT, `--CDATTNKIT_SANITIZE=${SANITIZE}`, '--CDATTNKIT_CUDA=OFF'];
  let status = run([process.execPath, cmakeJs, 'configure', ...common], env);
  if (status === 0) status = run([process.execPath, cmakeJs, 'build', ...common, '--parallel', String(jobs)], env);
  if (status !== 0 || !existsSync(ADDON)) throw new Error('test:asan: the sanitized build failed');
  writeFileSync(KEY, key);
  return { path: ADDON, built: true };
}

/** The environment that runs node on the sanitized addon. */
export function asanEnv(addon = ADDON, base = process.env) {
  return {
    ...base,
    ATTNKIT_ADDON: addon,
    LD_PRELOAD: asanRuntime(),
    ASAN_OPTIONS: 'detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0:exitcode=86',
    UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1:exitcode=87',
  };
}

/** Sanitizer reports in a run's output. */
export function findReports(output) {
  return output.split('\n').filter((l) => /ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error: |SUMMARY: \w+Sanitizer/.test(l));
}

/**
 * Runs vitest on `args` (test files and options) with the sanitized addon; resolves to
 * {status, output, reports}. The nested run writes its JSON report to `report` when given, never
 * to the main test-results.json.
 */
export function runUnderAsan(args, { addon = ADDON, report, echo = false } = {}) {
  const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
  // A config of its own: the project's writes its JSON report to test-results.json.
  mkdirSync(OUT, { recursive: true });
  const config = join(OUT, 'vitest.config.mjs');
  const reporters = [['default'], ['json', { outputFile: report ?? join(OUT, 'report.json') }]];
  writeFileSync(
    config,
    `export default ${JSON.stringify({
      test: { root, include: ['test/**/*.test.ts'], reporters, testTimeout: 600_000, hookTimeout: 600_000, fileParallelism: false },
    })};\n`,
  );
  const argv = [vitest, 'run', '--config', config, ...args];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, argv, { cwd: root, env: asanEnv(addon), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const take = (d) => {
      output += d;
      if (echo) process.stderr.write(d);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (status, signal) => resolvePromise({ status: status ?? signal, output, reports: findReports(output) }));
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const why = asanSkipReason();
  if (why) {
    say(`cannot build: ${why}`);
    process.exit(2);
  }
  const { built } = buildAsan();
  say(built ? 'built' : 'up to date');
  if (args[0] === '--build') process.exit(0);
  const r = await runUnderAsan(args.length ? args : OP_SUITES, { echo: true });
  if (r.reports.length) {
    say(`${r.reports.length} sanitizer report line(s):\n${r.reports.join('\n')}`);
    process.exit(1);
  }
  say(r.status === 0 ? 'no sanitizer reports; the suites passed' : `the suites failed (status ${r.status})`);
  process.exit(r.status === 0 ? 0 : typeof r.status === 'number' ? r.status : 1);
}
