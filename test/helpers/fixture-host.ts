// A Host that replays a machine captured by scripts/capture-machine.sh: /sys, /proc, /dev and
// /run reads come from CAPTURE/fs (symlinks in it are real relative symlinks, so readlink and
// realpath behave as on the machine), and run() answers from CAPTURE/commands/*.json, matching
// the command and its arguments exactly. What was not captured does not exist: a file reads as
// missing, an unrecorded command fails as a tool that is not installed. Nothing destructive is
// ever allowed.
import { readdirSync, readFileSync, promises as fs } from 'node:fs';
import { join, posix, relative, resolve, sep } from 'node:path';
import { errors } from '../../src/agent/errors.js';
import { HostCommandError, type Host, type PowerAction, type RunOptions, type RunResult } from '../../src/agent/host/host.js';

/** One command as capture-machine.sh records it. */
export interface RecordedCommand {
  cmd: string;
  args: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Marks an empty directory in a capture so that git keeps it; never shown to the agent. */
export const DIR_MARKER = '.keep';
const RAMDISK_FS = new Set(['rootfs', 'ramfs', 'tmpfs']);
const NOT_INSTALLED = 127;

export interface FixtureHostOptions {
  deviceAllowList?: readonly string[] | null;
}

export function loadRecordedCommands(captureDir: string): RecordedCommand[] {
  const dir = join(captureDir, 'commands');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as RecordedCommand);
}

const key = (cmd: string, args: readonly string[]) => JSON.stringify([cmd, ...args]);

export class FixtureHost implements Host {
  readonly sysRoot: string;
  readonly deviceAllowList: readonly string[] | null;
  readonly commands: RecordedCommand[];
  /** Every run() call, recorded or not, in order. */
  readonly calls: Array<{ cmd: string; args: readonly string[]; recorded: boolean }> = [];
  private readonly byKey = new Map<string, RecordedCommand>();

  constructor(
    readonly captureDir: string,
    opts: FixtureHostOptions = {},
  ) {
    this.sysRoot = resolve(captureDir, 'fs');
    this.deviceAllowList = opts.deviceAllowList ?? null;
    this.commands = loadRecordedCommands(captureDir);
    for (const c of this.commands) this.byKey.set(key(c.cmd, c.args), c);
  }

  /** The recorded command, or undefined. */
  recorded(cmd: string, args: readonly string[]): RecordedCommand | undefined {
    return this.byKey.get(key(cmd, args));
  }

  private map(path: string): string {
    if (!path.startsWith('/')) throw new Error(`host path must be absolute: ${path}`);
    return join(this.sysRoot, posix.normalize(path));
  }

  /** Refuses paths that resolve (through a symlink) outside the capture. */
  private async inside(path: string): Promise<string> {
    const mapped = this.map(path);
    const real = await fs.realpath(mapped);
    const rel = relative(this.sysRoot, real);
    if (rel.startsWith('..') || rel.startsWith(sep)) {
      throw Object.assign(new Error(`ENOENT: ${path} resolves outside the capture`), { code: 'ENOENT' });
    }
    return real;
  }

  async readText(path: string): Promise<string> {
    return fs.readFile(await this.inside(path), 'utf8');
  }

  async readTextOrNull(path: string): Promise<string | null> {
    try {
      return await this.readText(path);
    } catch {
      return null;
    }
  }

  async readBytesOrNull(path: string): Promise<Buffer | null> {
    try {
      return await fs.readFile(await this.inside(path));
    } catch {
      return null;
    }
  }

  async readlinkOrNull(path: string): Promise<string | null> {
    try {
      return await fs.readlink(this.map(path));
    } catch {
      return null;
    }
  }

  async readdir(path: string): Promise<string[]> {
    try {
      return (await fs.readdir(await this.inside(path))).filter((n) => n !== DIR_MARKER).sort();
    } catch {
      return [];
    }
  }

  async exists(path: string): Promise<boolean> {
    if (posix.basename(path) === DIR_MARKER) return false;
    try {
      await this.inside(path);
      return true;
    } catch {
      return false;
    }
  }

  async realpath(path: string): Promise<string> {
    const real = await this.inside(path);
    return '/' + relative(this.sysRoot, real).split(sep).join('/');
  }

  async run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const rec = this.recorded(cmd, args);
    this.calls.push({ cmd, args: [...args], recorded: rec !== undefined });
    const line = [cmd, ...args].join(' ');
    if (!rec || rec.exitCode === NOT_INSTALLED) {
      // As LocalHost reports a tool that is not on PATH.
      if (!opts.allowFailure) throw new HostCommandError(line, NOT_INSTALLED, '', '', 'is not installed');
      return { exitCode: NOT_INSTALLED, stdout: '', stderr: rec?.stderr ?? `${cmd}: not recorded in ${this.captureDir}\n` };
    }
    if (rec.exitCode !== 0 && !opts.allowFailure) {
      throw new HostCommandError(line, rec.exitCode, rec.stdout, rec.stderr, `exited with code ${rec.exitCode}`);
    }
    return { exitCode: rec.exitCode, stdout: rec.stdout, stderr: rec.stderr };
  }

  async hasCommand(cmd: string): Promise<boolean> {
    return this.commands.some((c) => c.cmd === cmd && c.exitCode !== NOT_INSTALLED);
  }

  async isDeployRamdisk(): Promise<boolean> {
    const mounts = (await this.readTextOrNull('/proc/mounts')) ?? '';
    let rootFs: string | null = null;
    for (const l of mounts.split('\n')) {
      const [, mountpoint, fstype] = l.split(' ');
      if (mountpoint === '/' && fstype) rootFs = fstype;
    }
    return rootFs !== null && RAMDISK_FS.has(rootFs);
  }

  async assertMayDestroy(device: string): Promise<void> {
    throw errors.unsafeHost(`refusing to modify ${device}: this is a replayed capture (${this.captureDir})`);
  }

  async openForWrite(device: string): Promise<fs.FileHandle> {
    await this.assertMayDestroy(device);
    throw new Error('unreachable');
  }

  async removeSystemFile(path: string): Promise<void> {
    throw errors.unsafeHost(`refusing to delete ${path}: this is a replayed capture (${this.captureDir})`);
  }

  async configfs(change: { path: string }): Promise<void> {
    throw errors.unsafeHost(`refusing to change ${change.path}: this is a replayed capture (${this.captureDir})`);
  }

  async power(action: PowerAction): Promise<void> {
    throw errors.unsafeHost(`refusing to ${action === 'off' ? 'power off' : 'reboot'}: this is a replayed capture`);
  }
}
