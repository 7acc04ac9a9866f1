import { defineConfig } from 'vitest/config';

// The nested run of test/cuda-fake-device.test.ts: test/cuda-runtime.test.ts and the backend
// conformance suite (test/conformance.test.ts, which then covers cuda:0 too) against the fake
// device (ATTNKIT_ADDON), reporting to the JSON file it names (never the main test-results.json).
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/cuda-runtime.test.ts', 'test/conformance.test.ts'],
    reporters: [['json', { outputFile: process.env.ATTNKIT_FAKE_REPORT ?? '/dev/null' }]],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
