// Runs the built agent (dist/agent/main.js) as a real process and waits until its API answers.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const AGENT_MAIN = resolve(import.meta.dirname, '../../dist/agent/main.js');

/** A parsed pino line of the agent's log. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface WaitForLogOptions {
  timeoutMs: number;
  /** Index of the first line looked at (lines before it were logged earlier). */
  from?: number;
  /** What a failure message ends with (default: the log's last 40 lines). */
  diagnostics?: () => Promise<string>;
}

export interface AgentProcess {
  url: string;
  proc: ChildProcess;
  logFile: string;
  log(): Promise<string>;
  /** Parsed pino lines logged so far. */
  logLines(): Promise<LogLine[]>;
  /** The first line that matches; fails when the agent exits first or after timeoutMs. */
  waitForLog(what: string, match: (l: LogLine) => boolean, o: WaitForLogOptions): Promise<LogLine>;
  stop(): Promise<number | null>;
}

export interface StartAgentOptions {
  args: string[];
  port: number;
  host?: string;
  /** Prefix, e.g. ['ip', 'netns', 'exec', 'ns1'] */
  wrapper?: string[];
  protocol?: 'http' | 'https';
  waitForApi?: boolean;
  env?: Record<string, string>;
  /** The Node.js binary to run it on (default: this one). */
  node?: string;
}

export async function startAgent(o: StartAgentOptions): Promise<AgentProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'ferrum-agent-'));
  const logFile = join(dir, 'agent.log');
  const out = createWriteStream(logFile);
  const host = o.host ?? '127.0.0.1';
  const argv = [o.node ?? process.execPath, AGENT_MAIN, '--listen-host', host, '--listen-port', String(o.port), '--state-dir', dir, ...o.args];
  const [cmd, ...rest] = o.wrapper ? [...o.wrapper, ...argv] : argv;
  const proc = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  proc.stdout!.pipe(out);
  proc.stderr!.pipe(out);
  const exited = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
  const url = `${o.protocol ?? 'http'}://${host.includes(':') ? `[${host}]` : host}:${o.port}`;
  const agent: AgentProcess = {
    url,
    proc,
    logFile,
    log: () => readFile(logFile, 'utf8'),
    async logLines() {
      return (await readFile(logFile, 'utf8'))
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine);
    },
    async waitForLog(what, match, { timeoutMs, from = 0, diagnostics }) {
      const tail = diagnostics ?? (async () => `--- agent log (last lines)\n${(await agent.log().catch(() => '')).split('\n').slice(-40).join('\n')}`);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = (await agent.logLines()).slice(from).find(match);
        if (hit) return hit;
        if (proc.exitCode !== null) throw new Error(`agent exited (${proc.exitCode}) while waiting for: ${what}\n${await tail()}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for agent log: ${what}\n${await tail()}`);
        await sleep(100);
      }
    },
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
  if (o.waitForApi !== false) {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}: ${await agent.log()}`);
      try {
        const res = await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${o.port}/v1/status`);
        if (res.ok) break;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) {
        await agent.stop();
        throw new Error(`agent API did not come up: ${await agent.log()}`);
      }
      await sleep(50);
    }
  }
  return agent;
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}
