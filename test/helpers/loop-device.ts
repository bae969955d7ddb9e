// Loop devices backed by sparse files that the test creates and always detaches: tests never
// touch a device they did not make.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = promisify(execFile);

export interface LoopDevice {
  path: string;
  file: string;
  sizeBytes: number;
  destroy(): Promise<void>;
  /** Detaches at once, for an exit handler where nothing can be awaited (the file stays). */
  detachNow(): void;
}

/** True when `path` is still the loop device of `file` (and not one that took its number since). */
export function backsOnto(path: string, file: string): boolean {
  try {
    return execFileSync('losetup', ['-n', '-O', 'BACK-FILE', path], { encoding: 'utf8' }).trim() === file;
  } catch {
    return false;
  }
}

export async function createLoopDevice(sizeMiB: number): Promise<LoopDevice> {
  const dir = await mkdtemp(join(tmpdir(), 'ferrum-loop-'));
  const file = join(dir, 'disk.img');
  await run('truncate', ['-s', `${sizeMiB}M`, file]);
  const { stdout } = await run('losetup', ['--find', '--show', file]);
  const path = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(path)) throw new Error(`losetup gave ${path}`);
  let destroyed = false;
  return {
    path,
    file,
    sizeBytes: sizeMiB * 1024 * 1024,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      // Detach only if the device still points at our file.
      if (backsOnto(path, file)) await run('losetup', ['-d', path]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
    detachNow() {
      if (!destroyed && backsOnto(path, file)) execFileSync('losetup', ['-d', path], { stdio: 'ignore' });
    },
  };
}

export async function sh(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}
