/**
 * What the per-ISA-level conformance suites share: the levels this CPU can run, a describe block
 * per level that forces it (levels above the detected one are listed and skipped, so the report
 * says which paths this machine could not run), and the log of the worst kernel/naive error ratio
 * per key that ATTNKIT_TEST_RATIOS=1 prints at the end of a file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpu, info } from '../src/index.ts';

export type Level = (typeof cpu.levels)[number];

/** The level the addon picked at load (the detected one unless ATTNKIT_CPU_ISA forces another). */
export const defaultIsa = cpu.isa() as Level;
export const detectedIsa = info().cpu.detectedIsa as Level;

/** Levels the CPU can run: the detected one and every lower one. */
export const runnable = (l: string): boolean => cpu.levels.indexOf(l as Level) <= cpu.levels.indexOf(detectedIsa);

/**
 * One describe block per ISA level; `body` gets `test` (skipped where the CPU lacks the level) and
 * the level. The level is forced for the block and the default restored after it.
 */
export function eachIsaLevel(body: (test: typeof it, level: Level) => void): void {
  describe.each(cpu.levels.map((l) => [l] as [Level]))('level %s', (level) => {
    beforeAll(() => {
      if (runnable(level)) expect(cpu.setIsa(level)).toBe(true);
    });
    afterAll(() => {
      cpu.setIsa(defaultIsa);
    });
    body(it.skipIf(!runnable(level)) as typeof it, level);
  });
}

/**
 * Worst kernel error / naive error per key (e.g. "bfloat16 dq") and where it happened; printed
 * after the file's tests with ATTNKIT_TEST_RATIOS=1. Registers its own afterAll, which also puts the
 * default ISA level back.
 */
export class RatioLog {
  private readonly worst: Record<string, { r: number; at: string }> = {};

  constructor(
    private readonly title: string,
    private readonly pad = 16,
  ) {
    afterAll(() => {
      cpu.setIsa(defaultIsa);
      if (!process.env.ATTNKIT_TEST_RATIOS) return;
      const lines = Object.entries(this.worst)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k.padEnd(this.pad)} ${v.r.toFixed(3)}  ${v.at}`);
      // eslint-disable-next-line no-console
      console.log(`worst kernel/naive ${this.title}:\n${lines.join('\n')}`);
    });
  }

  /** Records kernel/naive for `key` if it is the worst so far; a zero naive error records nothing. */
  note(key: string, kernelErr: number, naiveErr: number, at: string): void {
    if (!(naiveErr > 0)) return;
    const r = kernelErr / naiveErr;
    if (r > (this.worst[key]?.r ?? -1))
      this.worst[key] = { r, at: `${at} (kernel ${kernelErr.toExponential(2)}, naive ${naiveErr.toExponential(2)})` };
  }
}

/**
 * Memoizes a suite's expected values per (case index, dtype): the float64 reference and the naive
 * errors do not depend on the ISA level, so every level shares one computation.
 */
export function perCaseAndDtype<C, D extends string, E>(
  compute: (c: C, ci: number, dtype: D) => Promise<E>,
): (c: C, ci: number, dtype: D) => Promise<E> {
  const cache = new Map<string, Promise<E>>();
  return (c, ci, dtype) => {
    const key = `${ci}/${dtype}`;
    let e = cache.get(key);
    if (!e) {
      e = compute(c, ci, dtype);
      cache.set(key, e);
    }
    return e;
  };
}
