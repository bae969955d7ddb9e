// Partition images and config drives written by a real agent process onto loop devices, driven
// through the conductor-side client's prepare_image as Ironic 21.4.4 does (agent-protocol.md §6,
// §7.4, §7.5): the partition layout IPA/ironic-lib create for BIOS+msdos, UEFI+gpt and BIOS+gpt,
// the ESP/swap/ephemeral filesystems, the config drive partition holding the ISO byte for byte,
// the root filesystem streamed from raw and qcow2 images served over HTTP, preserve_ephemeral,
// the "root partition too small" refusal, a bad checksum leaving no partition table, and
// get_partition_uuids with IPA's keys. Then the whole-disk config drive path (GPT and MBR images,
// and the MBR with four primaries that has no room for one).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { createHash, randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { blkidTags } from '../helpers/device-read.js';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { AgentClient, AgentCommandError } from '../../src/conductor/agent-client.js';
import type { ImageInfo } from '../../src/protocol/index.js';
import { BASE_ARGS, commandsRun, destroyLoop, partitionNodes, readAt, removeTempDirs, run, stopAgent, tempDir } from './support.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const NODE_UUID = '6d1a9c70-54b3-4f4e-9a39-2f1c3b0d8e21';

// ---------------------------------------------------------------------------------------------
// An HTTP server for images (GET with Range, HEAD), like the conductor's or a Swift temp URL.

interface Served {
  base: string;
  add(name: string, data: Buffer): string;
  requests: Array<{ method: string; path: string; range: string | null }>;
  close(): Promise<void>;
}

async function serveFiles(): Promise<Served> {
  const files = new Map<string, Buffer>();
  const requests: Served['requests'] = [];
  const server = http.createServer((req, res) => {
    res.on('error', () => undefined);
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push({ method: req.method ?? '', path, range: req.headers.range ?? null });
    const data = files.get(path);
    if (!data) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    const etag = `"${createHash('sha1').update(data).digest('hex')}"`;
    const headers: http.OutgoingHttpHeaders = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (range && (!ifRange || ifRange === etag)) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${data.length}`, 'content-length': end - start + 1 });
      res.end(req.method === 'HEAD' ? undefined : data.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': data.length });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (!addr || typeof addr !== 'object') throw new Error('no address');
  const base = `http://127.0.0.1:${addr.port}`;
  return {
    base,
    requests,
    add(name, data) {
      files.set(`/${name}`, data);
      return `${base}/${name}`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Test images

interface RootImage {
  raw: Buffer;
  /** The filesystem UUID mke2fs was given. */
  uuid: string;
  marker: string;
}

/** An ext4 filesystem image of `sizeMiB` holding /marker (and /etc/hostname), made with mke2fs -d. */
async function ext4Image(dir: string, name: string, sizeMiB: number, marker: string): Promise<RootImage> {
  const tree = join(dir, `${name}-tree`);
  await mkdir(join(tree, 'etc'), { recursive: true });
  await writeFile(join(tree, 'marker'), marker);
  await writeFile(join(tree, 'etc', 'hostname'), `${name}\n`);
  const file = join(dir, `${name}.raw`);
  const uuid = randomUUID();
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'img-root', '-U', uuid, '-d', tree, file, `${sizeMiB}M`]);
  return { raw: await readFile(file), uuid, marker };
}

async function qcow2Of(dir: string, name: string, raw: Buffer): Promise<Buffer> {
  const src = join(dir, `${name}.src.raw`);
  const out = join(dir, `${name}.qcow2`);
  await writeFile(src, raw);
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', src, out]);
  return readFile(out);
}

interface ConfigDrive {
  iso: Buffer;
  /** base64 of the gzipped ISO, as Ironic sends it. */
  encoded: string;
  metaData: string;
}

/** A config drive as nova/Ironic build it: ISO-9660 labelled config-2 with openstack/latest/meta_data.json. */
async function configDrive(dir: string, name: string, hostname: string): Promise<ConfigDrive> {
  const tree = join(dir, `${name}-cd`);
  await mkdir(join(tree, 'openstack', 'latest'), { recursive: true });
  const metaData = JSON.stringify({ uuid: NODE_UUID, hostname, name: hostname, meta: { ferrum: name } });
  await writeFile(join(tree, 'openstack', 'latest', 'meta_data.json'), metaData);
  await writeFile(join(tree, 'openstack', 'latest', 'user_data'), `#cloud-config\nhostname: ${hostname}\n`);
  const file = join(dir, `${name}.iso`);
  await run('genisoimage', ['-quiet', '-o', file, '-V', 'config-2', '-r', '-J', '-l', tree]);
  const iso = await readFile(file);
  return { iso, encoded: gzipSync(iso).toString('base64'), metaData };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

// ---------------------------------------------------------------------------------------------
// Looking at the disk

interface SfdiskPart {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  bootable?: boolean;
  attrs?: string;
}

async function sfdisk(dev: string): Promise<{ label: string; id: string; parts: SfdiskPart[] } | null> {
  const res = await sh('sfdisk', ['--json', dev]);
  if (res.code !== 0) return null;
  const t = (JSON.parse(res.stdout) as { partitiontable: { label: string; id: string; partitions?: SfdiskPart[] } }).partitiontable;
  return { label: t.label, id: t.id, parts: t.partitions ?? [] };
}

/** parted's machine-readable flags per partition number. */
async function partedFlags(dev: string): Promise<Map<number, string[]>> {
  const out = await run('parted', ['-s', '-m', dev, 'unit', 'MiB', 'print']);
  const flags = new Map<number, string[]>();
  for (const line of out.split('\n').slice(2)) {
    const f = line.replace(/;$/, '').split(':');
    if (f.length >= 7 && /^\d+$/.test(f[0]!)) {
      flags.set(
        Number(f[0]),
        f[6]!
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)
          .sort(),
      );
    }
  }
  return flags;
}

async function debugfsCat(dev: string, path: string): Promise<string> {
  return run('debugfs', ['-R', `cat ${path}`, dev]);
}

const part = (dev: LoopDevice, n: number) => `${dev.path}p${n}`;
const mib = (sectors: number) => (sectors * SECTOR) / MiB;

/** The ISO's volume id and a file from it, read with isoinfo straight from the partition. */
async function isoInfo(dev: string, file: string): Promise<{ volumeId: string | null; content: string }> {
  const d = await run('isoinfo', ['-d', '-i', dev]);
  const volumeId = /^Volume id:\s*(.*)$/m.exec(d)?.[1]?.trim() ?? null;
  const content = await run('isoinfo', ['-R', '-i', dev, '-x', file]);
  return { volumeId, content };
}

// ---------------------------------------------------------------------------------------------

const commandError = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'the command should have failed').toBeInstanceOf(AgentCommandError);
  return (err as AgentCommandError).result.command_error!;
};

afterAll(removeTempDirs);

describe('partition images (standby.prepare_image, image_type "partition")', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let files: Served | undefined;
  let dir = '';
  let imageA: RootImage;
  let imageB: RootImage;
  let qcowA: Buffer;
  let cdA: ConfigDrive;
  let cdB: ConfigDrive;
  let urls: Record<string, string> = {};

  const setNode = (node: Record<string, unknown>) =>
    client!.run('poll.set_node_info', { node_info: { uuid: NODE_UUID, ...node, instance_info: { root_device: { name: disk!.path }, ...(node['instance_info'] as object) } } });

  const partitionInfo = (over: Partial<ImageInfo> & Record<string, unknown>): ImageInfo => ({
    id: 'part-img-a',
    urls: [urls['a.raw']!],
    disk_format: 'raw',
    container_format: 'bare',
    stream_raw_images: true,
    os_hash_algo: 'sha256',
    os_hash_value: sha256(imageA.raw),
    checksum: md5(imageA.raw),
    node_uuid: NODE_UUID,
    image_type: 'partition',
    kernel: null,
    ramdisk: null,
    root_gb: 0,
    root_mb: 100,
    swap_mb: 0,
    ephemeral_mb: 0,
    ephemeral_format: 'ext4',
    preserve_ephemeral: false,
    deploy_boot_mode: 'bios',
    boot_option: 'local',
    configdrive: null,
    ...over,
  });

  beforeAll(async () => {
    dir = await tempDir('ferrum-partimg-');
    [imageA, imageB] = await Promise.all([ext4Image(dir, 'a', 48, 'ferrum partition image A\n'), ext4Image(dir, 'b', 40, 'ferrum partition image B\n')]);
    qcowA = await qcow2Of(dir, 'a', imageA.raw);
    cdA = await configDrive(dir, 'cd-a', 'ferrum-a');
    cdB = await configDrive(dir, 'cd-b', 'ferrum-b-rebuilt');
    files = await serveFiles();
    urls = {
      'a.raw': files.add('a.raw', imageA.raw),
      'a.qcow2': files.add('a.qcow2', qcowA),
      'a.raw.gz': files.add('a.raw.gz', gzipSync(imageA.raw)),
      'b.raw': files.add('b.raw', imageB.raw),
      'cd-a.b64': files.add('cd-a.b64', Buffer.from(cdA.encoded)),
    };
    disk = await createLoopDevice(512);
    agent = await startAgent({ args: [...BASE_ARGS, '--devices', disk.path, '--debug'], port: await freePort() });
    client = new AgentClient({ url: agent.url, pollIntervalMs: 100 });
  });

  afterAll(async () => {
    await client?.close();
    await stopAgent(agent);
    await destroyLoop(disk);
    await files?.close();
  });

  it('BIOS + msdos: ephemeral, swap, config drive, root last with the boot flag', async () => {
    await setNode({});
    const info = partitionInfo({ swap_mb: 32, ephemeral_mb: 64, configdrive: cdA.encoded });
    const res = await client!.prepareImage(info, cdA.encoded, { timeoutMs: 240_000 });

    // Layout: 1 MiB lead-in, then ephemeral | swap | config drive (its size in whole MiB) | root.
    const table = (await sfdisk(disk!.path))!;
    expect(table.label).toBe('dos');
    expect(table.parts.map((p) => [p.node, mib(p.start), mib(p.size), p.type, p.bootable ?? false])).toEqual([
      [part(disk!, 1), 1, 64, '83', false],
      [part(disk!, 2), 65, 32, '82', false],
      [part(disk!, 3), 97, 1, '83', false],
      [part(disk!, 4), 98, 100, '83', true],
    ]);
    expect((await partedFlags(disk!.path)).get(4)).toContain('boot');
    expect(partitionNodes(disk!)).toEqual([1, 2, 3, 4].map((n) => `${posix.basename(disk!.path)}p${n}`));

    const [eph, swap, cd, root] = await Promise.all([1, 2, 3, 4].map((n) => blkidTags(part(disk!, n))));
    expect(eph).toMatchObject({ TYPE: 'ext4', LABEL: 'ephemeral0' });
    expect(swap).toMatchObject({ TYPE: 'swap', LABEL: 'swap1' });
    expect(cd).toMatchObject({ TYPE: 'iso9660', LABEL: 'config-2' });
    expect(root).toMatchObject({ TYPE: 'ext4', LABEL: 'img-root', UUID: imageA.uuid });

    // The image's filesystem on the root partition, the ISO byte for byte in its partition.
    expect(await debugfsCat(part(disk!, 4), '/marker')).toBe(imageA.marker);
    expect(readAt(part(disk!, 4), 0, imageA.raw.length).equals(imageA.raw)).toBe(true);
    expect(readAt(part(disk!, 3), 0, cdA.iso.length).equals(cdA.iso)).toBe(true);
    expect(await isoInfo(part(disk!, 3), '/openstack/latest/meta_data.json')).toEqual({ volumeId: 'config-2', content: cdA.metaData });

    // IPA's answer and get_partition_uuids (keys with spaces; efi key present and null in BIOS mode).
    expect(res).toEqual({ result: `prepare_image: image (part-img-a) written to device ${disk!.path} root_uuid=${imageA.uuid}` });
    const uuids = await client!.getPartitionUuids();
    expect(uuids).toEqual({
      partitions: { ephemeral: part(disk!, 1), swap: part(disk!, 2), configdrive: part(disk!, 3), root: part(disk!, 4) },
      'root uuid': imageA.uuid,
      'efi system partition uuid': null,
    });
    expect(Object.keys(uuids)).toEqual(['partitions', 'root uuid', 'efi system partition uuid']);
    const blkidRoot = (await run('blkid', ['-p', '-s', 'UUID', '-o', 'value', part(disk!, 4)])).trim();
    expect(uuids['root uuid']).toBe(blkidRoot);

    // IPA's tools, IPA's arguments.
    const cmds = await commandsRun(agent!);
    const parted = cmds.filter((c) => c.cmd === 'parted').at(-1)!;
    expect(parted.args).toEqual([
      '-a', 'optimal', '-s', disk!.path, '--', 'unit', 'MiB', 'mklabel', 'msdos',
      'mkpart', 'primary', '1', '65',
      'mkpart', 'primary', 'linux-swap', '65', '97',
      'mkpart', 'primary', '97', '98',
      'mkpart', 'primary', '98', '198', 'set', '4', 'boot', 'on',
    ]);
    expect(cmds).toContainEqual({ cmd: 'mkswap', args: ['-L', 'swap1', part(disk!, 2)] });
    expect(cmds).toContainEqual({ cmd: 'mkfs', args: ['-t', 'ext4', '-F', '-L', 'ephemeral0', part(disk!, 1)] });
  });

  it('preserve_ephemeral keeps the partitions and the ephemeral data, rewrites root and the config drive', async () => {
    // Something the tenant left on the ephemeral disk.
    const keep = join(dir, 'keep.txt');
    await writeFile(keep, 'tenant data that must survive a rebuild\n');
    await run('debugfs', ['-w', '-R', `write ${keep} /keep.txt`, part(disk!, 1)]);
    const ephBefore = await blkidTags(part(disk!, 1));
    const tableBefore = await sfdisk(disk!.path);
    const commandsBefore = (await commandsRun(agent!)).length;

    const info = partitionInfo({
      id: 'part-img-b',
      urls: [urls['b.raw']!],
      os_hash_value: sha256(imageB.raw),
      checksum: md5(imageB.raw),
      swap_mb: 32,
      ephemeral_mb: 64,
      preserve_ephemeral: true,
    });
    const res = await client!.prepareImage(info, cdB.encoded, { timeoutMs: 240_000 });
    expect(res?.result).toBe(`prepare_image: image (part-img-b) written to device ${disk!.path} root_uuid=${imageB.uuid}`);

    expect(await sfdisk(disk!.path)).toEqual(tableBefore);
    expect(await blkidTags(part(disk!, 1))).toEqual(ephBefore);
    expect(await debugfsCat(part(disk!, 1), '/keep.txt')).toBe('tenant data that must survive a rebuild\n');
    expect(await debugfsCat(part(disk!, 4), '/marker')).toBe(imageB.marker);
    expect(await isoInfo(part(disk!, 3), '/openstack/latest/meta_data.json')).toEqual({ volumeId: 'config-2', content: cdB.metaData });
    expect(await blkidTags(part(disk!, 2))).toMatchObject({ TYPE: 'swap', LABEL: 'swap1' });
    expect((await client!.getPartitionUuids())['root uuid']).toBe(imageB.uuid);
    // No new table, no wipe, no mkfs of the ephemeral partition in this deploy; swap is redone.
    const cmds = (await commandsRun(agent!)).slice(commandsBefore);
    expect(cmds.filter((c) => ['parted', 'wipefs', 'sgdisk', 'mkfs'].includes(c.cmd))).toEqual([]);
    expect(cmds).toContainEqual({ cmd: 'mkswap', args: ['-L', 'swap1', part(disk!, 2)] });
  });

  it('preserve_ephemeral refuses a layout that does not match, touching nothing', async () => {
    const tableBefore = await sfdisk(disk!.path);
    const rootBefore = sha256(readAt(part(disk!, 4), 0, 100 * MiB));
    // No swap this time: root would be partition 3, which is the config drive.
    const err = await commandError(client!.prepareImage(partitionInfo({ ephemeral_mb: 64, preserve_ephemeral: true }), cdB.encoded));
    expect(err.type).toBe('CommandExecutionError');
    expect(err.details).toMatch(/preserve_ephemeral is set but the partitions of .* are not the layout to preserve .*found partitions 1, 2, 3, 4/);
    expect(await sfdisk(disk!.path)).toEqual(tableBefore);
    expect(sha256(readAt(part(disk!, 4), 0, 100 * MiB))).toBe(rootBefore);
    expect(await debugfsCat(part(disk!, 1), '/keep.txt')).toBe('tenant data that must survive a rebuild\n');
  });

  it('UEFI + gpt from a qcow2 image: ESP first (vfat efi-part), config drive from a URL, root last', async () => {
    await setNode({});
    const info = partitionInfo({
      id: 'part-img-a-qcow2',
      urls: [urls['a.qcow2']!],
      disk_format: 'qcow2',
      os_hash_algo: null,
      os_hash_value: null,
      checksum: md5(qcowA),
      deploy_boot_mode: 'uefi',
      configdrive: urls['cd-a.b64']!,
    });
    const res = await client!.prepareImage(info, urls['cd-a.b64']!, { timeoutMs: 240_000 });

    const table = (await sfdisk(disk!.path))!;
    expect(table.label).toBe('gpt');
    expect(table.parts.map((p) => [p.node, mib(p.start), mib(p.size), p.type, p.name])).toEqual([
      [part(disk!, 1), 1, 200, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'primary'],
      [part(disk!, 2), 201, 1, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'primary'],
      [part(disk!, 3), 202, 100, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'primary'],
    ]);
    expect((await partedFlags(disk!.path)).get(1)).toEqual(['boot', 'esp']);

    // The ESP: FAT labelled efi-part, readable with mtools (this kernel cannot mount vfat).
    const esp = await blkidTags(part(disk!, 1));
    expect(esp).toMatchObject({ TYPE: 'vfat', LABEL: 'efi-part' });
    const file = await run('file', ['-s', part(disk!, 1)]);
    expect(file).toMatch(/OEM-ID "mkfs.fat"/);
    expect(file).toMatch(/label: "efi-part\s*"/);
    expect(file).toMatch(/FAT \(1[26] bit\)/);
    const mtools = await sh('mlabel', ['-i', part(disk!, 1), '-s', '::']);
    expect(mtools.stdout.trim().toLowerCase()).toBe('volume label is efi-part');
    expect((await sh('mdir', ['-i', part(disk!, 1), '-b', '::'])).code).toBe(0);

    expect(await debugfsCat(part(disk!, 3), '/marker')).toBe(imageA.marker);
    expect(readAt(part(disk!, 3), 0, imageA.raw.length).equals(imageA.raw)).toBe(true);
    expect(readAt(part(disk!, 2), 0, cdA.iso.length).equals(cdA.iso)).toBe(true);
    expect((await blkidTags(part(disk!, 2))).LABEL).toBe('config-2');

    const espUuid = (await run('blkid', ['-p', '-s', 'UUID', '-o', 'value', part(disk!, 1)])).trim();
    expect(espUuid).toMatch(/^[0-9A-F]{4}-[0-9A-F]{4}$/);
    expect(res?.result).toBe(`prepare_image: image (part-img-a-qcow2) written to device ${disk!.path} root_uuid=${imageA.uuid} efi_system_partition_uuid=${espUuid}`);
    expect(await client!.getPartitionUuids()).toEqual({
      partitions: { 'efi system partition': part(disk!, 1), configdrive: part(disk!, 2), root: part(disk!, 3) },
      'root uuid': imageA.uuid,
      'efi system partition uuid': espUuid,
    });
    expect((await commandsRun(agent!)).some((c) => c.cmd === 'mkfs' && c.args.join(' ') === `-t vfat -n efi-part ${part(disk!, 1)}`)).toBe(true);
  });

  it('BIOS + gpt (disk_label and boot mode from the node): 1 MiB bios_grub partition first', async () => {
    await setNode({ properties: { capabilities: 'boot_mode:bios,disk_label:gpt' } });
    const info = partitionInfo({ deploy_boot_mode: null, swap_mb: 16 });
    delete (info as Record<string, unknown>)['deploy_boot_mode'];
    const res = await client!.prepareImage(info, null, { timeoutMs: 240_000 });

    const table = (await sfdisk(disk!.path))!;
    expect(table.label).toBe('gpt');
    expect(table.parts.map((p) => [p.node, mib(p.start), mib(p.size), p.type])).toEqual([
      [part(disk!, 1), 1, 1, '21686148-6449-6E6F-744E-656564454649'],
      [part(disk!, 2), 2, 16, '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F'],
      [part(disk!, 3), 18, 100, '0FC63DAF-8483-4772-8E79-3D69D8477DE4'],
    ]);
    const flags = await partedFlags(disk!.path);
    expect(flags.get(1)).toEqual(['bios_grub']);
    expect(flags.get(3)).toEqual([]); // no boot flag on GPT
    expect(await debugfsCat(part(disk!, 3), '/marker')).toBe(imageA.marker);
    expect(res?.result).toBe(`prepare_image: image (part-img-a) written to device ${disk!.path} root_uuid=${imageA.uuid}`);
    expect(await client!.getPartitionUuids()).toEqual({
      partitions: { 'BIOS Boot partition': part(disk!, 1), swap: part(disk!, 2), root: part(disk!, 3) },
      'root uuid': imageA.uuid,
      'efi system partition uuid': null,
    });
  });

  it('refuses an image bigger than root_mb before touching the disk (raw and qcow2)', async () => {
    await setNode({});
    const before = await sfdisk(disk!.path);
    for (const [url, fmt, checksum] of [
      [urls['a.raw']!, 'raw', md5(imageA.raw)],
      [urls['a.qcow2']!, 'qcow2', md5(qcowA)],
    ] as const) {
      const info = partitionInfo({ urls: [url], disk_format: fmt, os_hash_algo: null, os_hash_value: null, checksum, root_mb: 32 });
      const err = await commandError(client!.prepareImage(info, null));
      expect(err.type).toBe('InvalidCommandParamsError');
      expect(err.details).toBe('Root partition is too small for requested image. Image virtual size: 48 MB, Root size: 32 MB');
    }
    expect(await sfdisk(disk!.path)).toEqual(before);
    expect(await debugfsCat(part(disk!, 3), '/marker')).toBe(imageA.marker);
  });

  it('a compressed raw image only shows its size while streaming: same error, and the disk is wiped', async () => {
    const gz = gzipSync(imageA.raw);
    const info = partitionInfo({ urls: [urls['a.raw.gz']!], os_hash_algo: null, os_hash_value: null, checksum: md5(gz), root_mb: 32 });
    const err = await commandError(client!.prepareImage(info, null));
    expect(err.type).toBe('InvalidCommandParamsError');
    expect(err.details).toBe('Root partition is too small for requested image. Image virtual size: more than 32 MB, Root size: 32 MB');
    expect(await sfdisk(disk!.path)).toBeNull();
    expect(partitionNodes(disk!)).toEqual([]);
  });

  it('a wrong checksum fails the deploy and leaves no partition table', async () => {
    const info = partitionInfo({ swap_mb: 16, ephemeral_mb: 32, os_hash_value: sha256(Buffer.from('something else')) });
    const requestsBefore = files!.requests.length;
    const err = await commandError(client!.prepareImage(info, cdA.encoded, { timeoutMs: 240_000 }));
    expect(err.type).toBe('ImageChecksumError');
    expect(await sfdisk(disk!.path)).toBeNull();
    expect(partitionNodes(disk!)).toEqual([]);
    const wipefs = (await sh('wipefs', ['--no-act', '-J', disk!.path])).stdout.trim();
    expect(wipefs === '' ? [] : (JSON.parse(wipefs) as { signatures: unknown[] }).signatures).toEqual([]);
    expect(readAt(disk!.path, 0, 1024).equals(Buffer.alloc(1024))).toBe(true);
    // Retried once (a changed mirror is the likely cause), as whole-disk writes are.
    const gets = files!.requests.slice(requestsBefore).filter((r) => r.path === '/a.raw' && r.method === 'GET');
    expect(gets).toHaveLength(3); // the first bytes before partitioning, then two full attempts
  });

  it('the partitions must fit the disk', async () => {
    const err = await commandError(client!.prepareImage(partitionInfo({ root_mb: 600 }), null));
    // The image is fine; the layout is not.
    expect(err.type).toBe('ImageWriteError');
    expect(err.details).toMatch(/the partitions need 601 MiB but the device has 512 MiB/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('config drive on a whole-disk image (writeConfigDriveWholeDisk through prepare_image)', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let files: Served | undefined;
  let dir = '';
  let cd: ConfigDrive;

  /** A whole-disk image made by partitioning a file. */
  async function diskImage(name: string, sizeMiB: number, tool: 'sgdisk' | 'parted', args: string[]): Promise<Buffer> {
    const file = join(dir, `${name}.img`);
    await run('truncate', ['-s', `${sizeMiB}M`, file]);
    await run(tool, tool === 'sgdisk' ? [...args, file] : ['-s', file, '--', ...args]);
    return readFile(file);
  }

  const wholeDiskInfo = (id: string, url: string, data: Buffer): ImageInfo => ({
    id,
    urls: [url],
    disk_format: 'raw',
    container_format: 'bare',
    stream_raw_images: true,
    os_hash_algo: 'sha512',
    os_hash_value: createHash('sha512').update(data).digest('hex'),
    node_uuid: NODE_UUID,
    deploy_boot_mode: 'bios',
  });

  beforeAll(async () => {
    dir = await tempDir('ferrum-wdcd-');
    cd = await configDrive(dir, 'cd-wd', 'ferrum-whole-disk');
    files = await serveFiles();
    disk = await createLoopDevice(256);
    agent = await startAgent({ args: [...BASE_ARGS, '--devices', disk.path, '--debug'], port: await freePort() });
    client = new AgentClient({ url: agent.url, pollIntervalMs: 100 });
    await client.run('poll.set_node_info', { node_info: { uuid: NODE_UUID, instance_info: { root_device: { name: disk.path } } } });
  });

  afterAll(async () => {
    await client?.close();
    await stopAgent(agent);
    await destroyLoop(disk);
    await files?.close();
  });

  it('GPT: a new partition over the last 64 MiB holds the ISO', async () => {
    const img = await diskImage('gpt', 64, 'sgdisk', ['-n', '1:2048:+32M', '-t', '1:8300', '-c', '1:rootfs']);
    const url = files!.add('gpt.img', img);
    const res = await client!.prepareImage(wholeDiskInfo('wd-gpt', url, img), cd.encoded, { timeoutMs: 120_000 });

    const table = (await sfdisk(disk!.path))!;
    expect(table.label).toBe('gpt');
    expect(table.parts).toHaveLength(2);
    const [rootfs, cdPart] = table.parts as [SfdiskPart, SfdiskPart];
    expect([mib(rootfs.start), mib(rootfs.size), rootfs.name]).toEqual([1, 32, 'rootfs']);
    // Backup GPT moved to the disk's end, config drive ending at the last usable sector.
    const lastUsable = disk!.sizeBytes / SECTOR - 34;
    expect(cdPart.start + cdPart.size - 1).toBe(lastUsable);
    // sgdisk -n 0:-64MB:0 puts the start 64 MiB before the end, aligned down to 1 MiB.
    expect(cdPart.start % 2048).toBe(0);
    expect(cdPart.size * SECTOR).toBeGreaterThanOrEqual(64 * MiB);
    expect(cdPart.size * SECTOR).toBeLessThan(65 * MiB);
    expect(readAt(part(disk!, 2), 0, cd.iso.length).equals(cd.iso)).toBe(true);
    expect(await blkidTags(part(disk!, 2))).toMatchObject({ TYPE: 'iso9660', LABEL: 'config-2' });
    expect(await isoInfo(part(disk!, 2), '/openstack/latest/meta_data.json')).toEqual({ volumeId: 'config-2', content: cd.metaData });

    // Whole disk: "root uuid" is the MBR disk signature.
    const sig = `0x${readAt(disk!.path, 440, 4).readUInt32LE(0).toString(16).padStart(8, '0')}`;
    expect(res?.result).toBe(`prepare_image: image (wd-gpt) written to device ${disk!.path} root_uuid=${sig}`);
    expect(await client!.getPartitionUuids()).toEqual({ 'root uuid': sig });
  });

  it('MBR: a new primary partition at the end holds the ISO', async () => {
    const img = await diskImage('mbr', 64, 'parted', ['mklabel', 'msdos', 'mkpart', 'primary', 'ext4', '1MiB', '33MiB']);
    const url = files!.add('mbr.img', img);
    const res = await client!.prepareImage(wholeDiskInfo('wd-mbr', url, img), cd.encoded, { timeoutMs: 120_000 });

    const table = (await sfdisk(disk!.path))!;
    expect(table.label).toBe('dos');
    expect(table.parts).toHaveLength(2);
    const [, cdPart] = table.parts as [SfdiskPart, SfdiskPart];
    expect(cdPart.node).toBe(part(disk!, 2));
    expect(cdPart.start * SECTOR).toBe(disk!.sizeBytes - 64 * MiB);
    expect(cdPart.start + cdPart.size).toBe(disk!.sizeBytes / SECTOR);
    expect(readAt(part(disk!, 2), 0, cd.iso.length).equals(cd.iso)).toBe(true);
    expect(await blkidTags(part(disk!, 2))).toMatchObject({ TYPE: 'iso9660', LABEL: 'config-2' });
    const sig = `0x${readAt(disk!.path, 440, 4).readUInt32LE(0).toString(16).padStart(8, '0')}`;
    expect(table.id).toBe(sig);
    expect(res?.result).toBe(`prepare_image: image (wd-mbr) written to device ${disk!.path} root_uuid=${sig}`);
  });

  it('MBR with four primaries: refused, no room for a config drive partition', async () => {
    const img = await diskImage('mbr4', 64, 'parted', [
      'mklabel', 'msdos',
      'mkpart', 'primary', '1MiB', '9MiB',
      'mkpart', 'primary', '9MiB', '17MiB',
      'mkpart', 'primary', '17MiB', '25MiB',
      'mkpart', 'primary', '25MiB', '33MiB',
    ]);
    const url = files!.add('mbr4.img', img);
    const err = await commandError(client!.prepareImage(wholeDiskInfo('wd-mbr4', url, img), cd.encoded, { timeoutMs: 120_000 }));
    expect(err.type).toBe('DeploymentError');
    expect(err.details).toMatch(/has an MBR with 4 primary partitions: no room for one more/);
    expect((await sfdisk(disk!.path))!.parts).toHaveLength(4);
  });
});
