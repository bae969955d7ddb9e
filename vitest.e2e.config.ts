import { defineConfig } from 'vitest/config';

// The end-to-end test only (npm run test:e2e): a real PXE boot of the ramdisk in QEMU, a real
// Ironic, a deploy and a boot from disk. Long, one file at a time, never part of `npm test`
// (vitest.config.ts does not include test/e2e).
export default defineConfig({
  test: {
    name: 'e2e',
    include: ['test/e2e/**/*.e2e.test.ts'],
    fileParallelism: false,
    testTimeout: 3_600_000,
    hookTimeout: 3_600_000,
    // Progress lines as they happen, not at the end of the test.
    reporters: ['verbose'],
  },
});
