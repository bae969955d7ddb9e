// IPA's "already bootable" rule for BIOS: when the ramdisk booted in BIOS mode, a partition is
// flagged `boot` and the disk's first sector is an MBR with boot code, install_bootloader leaves
// the disk alone (unless it was given an ESP or PReP partition). IPA asks `file` whether the
// sector is a "boot sector" and its first bytes a "DOS executable"; the same test here reads the
// sector itself (see hasBootCode).
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { partedTable } from './partitions.js';

/**
 * Whether a first sector carries a boot loader: the 0x55AA signature and boot code that starts
 * with a jump (GRUB's boot.img, syslinux's gptmbr…) or with xor ax,ax (Windows, syslinux's
 * mbr). parted's generic MBR code (cli; mov ax,0x1000…), written by `mklabel msdos` for
 * partition images, does not count: it only chains to a partition boot sector.
 */
export function hasBootCode(sector: Buffer): boolean {
  if (sector.length < 512) return false;
  if (sector[510] !== 0x55 || sector[511] !== 0xaa) return false;
  if (sector.subarray(0, 440).every((b) => b === 0)) return false;
  const [b0, b1] = [sector[0]!, sector[1]!];
  return b0 === 0xeb || b0 === 0xe9 || ((b0 === 0x33 || b0 === 0x31) && b1 === 0xc0);
}

/** Parses `od -An -v -tx1` output into bytes. */
export function parseOdHex(text: string): Buffer {
  const bytes = text
    .split(/\s+/)
    .filter((t) => /^[0-9a-f]{2}$/i.test(t))
    .map((t) => parseInt(t, 16));
  return Buffer.from(bytes);
}

/** The first `n` bytes of a device (read with od: the Host reads whole files only). */
export async function readHead(host: Host, device: string, n = 512): Promise<Buffer | null> {
  const res = await host.run('od', ['-An', '-v', '-tx1', `-N${n}`, device], { allowFailure: true, timeoutMs: 30_000 });
  return res.exitCode === 0 ? parseOdHex(res.stdout) : null;
}

/** IPA's _is_bootloader_loaded: only meaningful when the ramdisk itself booted in BIOS mode. */
export async function isBootloaderLoaded(host: Host, device: string, currentBootMode: 'bios' | 'uefi', log: Logger): Promise<boolean> {
  if (currentBootMode !== 'bios') {
    log.debug('skipping the boot sector check: the ramdisk booted in UEFI mode');
    return false;
  }
  const table = await partedTable(host, device);
  if (!table) return false;
  if (!table.partitions.some((p) => p.flags.some((f) => f.includes('boot')))) return false;
  const head = await readHead(host, device);
  return head !== null && hasBootCode(head);
}
