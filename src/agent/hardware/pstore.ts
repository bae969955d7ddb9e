// erase_pstore: delete the kernel crash records kept in persistent storage (EFI vars, ERST, …).
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';

export async function pstoreMountPoint(host: Host): Promise<string | null> {
  const mounts = (await host.readTextOrNull('/proc/mounts')) ?? '';
  for (const line of mounts.split('\n')) {
    const [, mountpoint, fstype] = line.split(' ');
    if (fstype === 'pstore' && mountpoint) return mountpoint;
  }
  return null;
}

export async function erasePstore(host: Host, log: Logger): Promise<{ removed: string[] }> {
  const mount = await pstoreMountPoint(host);
  if (!mount) {
    log.warn('no pstore filesystem is mounted: nothing to erase');
    return { removed: [] };
  }
  const removed: string[] = [];
  for (const entry of await host.readdir(mount)) {
    const path = `${mount}/${entry}`;
    await host.removeSystemFile(path);
    removed.push(path);
  }
  log.info({ count: removed.length, mount }, 'pstore erased');
  return { removed };
}
