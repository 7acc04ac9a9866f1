import { beforeAll, describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../src/native.ts';
import { compiledIndex, describeEnd, runChild } from './fixtures/harness.ts';

// Regression: process exit used to race a stream worker releasing the thread-safe function
// (SIGABRT in uv_mutex_lock roughly one exit in ten). Many short-lived processes must all exit 0.
describe('process lifecycle', () => {
  test('short-lived processes that wait on streams exit cleanly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-life-'));
    const script = join(dir, 'life.cjs');
    writeFileSync(
      script,
      `const a = require(${JSON.stringify(join(packageRoot(), 'build/Release/attnkit.node'))});
       const s = new a.NativeStream();
       const t = new a.NativeStorage(0, 1 << 14);
       a.randn(s, t, 1);
       s.synchronize().then(() => s.read(t, true)).then((b) => { if (b.byteLength !== 4 << 14) process.exit(3); });`,
    );
    const codes: (number | null)[] = [];
    for (let i = 0; i < 40; i++) codes.push(spawnSync(process.execPath, [script]).status);
    expect(codes.filter((c) => c !== 0)).toEqual([]);
  });
});

// Ending the process with work in flight (issue 18): each way ends as asked, promptly (no hang on
// a pending wait or a busy stream), and never by a signal (no crash in the exit handlers while
// stream workers still run). test/fixtures/exit-child.mjs describes the modes.
describe('process exit with work in flight', () => {
  let index: string;
  beforeAll(async () => {
    index = await compiledIndex();
  });
  const child = fileURLToPath(new URL('./fixtures/exit-child.mjs', import.meta.url));
  test.each([
    { mode: 'return', status: 0, stdout: /^read 524288$/m },
    { mode: 'detached', status: 0, stdout: /^$/ },
    { mode: 'exit', status: 0, stdout: /^$/ },
    { mode: 'throw', status: 1, stdout: /^$/ },
    { mode: 'worker', status: 0, stdout: /^worker exit 3\nread 524288$/m },
  ])('$mode: exits $status', async ({ mode, status, stdout }) => {
    for (let i = 0; i < 3; i++) {
      const r = await runChild([child, index, mode], { timeoutMs: 30_000 });
      expect(r.signal, describeEnd(r)).toBe(null);
      expect(r.status, describeEnd(r)).toBe(status);
      expect(r.stdout.trim()).toMatch(stdout);
    }
  });
});
