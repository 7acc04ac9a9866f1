/**
 * Property-based fuzzing of every public entry point (issue 18): each family of test/fuzz/families.mjs
 * runs in a child process (test/fuzz/run.mjs) against the compiled package, so that an abort or an
 * out-of-memory kill is a failure of that family, not a lost run. A case is a valid call with up to
 * three mutations; it must throw an AttnkitError with a code documented in docs/errors.md and leave
 * its inputs unchanged, or succeed and agree with the float64 reference.
 *
 * ATTNKIT_FUZZ_RUNS sets the total number of cases (default 20,000, about 20 s on 2 cores; under
 * `npm run fuzz`, 200,000); ATTNKIT_FUZZ_SEED fixes the seed (default: a fresh one, printed with the
 * command that reproduces the run).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureDist, root } from './dist.ts';
import { documentedErrors } from './errors-doc.ts';

/** Share of the cases per family (its entry points and how slow a case is). */
const WEIGHTS: Record<string, number> = {
  factories: 1,
  tensorMethods: 1,
  streams: 0.5,
  attention: 1.5,
  merge: 1,
  linear: 1,
  neighborhood: 1.5,
  masks: 1.5,
  blockSparse: 1.5,
  info: 0.5,
};
const TOTAL = Number(process.env.ATTNKIT_FUZZ_RUNS ?? (process.env.npm_lifecycle_event === 'fuzz' ? 200_000 : 20_000));
const SEED = Number(process.env.ATTNKIT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const sum = Object.values(WEIGHTS).reduce((a, b) => a + b, 0);
const runsOf = (family: string) => Math.ceil((TOTAL * WEIGHTS[family]!) / sum);
/** A family's child may take this long (a hang is a failure too). */
const CHILD_TIMEOUT_MS = Math.max(120_000, TOTAL * 20);

interface Outcome {
  family: string;
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  report?: { cases: number; ok: boolean; failure?: string; ms: number; outcomes: Record<string, number> };
}

function runFamily(family: string, codes: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'test', 'fuzz', 'run.mjs'), family, String(runsOf(family)), String(SEED), codes], { cwd: root });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      let report: Outcome['report'];
      try {
        report = JSON.parse(line);
      } catch {
        report = undefined;
      }
      resolve({ family, status, signal, stdout, stderr, report });
    });
  });
}

const results = new Map<string, Outcome>();

beforeAll(async () => {
  ensureDist();
  const codes = documentedErrors().map((d) => d.code).join(',');
  const queue = Object.keys(WEIGHTS);
  // Two children at a time: the native kernels use every core, and the machine is shared.
  const worker = async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) results.set(f, await runFamily(f, codes));
  };
  await Promise.all([worker(), worker()]);
  const cases = [...results.values()].reduce((a, r) => a + (r.report?.cases ?? 0), 0);
  console.log(`fuzz: ${cases} cases over ${results.size} families, seed ${SEED} (reproduce: ATTNKIT_FUZZ_SEED=${SEED} ATTNKIT_FUZZ_RUNS=${TOTAL} npx vitest run test/fuzz)`);
}, CHILD_TIMEOUT_MS * 6);

describe('fuzz: every public entry point, each family in its own process', () => {
  it.each(Object.keys(WEIGHTS))('%s', (family) => {
    const r = results.get(family)!;
    const how = `node test/fuzz/run.mjs ${family} ${runsOf(family)} ${SEED} <codes>`;
    // An abort, a kill (out of memory, or the timeout: a hang) or an exit without a report is a crash.
    expect(r.signal, `${family} died by ${r.signal} (${how}):\n${r.stderr.slice(-3000)}`).toBeNull();
    expect(r.report, `${family} exited ${r.status} without a report (${how}):\n${r.stderr.slice(-3000)}${r.stdout.slice(-1000)}`).toBeDefined();
    expect(r.report!.failure ?? '', `${family} (seed ${SEED})`).toBe('');
    expect(r.status).toBe(0);
    expect(r.report!.cases).toBe(runsOf(family));
    // Both outcomes occur: calls that succeed (checked against the reference) and calls refused.
    const ok = Object.entries(r.report!.outcomes).filter(([k]) => k.endsWith(':ok')).reduce((a, [, n]) => a + n, 0);
    expect(ok).toBeGreaterThan(0);
    expect(ok).toBeLessThan(r.report!.cases);
  });

  it(`runs at least 10,000 cases in all (${TOTAL} asked)`, () => {
    const cases = [...results.values()].reduce((a, r) => a + (r.report?.cases ?? 0), 0);
    if (TOTAL >= 10_000) expect(cases).toBeGreaterThanOrEqual(10_000);
    expect(cases).toBeGreaterThanOrEqual(TOTAL);
  });
});
