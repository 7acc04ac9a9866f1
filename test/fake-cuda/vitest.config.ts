import { defineConfig } from 'vitest/config';

// test/cuda-runtime.test.ts, the backend conformance suite (test/conformance.test.ts, which then
// covers cuda:0 too) and neighborhood attention on CUDA (test/neighborhood-cuda.test.ts) against
// the fake-CUDA addon: the nested run of test/cuda-fake-device.test.ts, or by hand,
// `npx vitest run --config test/fake-cuda/vitest.config.ts`. The addon is ATTNKIT_ADDON when set
// (the nested run passes the one it built), else the one build of scripts/build-fake-cuda.mjs
// (build/fake-cuda/attnkit.node, brought up to date here). Reports to the JSON file
// ATTNKIT_FAKE_REPORT names (never the main test-results.json), else to the terminal.
const addon =
  process.env.ATTNKIT_ADDON ??
  (
    (await import(new URL('../../scripts/build-fake-cuda.mjs', import.meta.url).href)) as {
      buildFakeCuda(o?: { log?: (m: string) => void }): Promise<{ path: string }>;
    }
  ).buildFakeCuda({ log: (m) => console.log(`fake-cuda: ${m}`) }).then((b) => b.path);

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/cuda-runtime.test.ts', 'test/conformance.test.ts', 'test/block-sparse-cuda.test.ts', 'test/neighborhood-cuda.test.ts'],
    env: { ATTNKIT_ADDON: await addon },
    reporters: process.env.ATTNKIT_FAKE_REPORT ? [['json', { outputFile: process.env.ATTNKIT_FAKE_REPORT }]] : ['default'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
