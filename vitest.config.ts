import { defineConfig } from 'vitest/config';

// unit: pure and fast, in parallel. system: real processes, loop devices, network namespaces and
// a real Ironic; one file at a time so they never fight over devices or ports.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 } },
      {
        test: {
          name: 'system',
          include: ['test/integration/**/*.test.ts', 'test/ironic/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
