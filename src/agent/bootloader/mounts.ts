// Mounts for the bootloader work, all under one private temporary directory: the image's root
// file system, its ESP, and the bind mounts a chroot needs. Whatever happens, close() unmounts
// everything below the directory (also what tools inside the chroot mounted), deepest first,
// retrying, then lazily as a last resort, and removes the directory only when nothing is mounted
// below it any more — never a recursive delete over a mounted image.
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';

export interface MountInfoEntry {
  id: number;
  parent: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Octal escapes of /proc/self/mountinfo (\040 for a space, …). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const [left, right] = line.split(' - ');
    const f = (left ?? '').split(' ');
    const r = (right ?? '').split(' ');
    if (f.length < 5) continue;
    out.push({ id: Number(f[0]), parent: Number(f[1]), mountPoint: unescapeMount(f[4]!), fsType: r[0] ?? '', source: unescapeMount(r[1] ?? '') });
  }
  return out;
}

/** Mount points at or below `dir`, in the order to unmount them (newest first). */
export function mountsBelow(entries: MountInfoEntry[], dir: string): string[] {
  const inside = entries.filter((e) => e.mountPoint === dir || e.mountPoint.startsWith(`${dir}/`));
  // mountinfo lists mounts in creation order: unmount the newest first, so children go before parents.
  return [...new Set(inside.map((e) => e.mountPoint).reverse())];
}

export interface MountSessionOptions {
  /** Attempts per unmount before the lazy fallback (IPA: 3). */
  attempts?: number;
  retryDelayMs?: number;
  /** Parent of the private temporary directory (os.tmpdir()). */
  parentDir?: string;
}

export class MountSession {
  /** Set when close() could not unmount something cleanly (a lazy unmount was needed). */
  readonly problems: string[] = [];
  private closed = false;

  private constructor(
    private readonly host: Host,
    private readonly log: Logger,
    /** The private temporary directory (mode 0700). */
    readonly dir: string,
    /** Where the root file system is mounted: <dir>/root. */
    readonly root: string,
    private readonly opts: Required<Omit<MountSessionOptions, 'parentDir'>>,
  ) {}

  static async create(host: Host, log: Logger, opts: MountSessionOptions = {}): Promise<MountSession> {
    // mountinfo shows canonical paths: resolve a symlinked temporary directory first.
    const dir = await fs.realpath(await fs.mkdtemp(join(opts.parentDir ?? tmpdir(), 'ferrum-bootloader-')));
    const root = join(dir, 'root');
    await fs.mkdir(root, { mode: 0o700 });
    return new MountSession(host, log, dir, root, { attempts: opts.attempts ?? 3, retryDelayMs: opts.retryDelayMs ?? 1000 });
  }

  /** Path inside the mounted image. */
  inRoot(path: string): string {
    return join(this.root, path);
  }

  /** Mounts `source` at `target` (inside the session dir) and keeps the mount out of other namespaces. */
  async mount(source: string, target: string, args: string[] = []): Promise<void> {
    this.assertInside(target);
    await fs.mkdir(target, { recursive: true });
    await this.host.run('mount', [...args, source, target], { timeoutMs: 120_000 });
    await this.makePrivate(target);
  }

  async bind(source: string, target: string): Promise<void> {
    await this.mount(source, target, ['--bind']);
  }

  /** The root file system, then /dev, /proc, /sys and /run for a chroot (+ efivarfs when the host has it). */
  async mountRootForChroot(partition: string): Promise<void> {
    await this.mount(partition, this.root);
    for (const fsPath of ['/dev', '/proc', '/run']) await this.bind(fsPath, this.inRoot(fsPath));
    await this.mount('none', this.inRoot('/sys'), ['-t', 'sysfs']);
    if (await this.host.exists('/sys/firmware/efi/efivars')) {
      const target = this.inRoot('/sys/firmware/efi/efivars');
      const res = await this.host.run('mount', ['-t', 'efivarfs', 'efivarfs', target], { allowFailure: true, timeoutMs: 60_000 });
      if (res.exitCode !== 0) this.log.warn({ stderr: res.stderr.trim() }, 'could not mount efivarfs in the chroot');
    }
  }

  private async makePrivate(target: string): Promise<void> {
    const res = await this.host.run('mount', ['--make-private', target], { allowFailure: true, timeoutMs: 30_000 });
    if (res.exitCode !== 0) this.log.debug({ target, stderr: res.stderr.trim() }, 'could not make the mount private');
  }

  private assertInside(path: string): void {
    if (path !== this.dir && !path.startsWith(`${this.dir}/`)) throw new Error(`refusing to mount outside ${this.dir}: ${path}`);
  }

  /** Everything currently mounted at or below the session directory, newest first. */
  async mounted(): Promise<string[]> {
    const text = (await this.host.readTextOrNull('/proc/self/mountinfo')) ?? '';
    return mountsBelow(parseMountInfo(text), this.dir);
  }

  async isMounted(path: string): Promise<boolean> {
    return (await this.mounted()).includes(path);
  }

  /** Unmounts one mount point (and whatever was mounted below it), retrying. */
  async unmount(target: string): Promise<void> {
    for (const mp of (await this.mounted()).filter((m) => m === target || m.startsWith(`${target}/`))) {
      await this.unmountOne(mp, false);
    }
  }

  private async unmountOne(mp: string, lazyFallback: boolean): Promise<boolean> {
    let last = '';
    for (let attempt = 1; attempt <= this.opts.attempts; attempt++) {
      const res = await this.host.run('umount', [mp], { allowFailure: true, timeoutMs: 120_000 });
      if (res.exitCode === 0) return true;
      last = res.stderr.trim();
      if (/not mounted/.test(last)) return true;
      if (attempt < this.opts.attempts) await sleep(this.opts.retryDelayMs);
    }
    if (!lazyFallback) throw new Error(`umount ${mp} failed: ${last}`);
    this.log.error({ mountpoint: mp, stderr: last }, `could not unmount ${mp}; detaching it lazily`);
    const lazy = await this.host.run('umount', ['-l', mp], { allowFailure: true, timeoutMs: 120_000 });
    this.problems.push(`${mp}: ${last}${lazy.exitCode === 0 ? ' (detached lazily)' : ` (lazy unmount failed too: ${lazy.stderr.trim()})`}`);
    return lazy.exitCode === 0;
  }

  /**
   * Unmounts everything below the session directory and removes it. Never throws: problems are
   * logged and kept in `problems`.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.host.run('sync', [], { allowFailure: true, timeoutMs: 600_000 }).catch(() => undefined);
    try {
      for (let round = 0; round < 3; round++) {
        const mps = await this.mounted();
        if (mps.length === 0) break;
        for (const mp of mps) {
          try {
            await this.unmountOne(mp, true);
          } catch (err) {
            this.log.error({ err, mountpoint: mp }, 'unmount failed');
          }
        }
      }
      const left = await this.mounted();
      if (left.length > 0) {
        this.problems.push(`still mounted: ${left.join(', ')}`);
        this.log.error({ mounts: left, dir: this.dir }, `mounts remain below ${this.dir}; leaving the directory in place`);
        return;
      }
      // Only empty directories are removed: nothing of the image can be deleted by accident.
      await fs.rmdir(this.root).catch((err: unknown) => this.log.warn({ err, dir: this.root }, 'could not remove the mount point'));
      await fs.rmdir(this.dir).catch((err: unknown) => this.log.warn({ err, dir: this.dir }, 'could not remove the temporary directory'));
    } catch (err) {
      this.problems.push(String(err));
      this.log.error({ err, dir: this.dir }, 'clean-up of the bootloader mounts failed');
    }
  }
}
