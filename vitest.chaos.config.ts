import { defineConfig } from 'vitest/config';

// The heavy reliability suites (`npm run test:chaos`): real worker processes killed at random, 10,000-run load.
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.chaos.ts'],
    testTimeout: 15 * 60_000,
    hookTimeout: 60_000,
    // One at a time: they measure and load the machine.
    fileParallelism: false,
    pool: 'forks',
  },
});
