#!/usr/bin/env node
// npm run bench: every benchmark, each printing its figures and its ratio to a baseline.
// BENCH=name runs one (e.g. BENCH=inventory).
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const only = process.env.BENCH;
console.log(`ferrum benchmarks on ${(await import('node:os')).cpus().length} CPUs, load average ${(await import('node:os')).loadavg().map((l) => l.toFixed(2)).join(' ')}`);
for (const file of readdirSync(dir).filter((f) => f.endsWith('.bench.mjs')).sort()) {
  const name = file.replace('.bench.mjs', '');
  if (only && only !== name) continue;
  console.log(`\n### ${name}`);
  const mod = await import(`./${file}`);
  await mod.run();
}
