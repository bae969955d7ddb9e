// Software RAID, end to end in a VM with two disks (this host's kernel has no md driver): the
// agent's raid clean steps as Ironic's agent RAID interface runs them, then a whole-disk image
// deployed onto the array. From the host, the test reads both disk files: each holds a GPT, a
// partition with the same md superblock (RAID-1, one array UUID), and the image's bytes at the
// array's data offset. delete_configuration then stops the array and leaves no superblock behind.
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readAt } from '../helpers/device-read.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ImageInfo } from '../../src/protocol/image-info.js';
import type { Node } from '../../src/protocol/steps.js';
import { MD_MAGIC, mdSuperblock, mdSuperblockOffset, partitionTable } from './support/md-members.js';
import { RAMDISK_DIR, StandaloneRun } from './support/standalone-vm.js';
import { chooseAccel } from './support/vm.js';

const DISK_BYTES = 5 * 2 ** 30;
const IMAGE_BYTES = 64 * 2 ** 20;

const run = new StandaloneRun('raid', { sgdisk: 'gdisk', sfdisk: 'fdisk' });
const log = (line: string) => console.log(`[e2e-raid ${new Date().toISOString().slice(11, 19)}] ${line}`);

describe('Ferrum ramdisk: software RAID-1 over two disks, in a VM', () => {
  beforeAll(() => run.setUp(), 600_000);
  afterAll(() => run.tearDown(), 120_000);

  test('create_configuration builds md0 on both disks, a whole-disk image lands on both, delete_configuration removes the array', async () => {
    const n = run.net!;
    const accel = await chooseAccel(join(RAMDISK_DIR, 'kernel'));
    const disks = [join(run.runDir, 'disk0.raw'), join(run.runDir, 'disk1.raw')];
    for (const d of disks) execFileSync('truncate', ['-s', String(DISK_BYTES), d]);

    // A whole-disk image: a GPT and random data.
    const image = join(n.httpRoot, 'images/raid-image.raw');
    mkdirSync(join(n.httpRoot, 'images'), { recursive: true });
    writeFileSync(image, randomBytes(IMAGE_BYTES));
    execFileSync('sgdisk', ['-o', '-n', '1:2048:0', image], { stdio: 'ignore' });
    const imageBytes = readAt(image, 0, IMAGE_BYTES);
    const sha256 = createHash('sha256').update(imageBytes).digest('hex');

    const s = await run.boot(disks[0]!, accel.accel, [disks[1]!]);
    const client = s.client;
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp} (${accel.accel})`);

    // As Ironic's agent RAID interface: the node carries target_raid_config; steps come from the listing.
    const raidConfig = { logical_disks: [{ size_gb: 'MAX', raid_level: '1', controller: 'software' }] };
    const node = {
      uuid: '5e0d5ad6-7c2b-4a8e-9b66-2a4c2f1f0a11',
      target_raid_config: raidConfig,
      properties: { capabilities: 'boot_mode:uefi' },
      instance_info: {},
      driver_internal_info: {},
    } as unknown as Node;
    const listed = await client.getCleanSteps(node, []);
    const generic = (listed.clean_steps as Record<string, Array<{ step: string; interface: string }>>)['GenericHardwareManager'] ?? [];
    expect(generic.filter((st) => st.interface === 'raid').map((st) => st.step)).toEqual(['delete_configuration', 'create_configuration']);
    const version = listed.hardware_manager_version;

    let t = Date.now();
    const created = await client.executeCleanStep({ step: 'create_configuration', interface: 'raid', priority: 0, args: {} }, node, [], version, { timeoutMs: 600_000 });
    log(`create_configuration in ${Date.now() - t} ms: ${JSON.stringify(created)}`);
    expect(created).toMatchObject({ clean_result: raidConfig });

    const info = {
      id: 'ferrum-e2e-raid',
      urls: [`${n.httpUrl}/images/raid-image.raw`],
      disk_format: 'raw',
      container_format: 'bare',
      stream_raw_images: true,
      os_hash_algo: 'sha256',
      os_hash_value: sha256,
      checksum: null,
      image_type: 'whole-disk',
    } as unknown as ImageInfo;
    t = Date.now();
    const prepared = await client.prepareImage(info, null, { timeoutMs: 600_000 }).catch(run.fail);
    log(`prepare_image in ${Date.now() - t} ms: ${prepared?.result}`);
    // The smallest disk-like device of at least 4 GiB is the array.
    expect(prepared?.result).toMatch(/written to device \/dev\/md\d+/);
    await client.sync();

    // Both members: same array, RAID-1 of 2, the image at the data offset.
    const sbs = disks.map((d) => {
      const first = partitionTable(d, 'gpt')[0]!;
      const at = first.start * 512;
      expect(at).toBe(551 * 2 ** 20); // room for the ESP install_bootloader makes in UEFI mode
      const sbAt = mdSuperblockOffset(first, '1.2');
      return { at, sbAt, sb: mdSuperblock(d, sbAt) };
    });
    for (const [i, { at, sb }] of sbs.entries()) {
      log(`disk${i}: partition at ${at}, md superblock ${JSON.stringify(sb)}`);
      expect(sb.magic).toBe(MD_MAGIC);
      expect(sb.major).toBe(1);
      expect(sb.level).toBe(1);
      expect(sb.raidDisks).toBe(2);
      // The image's data, clear of the GPT structures the agent moved: bytes 1 MiB to 63 MiB.
      const onDisk = readAt(disks[i]!, at + sb.dataOffset + 2 ** 20, IMAGE_BYTES - 2 * 2 ** 20);
      expect(onDisk.equals(imageBytes.subarray(2 ** 20, IMAGE_BYTES - 2 ** 20)), `the image on disk${i}`).toBe(true);
    }
    expect(sbs[0]!.sb.uuid).toBe(sbs[1]!.sb.uuid);

    t = Date.now();
    const deleted = await client.executeCleanStep({ step: 'delete_configuration', interface: 'raid', priority: 0, args: {} }, node, [], version, { timeoutMs: 600_000 });
    log(`delete_configuration in ${Date.now() - t} ms: ${JSON.stringify(deleted)}`);
    await client.sync();
    for (const [i, d] of disks.entries()) {
      expect(readAt(d, sbs[i]!.sbAt, 4).readUInt32LE(0), `no md superblock left on disk${i}`).not.toBe(MD_MAGIC);
      expect(readAt(d, 0, 2 ** 20).equals(Buffer.alloc(2 ** 20)), `disk${i} has no partition table`).toBe(true);
    }
    run.passed = true;
  }, 1_800_000);
});
