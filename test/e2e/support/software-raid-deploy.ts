// The software RAID boot tests' common steps: a deploy as Ironic 21.4 drives it for a node with a
// software RAID target_raid_config and a whole-disk image (raid.create_configuration,
// prepare_image onto the array, image.install_bootloader with what get_partition_uuids reported),
// and a boot of the deployed OS from the disks until it prints its marker.
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { AgentClient } from '../../../src/conductor/agent-client.js';
import type { ImageInfo } from '../../../src/protocol/image-info.js';
import type { Node } from '../../../src/protocol/steps.js';
import { PARTITION_OS_MARKER, type WholeDiskImage } from './partition-image.js';
import type { StandaloneRun } from './standalone-vm.js';
import { startVm, type Accel, type Firmware } from './vm.js';

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export interface RaidDeployOptions {
  run: StandaloneRun;
  client: AgentClient;
  image: WholeDiskImage;
  bootMode: Firmware;
  /** The node's capabilities (default boot_mode:<bootMode>). */
  capabilities?: string;
  log: (line: string) => void;
}

/** create_configuration (one RAID-1 MAX), prepare_image, install_bootloader; returns the root uuid used. */
export async function deployOntoSoftwareRaid(o: RaidDeployOptions): Promise<string> {
  const { client, log } = o;
  const fail = o.run.fail;
  const node = {
    uuid: '0b7e4bde-3f0c-4b57-8d51-5a3c1e2b9f20',
    target_raid_config: { logical_disks: [{ size_gb: 'MAX', raid_level: '1', controller: 'software' }] },
    properties: { capabilities: o.capabilities ?? `boot_mode:${o.bootMode}` },
    instance_info: {},
    driver_internal_info: {},
  } as unknown as Node;
  const version = (await client.getCleanSteps(node, [])).hardware_manager_version;
  let t = Date.now();
  await client.executeCleanStep({ step: 'create_configuration', interface: 'raid', priority: 0, args: {} }, node, [], version, { timeoutMs: 600_000 }).catch(fail);
  log(`create_configuration in ${secs(Date.now() - t)}`);

  const httpRoot = o.run.net!.httpRoot;
  mkdirSync(join(httpRoot, 'images'), { recursive: true });
  symlinkSync(o.image.path, join(httpRoot, 'images/raid-os.qcow2'));
  const info = {
    id: `ferrum-e2e-raid-os-${o.bootMode}`,
    urls: [`${o.run.net!.httpUrl}/images/raid-os.qcow2`],
    disk_format: 'qcow2',
    container_format: 'bare',
    stream_raw_images: true,
    os_hash_algo: 'sha256',
    os_hash_value: o.image.sha256,
    checksum: null,
    image_type: 'whole-disk',
  } as unknown as ImageInfo;
  t = Date.now();
  const prepared = await client.prepareImage(info, null, { timeoutMs: 1_200_000 }).catch(fail);
  const message = prepared?.result ?? '';
  log(`prepare_image in ${secs(Date.now() - t)}: ${message}`);
  expect(message).toMatch(/written to device \/dev\/md\d+/);
  // A whole-disk image's "root uuid" is its disk identifier as IPA reads it (the 4 bytes at 440:
  // an MBR's signature; for a GPT, the protective MBR's); Ironic takes it from get_partition_uuids
  // (root_uuid_or_disk_id).
  const uuids = (await client.getPartitionUuids()) as Record<string, string | null | undefined>;
  const rootUuid = uuids['root uuid']!;
  expect(rootUuid).toMatch(/^0x[0-9a-f]{8}$/);
  expect(message).toContain(`root_uuid=${rootUuid}`);

  // What Ironic's agent deploy sends for software RAID, even with a whole-disk image.
  t = Date.now();
  await client
    .installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: uuids['efi system partition uuid'] ?? null, prep_boot_part_uuid: null, target_boot_mode: o.bootMode }, { timeoutMs: 1_200_000 })
    .catch(fail);
  log(`install_bootloader in ${secs(Date.now() - t)}`);
  await client.sync();
  return rootUuid;
}

export interface RaidBootOptions {
  run: StandaloneRun;
  /** Short (a tap's name has at most 15 characters): both, degraded. */
  name: string;
  mac: string;
  accel: Accel;
  firmware: Firmware;
  /** UEFI: the NVRAM to boot with. */
  varsFile?: string;
  /** The first disk, then the others. */
  disks: string[];
  image: WholeDiskImage;
  /** "2 out of 2" or "1 out of 2": the kernel's RAID-1 report. */
  mirrors: string;
  /** The image's root partition on the array: p1 or p2. */
  rootPartition: string;
  /** What the firmware and the boot loader print on the way. */
  bootPath: RegExp;
  log: (line: string) => void;
}

/** Boots the deployed OS from the disks; checks that its root is the array's partition. */
export async function bootFromRaid(o: RaidBootOptions): Promise<void> {
  const n = o.run.net!;
  const markerRe = new RegExp(`${PARTITION_OS_MARKER} root=(\\S+) dev=(\\S+)`);
  const tap = await n.addTap(`tap-${o.name}`);
  const vm = (o.run.vm = startVm({
    name: `ferrum-raid-${o.firmware}-${o.name}`, mac: o.mac, net: n, tap, disk: o.disks[0]!, extraDisks: o.disks.slice(1), firmware: o.firmware, varsFile: o.varsFile, accel: o.accel, memMiB: 1024, boot: 'disk',
    serialLog: join(o.run.runDir, `serial-${o.name}.log`), qemuLog: join(o.run.runDir, `qemu-${o.name}.log`),
  }));
  const at = await vm.waitForSerial(markerRe, 900_000).catch(o.run.fail);
  const serial = vm.serial();
  const [line, root, dev] = markerRe.exec(serial)!;
  o.log(`${o.name}: booted in ${secs(at - vm.startedAt)}: ${line}`);
  expect(root).toBe(`UUID=${o.image.rootUuid}`);
  expect(dev).toMatch(new RegExp(`^/dev/md[\\w/-]*${o.rootPartition}$`));
  expect(serial).toMatch(o.bootPath);
  // The kernel's md driver: the root array with both members, or degraded.
  expect(serial).toMatch(new RegExp(`md/raid1:md\\d+: active with ${o.mirrors} mirrors`));
  await vm.exited;
}
