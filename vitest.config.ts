import { defineConfig } from 'vitest/config';

// `npm test` writes the JSON report that .ci/run turns into its closing "N passed, N failed" line.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Native kernels already use every core; running test files in parallel only adds contention.
    fileParallelism: false,
  },
});
