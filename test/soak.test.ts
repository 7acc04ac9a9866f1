/**
 * Soak (issue 18): 10,000 mixed small ops (every op family, forward and backward, conversions),
 * each disposing what it made, then 1,000 whose tensors are only dropped for the garbage
 * collector, in a child process. memory() must be back to its start, no wait may be left pending,
 * and the RSS must stay flat within a bound once warmed up. The RSS curve is printed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledIndex, describeEnd, runChild } from './fixtures/harness.ts';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const MiB = 2 ** 20;
// Measured after the 2,000-op warm-up: +10-20 MiB over the 11,000 ops (V8's heap and the
// allocator settling; it stays there for hundreds of thousands of ops). A leak of one small
// output per op (3 KiB) adds 30 MiB.
const RSS_BOUND = 32 * MiB;

let index: string;
beforeAll(async () => {
  index = await compiledIndex();
});

describe('soak', () => {
  it('10,000 mixed ops with dispose and 1,000 left to the GC: memory() back to its start, RSS flat', async () => {
    const r = await runChild(['--expose-gc', join(fixtures, 'soak-child.mjs'), index, '10000', '1000', '2000'], {
      timeoutMs: 100_000,
    });
    expect(r.status, describeEnd(r)).toBe(0);
    const out = JSON.parse(r.stdout) as {
      ops: number;
      seconds: number;
      rss: { start: number; peak: number; end: number };
      samples: number[];
      memory: { start: number; afterOps: number; end: number };
      liveCompletions: number;
    };
    const mb = (x: number) => (x / MiB).toFixed(1);
    console.log(
      `soak: ${out.ops} ops in ${out.seconds.toFixed(1)} s; RSS start ${mb(out.rss.start)} MiB, peak ${mb(out.rss.peak)} MiB, ` +
        `end ${mb(out.rss.end)} MiB; curve (MiB, every 500 ops): ${out.samples.map(mb).join(' ')}`,
    );
    expect(out.ops).toBe(11_000);
    expect(out.memory.afterOps).toBe(out.memory.start);
    expect(out.memory.end).toBe(out.memory.start);
    expect(out.liveCompletions).toBe(0);
    expect(out.rss.peak - out.rss.start).toBeLessThan(RSS_BOUND);
    expect(out.rss.end - out.rss.start).toBeLessThan(RSS_BOUND);
  });
});
