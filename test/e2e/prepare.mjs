#!/usr/bin/env node
// Before `vitest --config vitest.e2e.config.ts`: builds the agent bundle when it is missing and
// the ramdisk (npm run build:ramdisk) when image-build/out (or FERRUM_RAMDISK_DIR) has none, so
// `npm run test:e2e` works on a fresh clone. An existing ramdisk is reused as it is: rebuild it
// with `npm run build:ramdisk` after changing the agent (a note below says when it looks stale).
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const explicitDir = process.env.FERRUM_RAMDISK_DIR;
const dir = resolve(explicitDir ?? join(repo, 'image-build/out'));
const run = (cmd, args) => {
  console.log(`test:e2e: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: repo, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`test:e2e: ${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
};

if (process.getuid?.() !== 0) {
  console.error('test:e2e: must run as root (network namespaces, taps, mmdebstrap); scripts/install-deps.sh --with-vm installs what it needs');
  process.exit(1);
}
const have = ['kernel', 'initramfs', 'sizes.json'].every((f) => existsSync(join(dir, f)));
if (!have) {
  if (explicitDir) {
    console.error(`test:e2e: FERRUM_RAMDISK_DIR=${dir} has no kernel/initramfs/sizes.json`);
    process.exit(1);
  }
  console.log(`test:e2e: no ramdisk in ${dir}: building it (npm run build:ramdisk)`);
  run('npm', ['run', 'build:ramdisk', '--', '--out', dir]);
} else {
  const bundle = join(repo, 'dist/bundle/ferrum-agent.mjs');
  if (existsSync(bundle) && statSync(bundle).mtimeMs > statSync(join(dir, 'initramfs')).mtimeMs) {
    console.log(`test:e2e: note: dist/bundle is newer than ${join(dir, 'initramfs')}; run 'npm run build:ramdisk' to test the current agent`);
  }
  console.log(`test:e2e: using the ramdisk in ${dir}`);
}
