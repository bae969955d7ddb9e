// Edits of the deployed image's files, made so that the image is never left broken: /etc/fstab is
// rewritten atomically (same mode and owner, rename over the old file) and only to add the ESP;
// /etc/mtab, which tools in the chroot expect, is created as the usual symlink only for the time
// of the work and removed afterwards; /etc/default/grub gets rd.md.uuid= parameters for dracut.
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from '../log.js';

/** Writes a file through a temporary sibling and a rename, keeping the old file's mode and owner. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const st = await fs.stat(path).catch(() => null);
  const tmp = join(dirname(path), `.${path.split('/').pop()}.ferrum-${process.pid}`);
  const fh = await fs.open(tmp, 'w', st ? st.mode & 0o7777 : 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (st) {
    await fs.chmod(tmp, st.mode & 0o7777);
    await fs.chown(tmp, st.uid, st.gid).catch(() => undefined);
  }
  await fs.rename(tmp, path);
}

interface FstabLine {
  raw: string;
  spec?: string;
  mountPoint?: string;
}

function parseFstab(text: string): FstabLine[] {
  return text.split('\n').map((raw) => {
    const t = raw.trim();
    if (!t || t.startsWith('#')) return { raw };
    const [spec, mountPoint] = t.split(/\s+/);
    return { raw, spec, mountPoint };
  });
}

/** The fstab source naming an ESP: UUID= of its file system when known, else the UUID Ironic gave. */
export function espFstabSpec(fsUuid: string | null, givenUuid: string | null, partUuid: string | null): string | null {
  if (fsUuid) return `UUID=${fsUuid}`;
  if (givenUuid && partUuid && givenUuid.toLowerCase() === partUuid.toLowerCase()) return `PARTUUID=${partUuid}`;
  return givenUuid ? `UUID=${givenUuid}` : null;
}

/**
 * Adds `<spec> /boot/efi vfat umask=0077 0 1` to an fstab text (IPA's line). Unchanged when the
 * ESP is already listed. An existing /boot/efi line naming another UUID/PARTUUID (the ESP of the
 * machine the image was built on) is commented out, as two /boot/efi mounts would break the boot;
 * one naming it by label or device path is kept and nothing is added.
 */
export function fstabWithEsp(text: string, spec: string): { text: string; changed: boolean; note: string } {
  const lines = parseFstab(text);
  const id = spec.slice(spec.indexOf('=') + 1).toLowerCase();
  if (lines.some((l) => l.spec && l.spec.toLowerCase().includes(id))) return { text, changed: false, note: 'the ESP is already listed' };
  const current = lines.filter((l) => l.mountPoint === '/boot/efi');
  if (current.some((l) => !/^(UUID|PARTUUID)=/i.test(l.spec ?? ''))) {
    return { text, changed: false, note: 'the image mounts /boot/efi by label or device path: kept' };
  }
  const out = lines.map((l) => (l.mountPoint === '/boot/efi' ? `# ${l.raw.trim()}  # replaced by the agent: not this machine's ESP` : l.raw));
  let body = out.join('\n');
  if (body !== '' && !body.endsWith('\n')) body += '\n';
  body += `${spec}\t/boot/efi\tvfat\tumask=0077\t0\t1\n`;
  return { text: body, changed: true, note: current.length ? 'replaced the old /boot/efi line' : 'added' };
}

/** IPA's _append_uefi_to_fstab, made safe: nothing happens when the image has no /etc/fstab. */
export async function addEspToFstab(root: string, spec: string, log: Logger): Promise<void> {
  const path = join(root, 'etc/fstab');
  let text: string;
  try {
    const st = await fs.lstat(path);
    if (!st.isFile()) {
      log.warn(`the image's /etc/fstab is not a regular file: not adding the ESP`);
      return;
    }
    text = await fs.readFile(path, 'utf8');
  } catch {
    log.debug('the image has no /etc/fstab: not adding the ESP');
    return;
  }
  const res = fstabWithEsp(text, spec);
  if (res.changed) await writeFileAtomic(path, res.text);
  log.info({ spec, result: res.note }, `ESP in the image's /etc/fstab: ${res.note}`);
}

/** Creates /etc/mtab → ../proc/self/mounts when the image has none; returns the undo. */
export async function ensureMtab(root: string, log: Logger): Promise<() => Promise<void>> {
  const path = join(root, 'etc/mtab');
  const etc = await fs.stat(join(root, 'etc')).catch(() => null);
  if (!etc?.isDirectory()) return async () => {};
  const existing = await fs.lstat(path).catch(() => null);
  if (existing) return async () => {};
  await fs.symlink('../proc/self/mounts', path);
  log.debug('created a temporary /etc/mtab symlink in the image');
  return async () => {
    const st = await fs.lstat(path).catch(() => null);
    if (st?.isSymbolicLink() && (await fs.readlink(path)) === '../proc/self/mounts') await fs.unlink(path);
  };
}

/** Appends rd.md.uuid=… parameters to GRUB_CMDLINE_LINUX (those not there yet). */
export function grubDefaultsWithMdUuids(text: string, uuids: readonly string[]): string {
  return text.replace(/GRUB_CMDLINE_LINUX="(.*)"/, (_m, current: string) => {
    const missing = uuids.map((u) => `rd.md.uuid=${u}`).filter((p) => !current.split(/\s+/).includes(p));
    return `GRUB_CMDLINE_LINUX="${[current, ...missing].filter(Boolean).join(' ')}"`;
  });
}
