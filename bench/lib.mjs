// Shared helpers for the benchmarks: start the bundled agent, time HTTP calls, read RSS.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

export { ramdiskNode } from '../scripts/ramdisk-node.mjs';
