// The host seam: every read of /sys, /proc and /dev, every subprocess, every power action and every
// open of a block device for writing goes through a Host. Tests point it at fixtures or loop devices;
// production points it at `/`. The destructive-work guard lives here, in one place.
import { promises as fs, constants as fsc } from 'node:fs';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { PowerMode } from '../config.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';

export interface RunOptions {
  /** Kill the process after this many milliseconds. */
  timeoutMs?: number;
  /** The process's stdin: all at once, or a stream the caller keeps writing to (ended to finish). */
  input?: string | Buffer | Readable;
  /** Called with each line of stdout as the process writes it (for a process that answers as it goes). */
  onStdoutLine?: (line: string) => void;
  /** Return the result on a non-zero exit instead of throwing. */
  allowFailure?: boolean;
  env?: Record<string, string>;
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export class HostCommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
    reason: string,
  ) {
    super(`${command} ${reason}${stderr.trim() ? `: ${stderr.trim().slice(0, 2000)}` : ''}`);
    this.name = 'HostCommandError';
  }
}

export type PowerAction = 'off' | 'reboot';

/** One change to the kernel's configfs tree (/sys/kernel/config): how LIO targets are made. */
export type ConfigfsChange =
  | { op: 'mkdir' | 'rmdir' | 'unlink'; path: string }
  | { op: 'write'; path: string; value: string }
  | { op: 'symlink'; path: string; target: string };

export const CONFIGFS_ROOT = '/sys/kernel/config';

export interface Host {
  /** Where /sys, /proc and /dev are read from ("/" in production). */
  readonly sysRoot: string;
  /** The block devices the agent is limited to, or null for all. */
  readonly deviceAllowList: readonly string[] | null;
  readText(path: string): Promise<string>;
  readTextOrNull(path: string): Promise<string | null>;
  readBytesOrNull(path: string): Promise<Buffer | null>;
  /** Target of a symlink (not resolved further), or null. */
  readlinkOrNull(path: string): Promise<string | null>;
  readdir(path: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  realpath(path: string): Promise<string>;
  run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** True when `cmd` is on PATH. */
  hasCommand(cmd: string): Promise<boolean>;
  /** Opens a block device (or a partition of one) for writing, after the destructive-work guard. */
  openForWrite(device: string, opts?: { direct?: boolean }): Promise<fs.FileHandle>;
  /** Throws UnsafeHostError unless destructive work on `device` is allowed. */
  assertMayDestroy(device: string): Promise<void>;
  /** True when the root filesystem is a ramfs/tmpfs, i.e. we run from a deploy ramdisk. */
  isDeployRamdisk(): Promise<boolean>;
  /** Deletes a file of the running system (e.g. pstore records): only in a deploy ramdisk. */
  removeSystemFile(path: string): Promise<void>;
  /** Applies one configfs change (paths under /sys/kernel/config only). */
  configfs(change: ConfigfsChange): Promise<void>;
  power(action: PowerAction): Promise<void>;
}

export interface LocalHostOptions {
  sysRoot: string;
  devices: readonly string[] | null;
  power: PowerMode;
  log: Logger;
  /** Called instead of powering off or rebooting when power is 'none'. */
  onSimulatedPower?: (action: PowerAction) => void;
}

const RAMDISK_FS = new Set(['rootfs', 'ramfs', 'tmpfs']);

// execa is loaded on the first subprocess, after the API already answers.
let execaModule: Promise<typeof import('execa')> | null = null;

export class LocalHost implements Host {
  readonly sysRoot: string;
  readonly deviceAllowList: readonly string[] | null;
  private readonly commandCache = new Map<string, boolean>();

  constructor(private readonly opts: LocalHostOptions) {
    this.sysRoot = opts.sysRoot;
    this.deviceAllowList = opts.devices;
  }

  /** Maps an absolute /sys, /proc or /dev path under sysRoot. */
  private map(path: string): string {
    if (!path.startsWith('/')) throw new Error(`host path must be absolute: ${path}`);
    const clean = posix.normalize(path);
    return this.sysRoot === '/' ? clean : join(this.sysRoot, clean);
  }

  readText(path: string): Promise<string> {
    return fs.readFile(this.map(path), 'utf8');
  }

  async readTextOrNull(path: string): Promise<string | null> {
    try {
      return await fs.readFile(this.map(path), 'utf8');
    } catch {
      return null;
    }
  }

  async readBytesOrNull(path: string): Promise<Buffer | null> {
    try {
      return await fs.readFile(this.map(path));
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
      return (await fs.readdir(this.map(path))).sort();
    } catch {
      return [];
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await fs.access(this.map(path));
      return true;
    } catch {
      return false;
    }
  }

  async realpath(path: string): Promise<string> {
    const real = await fs.realpath(this.map(path));
    return this.sysRoot === '/' ? real : '/' + posix.relative(this.sysRoot, real);
  }

  async run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const started = Date.now();
    const { execa } = await (execaModule ??= import('execa'));
    const onLine = opts.onStdoutLine;
    const res = await execa(cmd, args, {
      reject: false,
      timeout: opts.timeoutMs,
      input: opts.input,
      env: { LC_ALL: 'C', ...opts.env },
      stripFinalNewline: false,
      // A transform sees stdout line by line as it comes; the whole of it is still kept for the result.
      ...(onLine ? { stdout: function* (line: unknown) {
            onLine(String(line));
            yield line;
          } } : {}),
    });
    const stdout = String(res.stdout ?? '');
    const stderr = String(res.stderr ?? '');
    const exitCode = res.exitCode ?? -1;
    this.opts.log.debug({ cmd, args, exitCode, ms: Date.now() - started }, 'ran command');
    if (res.failed && !opts.allowFailure) {
      const reason = res.timedOut
        ? `timed out after ${opts.timeoutMs} ms`
        : res.code === 'ENOENT'
          ? 'is not installed'
          : `exited with code ${exitCode}`;
      throw new HostCommandError([cmd, ...args].join(' '), res.exitCode ?? null, stdout, stderr, reason);
    }
    return { exitCode, stdout, stderr };
  }

  /** Loads the subprocess library ahead of the first command (start-up stays fast; first use too). */
  preload(): void {
    void (execaModule ??= import('execa')).catch(() => undefined);
  }

  async hasCommand(cmd: string): Promise<boolean> {
    const cached = this.commandCache.get(cmd);
    if (cached !== undefined) return cached;
    const dirs = (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
    let found = false;
    for (const dir of dirs) {
      try {
        await fs.access(join(dir, cmd), fsc.X_OK);
        found = true;
        break;
      } catch {
        // next
      }
    }
    this.commandCache.set(cmd, found);
    return found;
  }

  async isDeployRamdisk(): Promise<boolean> {
    const mounts = (await this.readTextOrNull('/proc/mounts')) ?? '';
    let rootFs: string | null = null;
    for (const line of mounts.split('\n')) {
      const [, mountpoint, fstype] = line.split(' ');
      if (mountpoint === '/' && fstype) rootFs = fstype; // the last mount on / is the visible one
    }
    return rootFs !== null && RAMDISK_FS.has(rootFs);
  }

  async assertMayDestroy(device: string): Promise<void> {
    if (this.deviceAllowList) {
      if (await this.isAllowedDevice(device)) return;
      throw errors.unsafeHost(`${device} is not one of the devices the agent may touch (${this.deviceAllowList.join(', ')})`);
    }
    if (await this.isDeployRamdisk()) return;
    throw errors.unsafeHost(
      `refusing to modify ${device}: this host is not a deploy ramdisk (its root filesystem is not a ramfs/tmpfs). ` +
        'Limit the agent to devices it may destroy with --devices (kernel parameter ferrum-devices=).',
    );
  }

  /** A listed device, or a partition of one (resolved through /sys/class/block). */
  private async isAllowedDevice(device: string): Promise<boolean> {
    const list = this.deviceAllowList ?? [];
    let real: string;
    try {
      real = await this.realpath(device);
    } catch {
      return false;
    }
    const allowed = await Promise.all(list.map((d) => this.realpath(d).catch(() => d)));
    if (allowed.includes(real)) return true;
    const name = posix.basename(real);
    if (!(await this.exists(`/sys/class/block/${name}/partition`))) return false;
    const sysPath = await this.realpath(`/sys/class/block/${name}`).catch(() => null);
    if (!sysPath) return false;
    const parent = posix.basename(posix.dirname(sysPath));
    return allowed.some((a) => posix.basename(a) === parent);
  }

  async removeSystemFile(path: string): Promise<void> {
    if (!(await this.isDeployRamdisk())) {
      throw errors.unsafeHost(`refusing to delete ${path}: this host is not a deploy ramdisk`);
    }
    await fs.rm(this.map(path), { force: true });
  }

  async configfs(change: ConfigfsChange): Promise<void> {
    const inside = (p: string) => {
      const clean = posix.normalize(p);
      if (!clean.startsWith(`${CONFIGFS_ROOT}/`)) throw new Error(`configfs path outside ${CONFIGFS_ROOT}: ${p}`);
      return this.map(clean);
    };
    const path = inside(change.path);
    switch (change.op) {
      case 'mkdir':
        return fs.mkdir(path);
      case 'rmdir':
        return fs.rmdir(path);
      case 'unlink':
        return fs.unlink(path);
      // One write(2) per attribute: configfs parses each write on its own.
      case 'write':
        return fs.writeFile(path, change.value);
      case 'symlink':
        return fs.symlink(inside(change.target), path);
    }
  }

  async openForWrite(device: string, opts: { direct?: boolean } = {}): Promise<fs.FileHandle> {
    await this.assertMayDestroy(device);
    return fs.open(this.map(device), fsc.O_RDWR | (opts.direct ? fsc.O_DIRECT : 0));
  }

  async power(action: PowerAction): Promise<void> {
    if (this.opts.power === 'none') {
      this.opts.log.warn({ action }, `power mode is none: simulating ${action === 'off' ? 'power off' : 'reboot'}`);
      this.opts.onSimulatedPower?.(action);
      return;
    }
    await this.run('sync', [], { allowFailure: true, timeoutMs: 120_000 });
    const verb = action === 'off' ? 'poweroff' : 'reboot';
    const res = await this.run(verb, [], { allowFailure: true, timeoutMs: 60_000 });
    if (res.exitCode !== 0) {
      this.opts.log.error({ stderr: res.stderr }, `${verb} failed, using sysrq`);
      await fs.writeFile('/proc/sysrq-trigger', action === 'off' ? 'o' : 'b');
    }
  }
}
