// A gzipped tar of the system's logs and diagnostics, as IPA collects for Ironic's deploy logs:
// the journal, dmesg, the agent's own log and the outputs of the usual inspection commands.
// Commands run in parallel, each time-boxed; a missing tool becomes a note, never a failure.
import { createGzip } from 'node:zlib';
import type { Host } from './host/host.js';
import type { LogRing } from './log.js';

interface Source {
  file: string;
  cmd: string;
  args: string[];
}

const SOURCES: Source[] = [
  { file: 'journal', cmd: 'journalctl', args: ['--full', '--no-pager', '-b', '-n', '10000'] },
  { file: 'dmesg', cmd: 'dmesg', args: [] },
  { file: 'df', cmd: 'df', args: ['-a'] },
  { file: 'ip_addr', cmd: 'ip', args: ['addr'] },
  { file: 'ip_route', cmd: 'ip', args: ['route'] },
  { file: 'lsblk', cmd: 'lsblk', args: ['--all', '-o', '+UUID,PARTUUID,SERIAL,WWN'] },
  { file: 'lshw', cmd: 'lshw', args: ['-quiet', '-json'] },
  { file: 'lspci', cmd: 'lspci', args: ['-nn'] },
  { file: 'mount', cmd: 'mount', args: [] },
  { file: 'parted', cmd: 'parted', args: ['-l', '-s'] },
  { file: 'ps', cmd: 'ps', args: ['-ax', '-o', 'pid,ppid,rss,etime,args'] },
  { file: 'multipath', cmd: 'multipath', args: ['-ll'] },
];

const FILES: Array<{ file: string; path: string }> = [
  { file: 'mdstat', path: '/proc/mdstat' },
  { file: 'cmdline', path: '/proc/cmdline' },
  { file: 'meminfo', path: '/proc/meminfo' },
];

async function runSource(host: Host, s: Source): Promise<string> {
  if (!(await host.hasCommand(s.cmd))) return `${s.cmd}: not installed\n`;
  const res = await host.run(s.cmd, s.args, { allowFailure: true, timeoutMs: 20_000 });
  const tail = res.exitCode === 0 ? '' : `\n[exit code ${res.exitCode}]\n${res.stderr}`;
  return res.stdout + tail;
}

/** The tar.gz as a Buffer, with one entry per source. */
export async function collectSystemLogs(host: Host, ring: LogRing, limitedToDevices: boolean): Promise<Buffer> {
  // With --devices the agent runs on a shared host: keep the host's own processes and mounts out.
  const sources = limitedToDevices ? SOURCES.filter((s) => !['ps', 'mount', 'df', 'parted'].includes(s.file)) : SOURCES;
  const [outputs, files] = await Promise.all([
    Promise.all(sources.map(async (s) => ({ file: s.file, text: await runSource(host, s).catch((e: Error) => `error: ${e.message}\n`) }))),
    Promise.all(FILES.map(async (f) => ({ file: f.file, text: (await host.readTextOrNull(f.path)) ?? `${f.path}: not readable\n` }))),
  ]);
  const entries = [{ file: 'ferrum-agent.log', text: ring.contents() }, ...outputs, ...files];

  const tarStream = await import('tar-stream');
  // In the esbuild bundle (code splitting) the CommonJS package arrives as its default export only.
  const { pack } = 'pack' in tarStream ? tarStream : (tarStream as unknown as { default: typeof tarStream }).default;
  const tar = pack();
  const gzip = createGzip();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    gzip.on('data', (c: Buffer) => chunks.push(c));
    gzip.on('end', () => resolve(Buffer.concat(chunks)));
    gzip.on('error', reject);
    tar.on('error', reject);
  });
  tar.pipe(gzip);
  const mtime = new Date();
  for (const e of entries) tar.entry({ name: e.file, mtime, mode: 0o644 }, e.text);
  tar.finalize();
  return done;
}
