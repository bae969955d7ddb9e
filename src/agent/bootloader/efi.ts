// UEFI: finding the image's own EFI loader on its ESP and pointing an NVRAM boot entry at it
// (IPA's efi_utils). Loader discovery follows IPA 9.4.3: a BOOTX64.CSV / BOOT.CSV (shim's
// "fallback" hint: loader file name and label, UTF-16) wins and names the one entry; otherwise
// every known loader file (bootx64.efi, bootaa64.efi, grubaa64.efi, winload.efi, …) gets an
// entry labelled ironic1, ironic2, …; beyond IPA, an ESP that only holds a vendor directory's
// shimx64.efi / grubx64.efi still gets an entry. Entries are made idempotent: before creating
// one, every existing entry with the same label, or pointing at the same loader on the same
// partition, is removed (IPA removes by label only).
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';

/** IPA 9.4.3's list (lower case). bootia32.csv is deliberately absent there too. */
export const BOOTLOADERS_EFI = [
  'bootx64.csv',
  'boot.csv',
  'bootia32.efi',
  'bootx64.efi',
  'bootia64.efi',
  'bootarm.efi',
  'bootaa64.efi',
  'bootriscv32.efi',
  'bootriscv64.efi',
  'bootriscv128.efi',
  'grubaa64.efi',
  'winload.efi',
];

/** Vendor loaders used only when none of IPA's names is present (shim first, then GRUB). */
export const VENDOR_LOADERS_EFI = ['shimx64.efi', 'shimaa64.efi', 'grubx64.efi', 'grubaa64.efi'];

export interface EfiBootEntry {
  /** Loader path as firmware sees it: \EFI\debian\shimx64.efi */
  loader: string;
  label: string;
  /** ESP-relative path of the file that named it (the loader or the CSV). */
  source: string;
}

/** Decodes a shim CSV file: UTF-16 with or without a byte-order mark (UTF-8 tolerated). */
export function decodeCsv(buf: Buffer): string {
  if (buf.length >= 2 && buf[0] === 0xff && buf[1] === 0xfe) return buf.subarray(2).toString('utf16le');
  if (buf.length >= 2 && buf[0] === 0xfe && buf[1] === 0xff) {
    const swapped = Buffer.from(buf.subarray(2));
    swapped.swap16();
    return swapped.toString('utf16le');
  }
  // No BOM: UTF-16LE text has a zero in every odd byte.
  let zeros = 0;
  for (let i = 1; i < buf.length; i += 2) if (buf[i] === 0) zeros++;
  if (buf.length >= 2 && zeros >= Math.floor(buf.length / 2) * 0.9) return buf.toString('utf16le');
  return buf.toString('utf8').replace(/^\uFEFF/, '');
}

/** `shimx64.efi,debian,,This is the boot entry for debian` → loader file name and label. */
export function parseBootCsv(text: string): { file: string; label: string } | null {
  const line = text.split(/\r?\n/).find((l) => l.trim() !== '');
  if (!line) return null;
  const [file, label] = line.split(',', 3).map((s) => s.trim().replace(/\0/g, ''));
  if (!file || label === undefined || label === '') return null;
  return { file, label };
}

const toFirmwarePath = (relPath: string) => `\\${relPath.replace(/^\/+/, '').replace(/\//g, '\\')}`;
const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
const dirOf = (p: string) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');

/**
 * Chooses the NVRAM entries for an ESP from its file list (ESP-relative paths, any case).
 * `readFile` is only called for a CSV hint.
 */
export async function chooseEfiLoaders(files: readonly string[], readFile: (rel: string) => Promise<Buffer>): Promise<EfiBootEntry[]> {
  const sorted = [...files].map((f) => f.replace(/^\/+/, '')).sort((a, b) => a.localeCompare(b));
  const known = sorted.filter((f) => BOOTLOADERS_EFI.includes(base(f).toLowerCase()));
  const csv = known.find((f) => base(f).toLowerCase().endsWith('.csv'));
  if (csv) {
    const parsed = parseBootCsv(decodeCsv(await readFile(csv)));
    if (parsed) {
      const dir = dirOf(csv);
      return [{ loader: toFirmwarePath(dir ? `${dir}/${parsed.file}` : parsed.file), label: parsed.label, source: csv }];
    }
  }
  const loaders = known.filter((f) => base(f).toLowerCase().endsWith('.efi'));
  if (loaders.length > 0) return loaders.map((f, i) => ({ loader: toFirmwarePath(f), label: `ironic${i + 1}`, source: f }));
  for (const name of VENDOR_LOADERS_EFI) {
    const vendor = sorted.find((f) => base(f).toLowerCase() === name && !/^efi\/boot\//i.test(f));
    if (vendor) return [{ loader: toFirmwarePath(vendor), label: 'ironic1', source: vendor }];
  }
  return [];
}

/** Read access to the files of an ESP. */
export interface EspFiles {
  /** ESP-relative paths of all regular files. */
  list(): Promise<string[]>;
  read(rel: string): Promise<Buffer>;
}

/** Lists `mdir -/ -b` output (::/EFI/BOOT/BOOTX64.EFI; directories end with a slash). */
export function parseMdirBare(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.startsWith('::/') && !l.endsWith('/'))
    .map((l) => l.slice(3));
}

/** An ESP read with mtools, without mounting it (and without a kernel vfat driver). */
export function mtoolsEsp(host: Host, partition: string, scratchDir: string): EspFiles {
  const env = { MTOOLS_SKIP_CHECK: '1' };
  return {
    async list() {
      const res = await host.run('mdir', ['-/', '-b', '-i', partition, '::/'], { allowFailure: true, timeoutMs: 60_000, env });
      if (res.exitCode !== 0 && !res.stdout.includes('::/')) {
        // mdir exits 1 on an empty file system ("File "::/" not found"); anything else is a real failure.
        const err = res.stderr.trim();
        if (err && !/File "::\/" not found/.test(err)) throw new Error(`mdir -i ${partition} failed: ${err}`);
        return [];
      }
      return parseMdirBare(res.stdout);
    },
    async read(rel) {
      const out = join(scratchDir, `esp-file-${Date.now()}-${Math.random().toString(36).slice(2)}`);
      try {
        await host.run('mcopy', ['-n', '-o', '-i', partition, `::/${rel}`, out], { timeoutMs: 60_000, env });
        return await fs.readFile(out);
      } finally {
        await fs.rm(out, { force: true });
      }
    },
  };
}

/** An ESP mounted at `mountPoint`. */
export function mountedEsp(mountPoint: string): EspFiles {
  return {
    async list() {
      const out: string[] = [];
      const walk = async (rel: string) => {
        for (const e of await fs.readdir(join(mountPoint, rel), { withFileTypes: true })) {
          const p = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) await walk(p);
          else if (e.isFile()) out.push(p);
        }
      };
      await walk('');
      return out;
    },
    read: (rel) => fs.readFile(join(mountPoint, rel)),
  };
}

export interface EfiBootRecord {
  /** Four hex digits, as efibootmgr prints them. */
  num: string;
  active: boolean;
  label: string;
  /** Device path text (HD(…)/File(…)) or empty. */
  path: string;
}

const DEVICE_PATH_START = /(HD\(|PciRoot\(|Pci\(|VenHw\(|VenMedia\(|FvVol\(|FvFile\(|BBS\(|MAC\(|Uri\(|File\(|\\EFI\\)/;

/** Parses `efibootmgr -v` output (efibootmgr 15–18 formats) into boot records. */
export function parseEfibootmgr(text: string): EfiBootRecord[] {
  const out: EfiBootRecord[] = [];
  for (const line of text.split('\n')) {
    const m = /^Boot([0-9A-Fa-f]{4})(\*?)\s(.*)$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    const rest = m[3]!;
    let label: string;
    let path: string;
    const tab = rest.indexOf('\t');
    if (tab >= 0) {
      label = rest.slice(0, tab);
      path = rest.slice(tab + 1);
    } else {
      const dp = DEVICE_PATH_START.exec(rest);
      label = dp ? rest.slice(0, dp.index) : rest;
      path = dp ? rest.slice(dp.index) : '';
    }
    out.push({ num: m[1]!.toUpperCase(), active: m[2] === '*', label: label.trim(), path: path.trim() });
  }
  return out;
}

/** The loader path of a record (File(\EFI\…) or a bare \EFI\… path), or null. */
export function recordLoader(record: EfiBootRecord): string | null {
  const file = /(?:^|\/)File\(([^)]*)\)/.exec(record.path); // not FvFile(…)
  if (file) return file[1]!;
  const bare = /(\\[^\s)]*\.efi)/i.exec(record.path);
  return bare ? bare[1]! : null;
}

export interface EntryTarget {
  label: string;
  loader: string;
  /** GPT partition GUID (or MBR signature) of the ESP, when known: makes path matches exact. */
  partUuid?: string | null;
  partNumber: number;
}

/** Existing records a new entry would duplicate: same label, or same loader on the same partition. */
export function duplicateRecords(records: readonly EfiBootRecord[], target: EntryTarget): EfiBootRecord[] {
  return records.filter((r) => {
    if (r.label === target.label) return true;
    // Without the partition's GUID a path match could hit another disk's ESP (RAID members).
    if (!target.partUuid) return false;
    const loader = recordLoader(r);
    if (!loader || loader.toLowerCase() !== target.loader.toLowerCase()) return false;
    const hd = /HD\((\d+),(?:GPT|MBR),([^,)]*)/i.exec(r.path);
    if (!hd) return false;
    if (Number(hd[1]) !== target.partNumber) return false;
    return hd[2]!.toLowerCase().replace(/^0x/, '') === target.partUuid.toLowerCase().replace(/^0x/, '');
  });
}

/** efibootmgr arguments creating one entry (as IPA: -c -d <disk> -p <n> -w -L <label> -l <loader>). */
export function efibootmgrCreateArgs(disk: string, partNumber: number, label: string, loader: string): string[] {
  return ['-v', '-c', '-d', disk, '-p', String(partNumber), '-w', '-L', label, '-l', loader];
}

export const efibootmgrDeleteArgs = (num: string): string[] => ['-b', num, '-B'];

export interface NvramTarget {
  disk: string;
  partNumber: number;
  partUuid?: string | null;
  /** Appended to labels to keep the entries of RAID members apart: "(RAID, part0)". */
  labelSuffix?: string;
}

/**
 * Creates one NVRAM entry per loader for each target (one target per disk; several for the
 * members of a RAID-1 ESP), removing the entries they would duplicate first.
 */
export async function writeNvramEntries(host: Host, log: Logger, loaders: readonly EfiBootEntry[], targets: readonly NvramTarget[]): Promise<string[]> {
  const created: string[] = [];
  for (const t of targets) {
    for (const l of loaders) {
      const label = t.labelSuffix ? `${l.label} ${t.labelSuffix}` : l.label;
      const { stdout } = await host.run('efibootmgr', ['-v'], { timeoutMs: 60_000 });
      const dups = duplicateRecords(parseEfibootmgr(stdout), { label, loader: l.loader, partUuid: t.partUuid ?? null, partNumber: t.partNumber });
      for (const d of dups) {
        log.info({ boot_num: d.num, label: d.label }, `removing boot entry Boot${d.num} (${d.label}) that the new one replaces`);
        await host.run('efibootmgr', efibootmgrDeleteArgs(d.num), { timeoutMs: 60_000 });
      }
      log.info({ loader: l.loader, disk: t.disk, partition: t.partNumber, label }, `adding UEFI boot entry ${label} for ${l.loader}`);
      await host.run('efibootmgr', efibootmgrCreateArgs(t.disk, t.partNumber, label, l.loader), { timeoutMs: 60_000 });
      created.push(label);
    }
  }
  return created;
}
