/**
 * ThreadSanitizer on the CPU runtime's threads (issue 18): test/tsan/pool_stream_test.cc drives
 * the compute pool (native/cpu/thread_pool) and CPU streams (native/cpu/stream, native/runtime/)
 * directly, built with -fsanitize=thread into build/tsan/ (cached by the digest of its sources and
 * the compiler). It runs at 3, 4 and 8 pool threads: the race it found (a pool worker waking
 * after its job ended read the next job's size unsynchronized) was caught in about two runs of
 * three each. Skipped, with the reason, where the compiler cannot build with ThreadSanitizer.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cxx = process.env.CXX || 'c++';
const SOURCES = [
  'test/tsan/pool_stream_test.cc',
  'native/cpu/thread_pool.cc',
  'native/cpu/stream.cc',
  'native/runtime/stream.cc',
  'native/runtime/storage.cc',
];
const HEADERS = ['native/cpu/thread_pool.h', 'native/cpu/stream.h', 'native/cpu/buffer.h', 'native/runtime/stream.h', 'native/runtime/storage.h', 'native/include/attnkit/error.h', 'native/include/attnkit/dtype.h'];
const FLAGS = ['-std=c++17', '-O1', '-g', '-fsanitize=thread', '-Wall', `-I${join(root, 'native', 'include')}`];

function skipReason(): string {
  if (process.platform !== 'linux') return 'ThreadSanitizer runs on Linux here';
  const probe = spawnSync(cxx, ['-fsanitize=thread', '-x', 'c++', '-', '-o', '/dev/null', '-lpthread'], { input: 'int main() { return 0; }' });
  return probe.status === 0 ? '' : `${cxx} cannot link with -fsanitize=thread`;
}
const why = skipReason();

function build(): string {
  const dir = join(root, 'build', 'tsan');
  const exe = join(dir, 'pool_stream_test');
  const h = createHash('sha256').update(FLAGS.join(' ')).update(spawnSync(cxx, ['--version'], { encoding: 'utf8' }).stdout ?? '');
  for (const f of [...SOURCES, ...HEADERS]) h.update(f).update(readFileSync(join(root, f)));
  const key = h.digest('hex');
  if (existsSync(exe) && existsSync(`${exe}.key`) && readFileSync(`${exe}.key`, 'utf8') === key) return exe;
  mkdirSync(dir, { recursive: true });
  const r = spawnSync(cxx, [...FLAGS, ...SOURCES.map((f) => join(root, f)), '-lpthread', '-o', exe], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  writeFileSync(`${exe}.key`, key);
  return exe;
}

describe.skipIf(why !== '')(`ThreadSanitizer: the compute pool and CPU streams${why ? ` (skipped: ${why})` : ''}`, () => {
  it.each([3, 4, 8])('no report with %i pool threads', (threads) => {
    const exe = build();
    const r = spawnSync(exe, [], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, ATTNKIT_NUM_THREADS: String(threads), TSAN_OPTIONS: 'halt_on_error=1 second_deadlock_stack=1' },
    });
    const reports = r.stderr.split('\n').filter((l) => /WARNING: ThreadSanitizer|SUMMARY: ThreadSanitizer/.test(l));
    expect(reports, r.stderr.slice(0, 4000)).toEqual([]);
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toMatch(/^ok \d+/);
  });
});
