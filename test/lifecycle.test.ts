import { describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/native.ts';

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
