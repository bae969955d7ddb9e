// Ferrum's console status line (ramdisk only; started by ferrum-console-status.service).
// Every few seconds it asks the agent's own API on 127.0.0.1 what it is doing and prints one
// line on the console when something changed (and at least every 30 s):
//   [ferrum 42s] heartbeating node=1be2... cmd=execute_deploy_step RUNNING writing 120/480 MiB 18 MiB/s | mem 212/1456 MiB | ip 10.1.2.100
// Plain Node.js, no dependencies, never exits on errors (the agent may be restarting).
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { networkInterfaces } from 'node:os';

const port = Number(process.env.FERRUM_LISTEN_PORT ?? 9999);
const INTERVAL_MS = Number(process.env.FERRUM_STATUS_INTERVAL_MS ?? 3000);
const REPEAT_MS = 30_000;

const MiB = (n) => `${Math.round(n / 1048576)}`;

function memory() {
  try {
    const info = Object.fromEntries(
      readFileSync('/proc/meminfo', 'utf8')
        .split('\n')
        .map((l) => l.match(/^(\w+):\s+(\d+)/))
        .filter(Boolean)
        .map((m) => [m[1], Number(m[2]) * 1024]),
    );
    return `mem ${MiB(info.MemTotal - info.MemAvailable)}/${MiB(info.MemTotal)} MiB`;
  } catch {
    return 'mem ?';
  }
}

function addresses() {
  const out = [];
  for (const [name, list] of Object.entries(networkInterfaces())) {
    if (name === 'lo') continue;
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  }
  return out.length ? `ip ${out.join(',')}` : 'no ip';
}

// The agent serves plain HTTP until lookup and HTTPS with a self-signed certificate once Ironic
// takes its auto-TLS certificate: use whichever answers (this only reads from 127.0.0.1).
let https = false;
function getOnce(path, tls) {
  return new Promise((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)(
      { host: '127.0.0.1', port, path, timeout: 2000, ...(tls ? { rejectUnauthorized: false } : {}) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`${path}: ${res.statusCode}`));
          try {
            resolve(JSON.parse(body));
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function getJson(path) {
  try {
    return await getOnce(path, https);
  } catch (err) {
    if (err.code === 'ECONNREFUSED') throw err;
    https = !https;
    return getOnce(path, https);
  }
}

function describeProgress(p) {
  if (!p || typeof p !== 'object') return '';
  const parts = [p.phase ?? ''];
  if (typeof p.bytes_done === 'number') parts.push(p.bytes_total ? `${MiB(p.bytes_done)}/${MiB(p.bytes_total)} MiB` : `${MiB(p.bytes_done)} MiB`);
  if (typeof p.rate_bytes_per_s === 'number' && p.rate_bytes_per_s > 0) parts.push(`${MiB(p.rate_bytes_per_s)} MiB/s`);
  return parts.filter(Boolean).join(' ');
}

async function line() {
  let agent;
  try {
    const status = await getJson('/v1/status');
    const { commands = [] } = await getJson('/v1/commands/').catch(() => ({ commands: [] }));
    const last = commands[commands.length - 1];
    const node = status.node_uuid ? ` node=${status.node_uuid}` : '';
    let cmd = '';
    if (last) {
      cmd = ` cmd=${last.command_name} ${last.command_status}`;
      const progress = last.command_status === 'RUNNING' ? describeProgress(last.command_result?.progress) : '';
      if (progress) cmd += ` ${progress}`;
    }
    agent = `${status.phase ?? 'running'}${node}${cmd} (${commands.length} cmds)`;
  } catch (err) {
    agent = `agent not answering (${err.code ?? err.message})`;
  }
  return `${agent} | ${memory()} | ${addresses()}`;
}

let previous = '';
let printedAt = 0;
for (;;) {
  const text = await line();
  const now = Date.now();
  // The memory figure changes all the time: compare without it.
  const key = text.replace(/\| mem [^|]*/, '');
  if (key !== previous || now - printedAt >= REPEAT_MS) {
    const up = Math.round(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]));
    process.stdout.write(`[ferrum ${up}s] ${text}\n`);
    previous = key;
    printedAt = now;
  }
  await new Promise((r) => setTimeout(r, INTERVAL_MS));
}
