/**
 * AddressSanitizer + UndefinedBehaviorSanitizer in CI (issue 18): the fast subset of
 * `npm run test:asan` (scripts/test-asan.mjs). The sanitized addon (build/asan/, CPU only, cached
 * by the digest of native/ and the toolchain) runs the backend conformance suite (every op of the
 * table, forward and backward), the worker tests (terminations mid-op: teardown under ASan), and
 * the merge, error and fault-injection suites, in a nested vitest with the ASan runtime preloaded
 * into node. Any sanitizer report fails it. Skipped, with the reason, only where the toolchain
 * cannot build it; the first build takes minutes (every later run reuses it).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { compiledIndex, runChild } from './fixtures/harness.ts';

interface AsanModule {
  ADDON: string;
  asanSkipReason(): string;
  buildAsan(): { path: string; built: boolean };
  asanEnv(addon?: string): NodeJS.ProcessEnv;
  runUnderAsan(args: string[], o?: { addon?: string; report?: string }): Promise<{ status: number | string; output: string; reports: string[] }>;
}
const root = fileURLToPath(new URL('..', import.meta.url));
const asan = (await import(pathToFileURL(join(root, 'scripts', 'test-asan.mjs')).href)) as AsanModule;
const why = asan.asanSkipReason();

const CI_SUBSET = ['test/conformance.test.ts', 'test/workers.test.ts', 'test/merge.test.ts', 'test/errors.test.ts', 'test/fault.test.ts'];

describe.skipIf(why !== '')(`ASan + UBSan${why ? ` (skipped: ${why})` : ''}`, () => {
  let addon = '';
  beforeAll(() => {
    addon = asan.buildAsan().path;
  }, 1_800_000);

  it('node runs the public API on the sanitized addon, with the ASan runtime loaded first', async () => {
    const index = await compiledIndex();
    const script = `const ak = await import(${JSON.stringify(pathToFileURL(index).href)});
      const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8');
      const q = ak.randn([1, 8, 1, 16], { seed: 1 });
      const out = await ak.attention(q, q, q).out.toArray();
      console.log(JSON.stringify({ addon: maps.includes(${JSON.stringify(addon)}), asan: /libasan\\.so/.test(maps), n: out.length }));`;
    const r = await runChild(['--input-type=module', '-e', script], { timeoutMs: 60_000, env: asan.asanEnv(addon) });
    expect(r.status, r.stderr.slice(-1000)).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ addon: true, asan: true, n: 128 });
  });

  it(`the CI subset (${CI_SUBSET.map((f) => f.replace(/^test\/|\.test\.ts$/g, '')).join(', ')}) passes with no sanitizer report`, { timeout: 900_000 }, async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'attnkit-asan-'));
    try {
      const r = await asan.runUnderAsan(CI_SUBSET, { addon, report: join(tmp, 'report.json') });
      expect(r.reports, r.output.slice(-4000)).toEqual([]);
      expect(r.status, r.output.slice(-4000)).toBe(0);
      expect(r.output).toMatch(/Test Files\s.*5 passed/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
