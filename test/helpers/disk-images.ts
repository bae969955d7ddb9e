// Test images built with the real tools: whole-disk images (GPT or MBR, one partition holding an
// ext4 filesystem with a marker file), bare ext4 partition images, qcow2 conversions, config
// drives (ISO-9660 labelled config-2, as nova/Ironic build them), and big virtual images whose
// bytes are computed from the offset.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sh } from './loop-device.js';
import type { FileSource } from './image-server.js';

export const MiB = 1024 * 1024;
export const SECTOR = 512;

export async function must(cmd: string, args: string[]): Promise<string> {
  const res = await sh(cmd, args);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
  return res.stdout;
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
export const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');

export interface Ext4Image {
  raw: Buffer;
  uuid: string;
  marker: string;
}

/** An ext4 filesystem image holding /marker, /etc/hostname and 256 KiB of random data (so it is not all zeros). */
export async function ext4Image(dir: string, name: string, sizeMiB: number, marker: string): Promise<Ext4Image> {
  const tree = join(dir, `${name}-tree`);
  await mkdir(join(tree, 'etc'), { recursive: true });
  await writeFile(join(tree, 'marker'), marker);
  await writeFile(join(tree, 'etc', 'hostname'), `${name}\n`);
  await writeFile(join(tree, 'random.bin'), randomBytes(256 * 1024));
  const file = join(dir, `${name}.ext4`);
  const uuid = randomUUID();
  await must('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'img-root', '-U', uuid, '-d', tree, file, `${sizeMiB}M`]);
  return { raw: await readFile(file), uuid, marker };
}

export interface WholeDiskImage {
  raw: Buffer;
  label: 'gpt' | 'dos';
  /** Byte offset and size of partition 1 (the ext4 root). */
  partOffset: number;
  partSize: number;
  fs: Ext4Image;
  /** GPT: the partition's PARTUUID; dos: the disk signature as IPA reports it (0x%08x). */
  partUuid: string | null;
  diskSignature: string;
}

/**
 * A whole-disk image of `sizeMiB`: a partition table and one Linux partition from 1 MiB to the
 * end (GPT: minus the backup table) holding an ext4 filesystem with /marker.
 */
export async function wholeDiskImage(dir: string, name: string, o: { sizeMiB: number; label: 'gpt' | 'dos'; marker: string }): Promise<WholeDiskImage> {
  const file = join(dir, `${name}.img`);
  await must('truncate', ['-s', `${o.sizeMiB}M`, file]);
  let partUuid: string | null = null;
  if (o.label === 'gpt') {
    partUuid = randomUUID();
    await must('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', '-c', '1:root', '-u', `1:${partUuid}`, file]);
  } else {
    await must('sh', ['-c', `printf 'label: dos\\nlabel-id: 0x${randomBytes(4).toString('hex')}\\nstart=2048, type=83\\n' | sfdisk -q ${file}`]);
  }
  const json = JSON.parse(await must('sfdisk', ['--json', file])) as { partitiontable: { partitions: Array<{ start: number; size: number }> } };
  const p = json.partitiontable.partitions[0]!;
  const partOffset = p.start * SECTOR;
  const partSize = p.size * SECTOR;
  const fs = await ext4Image(dir, `${name}-root`, Math.floor(partSize / MiB), o.marker);
  const raw = await readFile(file);
  fs.raw.copy(raw, partOffset);
  await writeFile(file, raw);
  return {
    raw,
    label: o.label,
    partOffset,
    partSize,
    fs,
    partUuid,
    diskSignature: `0x${raw.readUInt32LE(440).toString(16).padStart(8, '0')}`,
  };
}

export async function qcow2Of(dir: string, name: string, raw: Buffer, extra: string[] = []): Promise<Buffer> {
  const src = join(dir, `${name}.src.raw`);
  const out = join(dir, `${name}.qcow2`);
  await writeFile(src, raw);
  await must('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', ...extra, src, out]);
  return readFile(out);
}

export interface ConfigDrive {
  iso: Buffer;
  /** base64 of the gzipped ISO, as Ironic sends it. */
  encoded: string;
  metaData: string;
}

/** A config drive as nova/Ironic build it: ISO-9660 labelled config-2 with openstack/latest/meta_data.json. */
export async function configDrive(dir: string, name: string, meta: Record<string, unknown>): Promise<ConfigDrive> {
  const tree = join(dir, `${name}-cd`);
  await mkdir(join(tree, 'openstack', 'latest'), { recursive: true });
  const metaData = JSON.stringify(meta);
  await writeFile(join(tree, 'openstack', 'latest', 'meta_data.json'), metaData);
  await writeFile(join(tree, 'openstack', 'latest', 'user_data'), '#cloud-config\n');
  const file = join(dir, `${name}.iso`);
  await must('genisoimage', ['-quiet', '-o', file, '-V', 'config-2', '-r', '-J', '-l', tree]);
  const iso = await readFile(file);
  return { iso, encoded: gzipSync(iso).toString('base64'), metaData };
}

/** An MBR with one Linux partition from `startLba` to the end of a disk of `totalBytes`. */
export function mbrSector(totalBytes: number, startLba = 2048, signature = 0x5eed1234): Buffer {
  const b = Buffer.alloc(SECTOR);
  b.writeUInt32LE(signature >>> 0, 440);
  const e = 446;
  b[e] = 0x00;
  b[e + 1] = 0xfe;
  b[e + 2] = 0xff;
  b[e + 3] = 0xff; // CHS: use LBA
  b[e + 4] = 0x83;
  b[e + 5] = 0xfe;
  b[e + 6] = 0xff;
  b[e + 7] = 0xff;
  b.writeUInt32LE(startLba, e + 8);
  b.writeUInt32LE(Math.floor(totalBytes / SECTOR) - startLba, e + 12);
  b.writeUInt16LE(0xaa55, 510);
  return b;
}

/**
 * A virtual whole-disk image of `size` bytes: an MBR, then 1 MiB blocks of pseudo-random bytes,
 * each different (block index stamped in), none of them zero. Costs 1 MiB of memory.
 */
export function patternImage(size: number, seed = 1): FileSource & { sha256(): string } {
  const base = createHash('sha512').update(`seed-${seed}`).digest();
  const block = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += base.length) {
    createHash('sha512').update(base).update(String(i)).digest().copy(block, i);
  }
  const mbr = mbrSector(size);
  let cached: [number, Buffer] | null = null;
  const blockAt = (index: number): Buffer => {
    if (cached && cached[0] === index) return cached[1];
    const b = Buffer.from(block);
    b.writeUInt32LE(index, 512 + 0);
    b.writeUInt32LE((index ^ 0xa5a5a5a5) >>> 0, 4096);
    if (index === 0) mbr.copy(b, 0);
    cached = [index, b];
    return b;
  };
  const read = (offset: number, length: number): Buffer => {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const idx = Math.floor(pos / MiB);
      const within = pos - idx * MiB;
      const n = Math.min(MiB - within, length - done);
      blockAt(idx).copy(out, done, within, within + n);
      done += n;
    }
    return out;
  };
  return {
    size,
    read,
    sha256() {
      const h = createHash('sha256');
      for (let off = 0; off < size; off += MiB) h.update(read(off, Math.min(MiB, size - off)));
      return h.digest('hex');
    },
  };
}
