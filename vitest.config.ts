import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Real sockets and child processes: keep the suite from oversubscribing a 2-core machine.
    maxWorkers: 2,
  },
});
