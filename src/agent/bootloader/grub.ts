// GRUB of the deployed image, always run inside its chroot (its own grub-install and modules,
// never the ramdisk's): which flavour it has (grub2-* on Red Hat-likes, grub-* on Debian-likes),
// grub-install for BIOS onto a disk or for UEFI into the mounted ESP, grub-mkconfig into
// /boot/grub(2)/grub.cfg.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Host, RunResult } from '../host/host.js';
import type { Logger } from '../log.js';

export interface ImageGrub {
  /** "grub" or "grub2": also names /boot/<flavour>/grub.cfg. */
  flavour: 'grub' | 'grub2';
  /** Absolute paths inside the image, or null when the image lacks the tool. */
  install: string | null;
  mkconfig: string | null;
}

const BIN_DIRS = ['usr/sbin', 'sbin', 'usr/bin', 'bin'];

async function present(root: string, rel: string): Promise<boolean> {
  return (await fs.lstat(join(root, rel)).catch(() => null)) !== null;
}

async function findTool(root: string, name: string): Promise<string | null> {
  for (const dir of BIN_DIRS) if (await present(root, `${dir}/${name}`)) return `/${dir}/${name}`;
  return null;
}

/** What GRUB the image mounted at `root` carries (IPA: grub2 when usr/sbin/grub2-install exists). */
export async function findImageGrub(root: string): Promise<ImageGrub> {
  const install2 = await findTool(root, 'grub2-install');
  if (install2) return { flavour: 'grub2', install: install2, mkconfig: await findTool(root, 'grub2-mkconfig') };
  const install = await findTool(root, 'grub-install');
  if (install) return { flavour: 'grub', install, mkconfig: await findTool(root, 'grub-mkconfig') };
  const mk2 = await findTool(root, 'grub2-mkconfig');
  if (mk2) return { flavour: 'grub2', install: null, mkconfig: mk2 };
  return { flavour: 'grub', install: null, mkconfig: await findTool(root, 'grub-mkconfig') };
}

/** PATH inside the chroot (IPA adds /bin, /usr/sbin and /sbin so grub finds efibootmgr and friends). */
export const CHROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export async function runInChroot(host: Host, root: string, cmd: string, args: readonly string[], opts: { env?: Record<string, string>; allowFailure?: boolean } = {}): Promise<RunResult> {
  return host.run('chroot', [root, cmd, ...args], {
    timeoutMs: 900_000,
    env: { PATH: CHROOT_PATH, ...opts.env },
    allowFailure: opts.allowFailure,
  });
}

/** grub-install --target for BIOS on this architecture (x86 only; PReP and others use the default). */
export function biosTarget(arch: string = process.arch): string | null {
  return arch === 'x64' || arch === 'ia32' ? 'i386-pc' : null;
}

export function efiTarget(arch: string = process.arch): string | null {
  switch (arch) {
    case 'x64':
      return 'x86_64-efi';
    case 'arm64':
      return 'arm64-efi';
    case 'ia32':
      return 'i386-efi';
    default:
      return null;
  }
}

/** grub-install arguments for a BIOS (or PReP) install onto `disk`. */
export function grubBiosArgs(disk: string, arch: string = process.arch): string[] {
  const t = biosTarget(arch);
  return [...(t ? [`--target=${t}`] : []), disk];
}

/**
 * grub-install arguments for UEFI into the ESP mounted at /boot/efi. `removable` writes the
 * fallback path (\EFI\BOOT\BOOTX64.EFI) and never touches NVRAM; otherwise NVRAM is only written
 * when the ramdisk itself runs UEFI (elsewhere there are no EFI variables to write).
 */
export function grubUefiArgs(o: { removable: boolean; ramdiskUefi: boolean; arch?: string }): string[] {
  const t = efiTarget(o.arch ?? process.arch);
  const args = [...(t ? [`--target=${t}`] : []), '--efi-directory=/boot/efi'];
  if (o.removable) args.push('--removable');
  else if (!o.ramdiskUefi) args.push('--no-nvram');
  return args;
}

/** grub-mkconfig -o /boot/<flavour>/grub.cfg in the chroot (os-prober off, as IPA). */
export async function grubMkconfig(host: Host, root: string, grub: ImageGrub, log: Logger): Promise<string> {
  if (!grub.mkconfig) throw new Error(`the image has no ${grub.flavour}-mkconfig`);
  const cfg = `/boot/${grub.flavour}/grub.cfg`;
  await fs.mkdir(join(root, `boot/${grub.flavour}`), { recursive: true });
  await runInChroot(host, root, grub.mkconfig, ['-o', cfg], { env: { GRUB_DISABLE_OS_PROBER: 'true', GRUB_SAVEDEFAULT: 'true' } });
  log.info({ config: cfg }, `generated ${cfg}`);
  return cfg;
}
