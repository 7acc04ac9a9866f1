/**
 * The event loop stays responsive during a large op (issue 18): dense attention at N = 4096,
 * forward and backward, runs on the stream's worker and the compute pool while a 5 ms
 * setInterval on the JS thread keeps firing. Its largest lag must be a small fraction of the
 * op's time (the JS thread only enqueues and, at the end, copies the result back).
 */
import { describe, expect, it } from 'vitest';
import { attention, randn } from '../src/index.ts';

/** Runs `work` while measuring how late a 5 ms interval fires; returns both durations (ms). */
async function withLag(work: () => Promise<unknown>): Promise<{ opMs: number; maxLagMs: number }> {
  let maxLagMs = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxLagMs = Math.max(maxLagMs, now - last - 5);
    last = now;
  }, 5);
  const t0 = performance.now();
  await work();
  const opMs = performance.now() - t0;
  clearInterval(timer);
  return { opMs, maxLagMs };
}

describe('event loop', () => {
  it('dense attention N = 4096 (forward + backward) leaves the event loop responsive', async () => {
    // More heads on a faster machine, until the op takes long enough for the bound to mean
    // something (2 cores: H = 4 takes 1.2-1.6 s).
    for (const H of [4, 16, 64]) {
      const shape = [1, 4096, H, 64];
      const [q, k, v, d] = [0, 1, 2, 3].map((i) => randn(shape, { seed: 90 + i }));
      await q.toArray(); // inputs ready, so the measurement covers the op alone
      const { opMs, maxLagMs } = await withLag(async () => {
        const r = attention(q, k, v, { causal: false });
        const g = r.backward(d);
        await g.dq.toArray();
        for (const t of [r.out, r.lse, g.dq, g.dk, g.dv]) t.dispose();
      });
      for (const t of [q, k, v, d]) t.dispose();
      console.log(`event loop: attention [1, 4096, ${H}, 64] forward+backward took ${opMs.toFixed(0)} ms; max interval lag ${maxLagMs.toFixed(1)} ms`);
      if (opMs < 250 && H < 64) continue;
      expect(opMs).toBeGreaterThan(250);
      expect(maxLagMs).toBeLessThan(Math.max(50, opMs / 10));
      return;
    }
  });
});
