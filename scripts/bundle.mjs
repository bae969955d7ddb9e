#!/usr/bin/env node
// Bundles the agent for the ramdisk into dist/bundle/ (ferrum-agent.mjs + lazily loaded chunks):
// no node_modules to ship, and a faster start (no module resolution over hundreds of files, and
// the conductor-facing code, TLS and log archiving load only when first needed).
import { build } from 'esbuild';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const outdir = process.argv[2] ?? 'dist/bundle';
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { 'ferrum-agent': 'src/agent/main.ts' },
  outdir,
  outExtension: { '.js': '.mjs' },
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  minifySyntax: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  // Some dependencies still call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __ferrumRequire } from 'node:module'; const require = __ferrumRequire(import.meta.url);" },
  logLevel: 'warning',
});
const size = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce(
    (n, e) => n + (e.isDirectory() ? size(join(dir, e.name)) : e.name.endsWith('.mjs') ? statSync(join(dir, e.name)).size : 0),
    0,
  );
console.log(`bundled ${outdir}/ferrum-agent.mjs (${(size(outdir) / 1024).toFixed(0)} KiB of JavaScript with its chunks)`);
