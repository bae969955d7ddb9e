// An in-memory Host: files and directories from a map, commands answered by a callback.
// Anything destructive throws, so a unit test can never touch the machine.
import type { Host, RunOptions, RunResult } from '../../../src/agent/host/host.js';

export interface FakeHostOptions {
  /** Absolute path → file content. Directories are implied by the paths. */
  files?: Record<string, string>;
  /** Paths that exist without content (e.g. /sys/class/net/eth0/device). */
  dirs?: string[];
  /** Symlink path → target. */
  links?: Record<string, string>;
  deviceAllowList?: string[] | null;
  run?: (cmd: string, args: readonly string[], opts?: RunOptions) => RunResult | Promise<RunResult>;
}

export class FakeHost implements Host {
  readonly sysRoot = '/';
  readonly deviceAllowList: readonly string[] | null;
  readonly commands: Array<{ cmd: string; args: readonly string[] }> = [];

  constructor(private readonly o: FakeHostOptions = {}) {
    this.deviceAllowList = o.deviceAllowList ?? null;
  }

  private get files(): Record<string, string> {
    return this.o.files ?? {};
  }

  async readText(path: string): Promise<string> {
    const v = this.files[path];
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return v;
  }

  async readTextOrNull(path: string): Promise<string | null> {
    return this.files[path] ?? null;
  }

  async readBytesOrNull(path: string): Promise<Buffer | null> {
    const v = this.files[path];
    return v === undefined ? null : Buffer.from(v, 'utf8');
  }

  async readlinkOrNull(path: string): Promise<string | null> {
    return this.o.links?.[path] ?? null;
  }

  async readdir(path: string): Promise<string[]> {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    const names = new Set<string>();
    for (const p of [...Object.keys(this.files), ...(this.o.dirs ?? []), ...Object.keys(this.o.links ?? {})]) {
      if (p.startsWith(prefix)) names.add(p.slice(prefix.length).split('/')[0]!);
    }
    return [...names].sort();
  }

  async exists(path: string): Promise<boolean> {
    if (path in this.files || (this.o.dirs ?? []).includes(path) || path in (this.o.links ?? {})) return true;
    return (await this.readdir(path)).length > 0;
  }

  async realpath(path: string): Promise<string> {
    return path;
  }

  async run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    this.commands.push({ cmd, args });
    if (!this.o.run) throw new Error(`FakeHost: unexpected command ${cmd} ${args.join(' ')}`);
    return this.o.run(cmd, args, opts);
  }

  async hasCommand(_cmd: string): Promise<boolean> {
    return false;
  }

  async openForWrite(device: string): Promise<never> {
    throw new Error(`FakeHost: refusing to open ${device} for writing`);
  }

  async assertMayDestroy(device: string): Promise<void> {
    throw new Error(`FakeHost: refusing to destroy ${device}`);
  }

  async isDeployRamdisk(): Promise<boolean> {
    return false;
  }

  async removeSystemFile(path: string): Promise<void> {
    throw new Error(`FakeHost: refusing to remove ${path}`);
  }

  async configfs(change: { path: string }): Promise<void> {
    throw new Error(`FakeHost: refusing to change configfs (${change.path})`);
  }

  async power(): Promise<void> {
    throw new Error('FakeHost: no power actions');
  }
}

export const ok = (stdout: string): RunResult => ({ exitCode: 0, stdout, stderr: '' });
export const fail = (stderr: string, exitCode = 1): RunResult => ({ exitCode, stdout: '', stderr });
