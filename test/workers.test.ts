/**
 * worker_threads (issue 18): the addon loaded in four workers at once computes bitwise what the
 * main thread computes, on every op family; and workers terminated mid-op (or while they load the
 * addon) never take the process down, and leave no tensor or pending wait behind. The
 * terminations run in a child process, so that an abort fails the test instead of the run.
 * (test/stream.test.ts covers two workers on attention and a main thread that never loads attnkit.)
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as ak from '../src/index.ts';
import { compiledIndex, describeEnd, runChild } from './fixtures/harness.ts';
// @ts-expect-error: a plain-JS fixture, shared with the child processes and workers
import { OPS } from './fixtures/mixed-ops.mjs';

type OpResult = { op: string; seed: number; bytes: Uint8Array[] };
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

let index: string;
beforeAll(async () => {
  index = await compiledIndex();
});

describe('workers', () => {
  it('four workers at once compute bitwise what the main thread computes, on every op family', async () => {
    const seeds = [5, 11];
    const here: OpResult[] = [];
    for (const seed of seeds)
      for (const op of OPS as ((a: typeof ak, s: number) => Promise<Uint8Array[]>)[])
        here.push({ op: op.name, seed, bytes: await op(ak, seed) });
    const runWorker = () =>
      new Promise<{ results: OpResult[] }>((resolve, reject) => {
        const w = new Worker(join(fixtures, 'mixed-ops-worker.mjs'), { workerData: { dist: index, seeds } });
        let msg: { results: OpResult[] } | undefined;
        w.on('message', (m) => (msg = m));
        w.on('error', reject);
        w.on('exit', (code) => (msg && code === 0 ? resolve(msg) : reject(new Error(`worker exited with ${code}`))));
      });
    // A read resolves just before its stream's worker lets go of the task's tensors: wait for the
    // stream, so that the reading below counts only what is still alive.
    await ak.synchronize();
    const before = ak.memory().cpu;
    const all = await Promise.all([runWorker(), runWorker(), runWorker(), runWorker()]);
    for (const { results } of all) {
      expect(results.map((r) => `${r.op}/${r.seed}`)).toEqual(here.map((r) => `${r.op}/${r.seed}`));
      results.forEach((r, i) => {
        expect(r.bytes.length, r.op).toBe(here[i].bytes.length);
        r.bytes.forEach((b, j) => expect(Buffer.from(b).equals(Buffer.from(here[i].bytes[j])), `${r.op} seed ${r.seed} output ${j}`).toBe(true));
      });
    }
    // the workers' tensors are all freed (memory() is process-wide), their last ones by their
    // streams' threads once the environments are gone
    for (let i = 0; i < 100 && ak.memory().cpu !== before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(ak.memory().cpu).toBe(before);
  });

  it('workers terminated mid-op do not abort the process and leave nothing behind (80 terminations)', async () => {
    const r = await runChild([join(fixtures, 'terminate-child.mjs'), index, '20', '7'], { timeoutMs: 90_000 });
    expect(r.status, describeEnd(r)).toBe(0);
    const out = JSON.parse(r.stdout) as {
      terminated: number;
      midOp: number;
      liveCompletions: number;
      memoryBefore: number;
      memoryAfter: number;
      mainOk: boolean;
    };
    expect(out.terminated).toBe(80);
    // the terminations did find waits in flight (else this test could not fail)
    expect(out.midOp).toBeGreaterThan(5);
    // their completions went to the sink: none leaked, none settled into a dead environment
    expect(out.liveCompletions).toBe(0);
    expect(out.memoryAfter).toBe(out.memoryBefore);
    expect(out.mainOk).toBe(true);
  });
});
