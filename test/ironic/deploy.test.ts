// Deploys driven by the real Ironic 21.4.4: `PUT /v1/nodes/<id>/states/provision {"target": "active"}`
// (that's `baremetal node deploy`) with the direct deploy interface and image_download_source=http,
// in UEFI mode (capabilities boot_mode:uefi; vendor lenovo so fake-hardware skips the "disk" boot
// device), against the built agent as a real process whose only disk is a 4.5 GiB sparse loop
// device (the no-hint default takes the smallest disk >= 4 GiB). Ironic runs in a network
// namespace; the image server runs on the host end of the veth pair, so both Ironic (which checks
// the image URL with HEAD) and the agent reach it.
//
//   (a) whole-disk raw GPT image, sha256 (image_os_hash_algo/value)
//   (b) the same kind of image as qcow2 (image_disk_format qcow2), md5 (image_checksum)
//   (c) partition image (image_type=partition, root_gb 1) with a config drive in the deploy
//       request, checksum given as the URL of a checksums file
//
// Between deploys the node is undeployed ({"target": "deleted"}), which runs automated cleaning
// (erase_devices_metadata only: erase_devices is disabled so a 4.5 GiB shred does not dominate).
// The partition image in UEFI mode needs GRUB and vfat mounts, which this host cannot give the
// agent: (c) runs an agent with --ignore-bootloader-failure and checks the failure was logged and
// explained. Whole-disk images in UEFI mode get install_bootloader with root uuid 0x00000000, for
// which the agent skips GRUB (as IPA): (a) and (b) run without the flag.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { freePort, startAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { IronicServer, assertIronicInstalled, type IronicNode } from '../helpers/ironic.js';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { createNetNamespace, type NetNamespace } from '../helpers/netns.js';
import { suiteLifecycle, type Teardown } from '../helpers/suite-lifecycle.js';
import { blkidTags, readAt } from '../helpers/device-read.js';
import { startImageServer, type ImageServer } from '../helpers/image-server.js';
import {
  MiB,
  SECTOR,
  configDrive,
  ext4Image,
  md5,
  must,
  qcow2Of,
  sha256,
  wholeDiskImage,
  type ConfigDrive,
  type Ext4Image,
  type WholeDiskImage,
} from '../helpers/disk-images.js';


const DISK_MIB = 4608; // 4.5 GiB, sparse
const HEARTBEAT_TIMEOUT = 10;
const STATE_TIMEOUT_MS = 300_000;
const GPT_HEAD = 34 * SECTOR; // protective MBR, GPT header, partition entries
const GPT_TAIL = 33 * SECTOR; // backup entries and header

let ns: NetNamespace | null = null;
let ironic: IronicServer | null = null;
let disk: LoopDevice | null = null;
let agent: AgentProcess | null = null;
let images: ImageServer | null = null;
let workDir = '';
let nodeUuid = '';
const keptAgentDirs: string[] = [];

let imageA: WholeDiskImage;
let imageB: WholeDiskImage;
let qcowB: Buffer;
let rootC: Ext4Image;
let cdC: ConfigDrive;

// ---------------------------------------------------------------------------------------- helpers

async function agentLog(): Promise<LogLine[]> {
  return agent ? await agent.logLines() : [];
}

async function diagnostics(): Promise<string> {
  const lines = (await agent?.log().catch(() => ''))?.split('\n').slice(-40).join('\n') ?? '';
  return [`--- agent log (last lines)\n${lines}`, ironic ? await ironic.tail('ironic-conductor', 60) : ''].join('\n');
}

function waitForState(state: string, timeoutMs = STATE_TIMEOUT_MS): Promise<IronicNode> {
  return ironic!.api.waitForProvisionState(nodeUuid, state, { timeoutMs, onFailure: diagnostics });
}

async function startTheAgent(extra: string[]): Promise<AgentProcess> {
  const port = await freePort();
  return startAgent({
    host: ns!.hostAddr,
    port,
    args: [
      '--api-url', ironic!.apiUrl,
      '--advertise-port', String(port),
      '--interfaces', ns!.hostIf,
      '--devices', disk!.path,
      '--power', 'none',
      '--lookup-max-interval', '2',
      '--cmdline-file', '/dev/null',
      '--debug',
      ...extra,
    ],
  });
}

/** The device's bytes equal the image's in [from, to) (compared in 8 MiB pieces). */
function deviceMatches(img: Buffer, from: number, to: number): boolean {
  for (let off = from; off < to; off += 8 * MiB) {
    const n = Math.min(8 * MiB, to - off);
    if (!readAt(disk!.path, off, n).equals(img.subarray(off, off + n))) return false;
  }
  return true;
}

async function partitionsAppear(count: number): Promise<void> {
  await must('partprobe', [disk!.path]);
  const deadline = Date.now() + 10_000;
  while ((await sh('test', ['-b', `${disk!.path}p${count}`])).code !== 0) {
    if (Date.now() > deadline) throw new Error(`${disk!.path}p${count} did not appear`);
    await sleep(100);
  }
}

interface SfdiskPart {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
}

async function sfdisk(): Promise<{ label: string; parts: SfdiskPart[] }> {
  const t = (JSON.parse(await must('sfdisk', ['--json', disk!.path])) as { partitiontable: { label: string; partitions?: SfdiskPart[] } }).partitiontable;
  return { label: t.label, parts: t.partitions ?? [] };
}

/** A file's bytes out of an ext4 filesystem (image file or partition), with debugfs. */
async function ext4File(dev: string, path: string): Promise<Buffer> {
  const out = join(workDir, `dump-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  await must('debugfs', ['-R', `dump -p ${path} ${out}`, dev]);
  const data = await readFile(out);
  await rm(out, { force: true });
  return data;
}

/** The lines of the conductor log about this node from `mark` (a length of the log) on. */
async function conductorLogSince(mark: number): Promise<string> {
  return (await ironic!.conductorLog()).slice(mark);
}

/** What Ironic sent and got for one agent command (its debug log of the agent client). */
function agentCommandResult(log: string, method: string): string | null {
  const re = new RegExp(`Agent command ${method.replace('.', '\\.')} for node ${nodeUuid} returned result (.*), error (.*), HTTP status code`);
  const hits = log.split('\n').map((l) => re.exec(l)).filter((m): m is RegExpExecArray => m !== null);
  return hits.length ? hits.at(-1)![1]! : null;
}

/** Sets instance_info (Ironic clears it on undeploy) and asks for the deploy. */
async function deploy(instanceInfo: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<IronicNode> {
  await ironic!.api.patchNode(
    nodeUuid,
    Object.entries(instanceInfo).map(([k, v]) => ({ op: 'add' as const, path: `/instance_info/${k}`, value: v })),
  );
  await ironic!.api.setProvisionState(nodeUuid, 'active', extra);
  const node = await waitForState('active');
  expect(node.last_error).toBeNull();
  return node;
}

/** Back to available from active or deploy failed: undeploy, which runs cleaning again. */
async function undeploy(): Promise<void> {
  const node = await ironic!.api.getNode(nodeUuid);
  if (node.provision_state === 'available') return;
  if (['active', 'deploy failed'].includes(node.provision_state)) await ironic!.api.setProvisionState(nodeUuid, 'deleted');
  const done = await waitForState('available');
  expect(done.last_error).toBeNull();
}

/** Checks common to the whole-disk deploys. */
async function expectWholeDisk(img: WholeDiskImage, node: IronicNode, logMark: number): Promise<void> {
  // The image's bytes, except the GPT structures `sgdisk -e` rewrote to move the backup table to
  // the end of this bigger disk.
  expect(deviceMatches(img.raw, GPT_HEAD, img.raw.length - GPT_TAIL), 'the device holds the image past the GPT headers').toBe(true);
  expect((await sh('sgdisk', ['-v', disk!.path])).stdout).toMatch(/No problems found/);
  const lastSector = readAt(disk!.path, disk!.sizeBytes - SECTOR, SECTOR);
  expect(lastSector.subarray(0, 8).toString('latin1'), 'backup GPT header at the end of the disk').toBe('EFI PART');

  const table = await sfdisk();
  expect(table.label).toBe('gpt');
  expect(table.parts.map((p) => [p.start * SECTOR, p.size * SECTOR, p.uuid?.toLowerCase()])).toEqual([[img.partOffset, img.partSize, img.partUuid]]);
  await partitionsAppear(1);
  expect(await must('debugfs', ['-R', 'cat /marker', `${disk!.path}p1`])).toBe(img.fs.marker);
  expect(await blkidTags(`${disk!.path}p1`)).toMatchObject({ TYPE: 'ext4', UUID: img.fs.uuid });

  // Ironic recorded the disk identifier from get_partition_uuids (0x + MBR signature, IPA's).
  expect(node.driver_internal_info['root_uuid_or_disk_id']).toBe(img.diskSignature);
  expect(node.driver_internal_info['is_whole_disk_image']).toBe(true);
  const log = await conductorLogSince(logMark);
  expect(agentCommandResult(log, 'standby.get_partition_uuids')).toContain(`'root uuid': '${img.diskSignature}'`);
  // UEFI: the conductor asked for the boot loader, with the disk id and no ESP; the agent said done.
  expect(log).toContain(`Installing the bootloader for node ${nodeUuid} on partition ${img.diskSignature}, EFI system partition None`);
  expect(agentCommandResult(log, 'image.install_bootloader') ?? log).not.toMatch(/FAILED/);
  expect(log).toContain(`Local boot successfully configured for node ${nodeUuid}`);
}

// ------------------------------------------------------------------------------------ lifecycle

/** If the test process exits without afterAll (crash, runner killed): at least free the disk and the agent. */
function emergencyCleanup(): void {
  if (agent && agent.proc.exitCode === null) agent.proc.kill('SIGKILL');
  disk?.detachNow();
}

async function setUp(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the Ironic deploy tests need root (network namespaces, loop devices)');
  await assertIronicInstalled();
  for (const tool of ['sgdisk', 'sfdisk', 'partprobe', 'blkid', 'mke2fs', 'debugfs', 'qemu-img', 'genisoimage', 'isoinfo', 'losetup', 'ip']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is missing: run scripts/install-deps.sh`);
  }
  workDir = await mkdtemp(join(tmpdir(), 'ferrum-deploy-'));
  [imageA, imageB, rootC] = await Promise.all([
    wholeDiskImage(workDir, 'a', { sizeMiB: 128, label: 'gpt', marker: 'ferrum deploy (a): whole-disk raw\n' }),
    wholeDiskImage(workDir, 'b', { sizeMiB: 96, label: 'gpt', marker: 'ferrum deploy (b): whole-disk qcow2\n' }),
    ext4Image(workDir, 'c', 64, 'ferrum deploy (c): partition image\n'),
  ]);
  qcowB = await qcow2Of(workDir, 'b', imageB.raw);

  ns = await createNetNamespace();
  cdC = await configDrive(workDir, 'cd-c', { uuid: 'ferrum-deploy-c', hostname: 'ferrum-c', name: 'ferrum-c', meta: { test: ns.name } });
  images = await startImageServer(ns.hostAddr);
  ironic = await IronicServer.start({
    bindAddr: ns.nsAddr,
    execPrefix: ns.execPrefix,
    ramdiskHeartbeatTimeout: HEARTBEAT_TIMEOUT,
    // Cleaning wipes metadata only: shredding 4.5 GiB twice per cycle would dominate the run.
    eraseDevicesPriority: 0,
  });

  disk = await createLoopDevice(DISK_MIB);
  const node = await ironic.api.createNode({
    name: `ferrum-deploy-${ns.name}`,
    properties: { capabilities: 'boot_mode:uefi', local_gb: 4 },
  });
  nodeUuid = node.uuid;
  await ironic.api.createPort(nodeUuid, ns.hostMac);
  await ironic.api.setProvisionState(nodeUuid, 'manage');
  await waitForState('manageable');

  agent = await startTheAgent([]);
  await ironic.api.setProvisionState(nodeUuid, 'provide');
  await waitForState('available');
}

async function tearDown({ step, keep }: Teardown): Promise<void> {
  if (agent) keptAgentDirs.push(dirname(agent.logFile));
  await step(async () => agent?.stop());
  await step(async () => ironic?.stop());
  await step(async () => images?.close());
  await step(async () => {
    if (disk && (await sh('test', ['-b', `${disk.path}p1`])).code === 0) await sh('partx', ['-d', disk.path]);
  });
  await step(async () => disk?.destroy());
  await step(async () => ns?.destroy());
  if (keep) {
    console.error(`kept for inspection: agent ${keptAgentDirs.join(', ') || '-'}, Ironic ${ironic?.stateDir ?? '-'}, images ${workDir}`);
  } else {
    for (const d of keptAgentDirs) await step(async () => rm(d, { recursive: true, force: true }));
    await step(async () => ironic?.removeStateDir());
    await step(async () => workDir && rm(workDir, { recursive: true, force: true }));
  }
}

suiteLifecycle({ setUp, tearDown, emergency: emergencyCleanup });

// ---------------------------------------------------------------------------------------- tests

describe('deploys driven by Ironic 21.4.4 (direct, UEFI, http images)', () => {
  test('(a) a whole-disk raw image (sha256) reaches active; the disk holds it; Ironic recorded the disk id', async () => {
    const url = images!.add('a.img', imageA.raw);
    const logMark = (await ironic!.conductorLog()).length;
    const node = await deploy({
      image_source: url,
      image_os_hash_algo: 'sha256',
      image_os_hash_value: sha256(imageA.raw),
      image_type: 'whole-disk',
    });
    await expectWholeDisk(imageA, node, logMark);
    // Ironic checked the URL itself (HEAD) before handing it to the agent, which downloaded it.
    const reqs = images!.requestsFor('a.img');
    expect(reqs.filter((r) => r.method === 'HEAD').length).toBeGreaterThanOrEqual(1);
    expect(reqs.filter((r) => r.method === 'GET' && r.outcome === 'complete').length).toBeGreaterThanOrEqual(1);
    // The write_image deploy step ran in the agent, with the image_info Ironic built.
    const write = (await agentLog()).filter((l) => l.msg === 'writing image');
    expect(write.at(-1)).toMatchObject({ device: disk!.path, urls: [url], algorithm: 'sha256', format: 'raw', compression: null });
  });

  test('(b) the same kind of image as qcow2 (image_disk_format qcow2, md5 image_checksum) reaches active', async () => {
    await undeploy();
    const url = images!.add('b.qcow2', qcowB);
    const logMark = (await ironic!.conductorLog()).length;
    const node = await deploy({
      image_source: url,
      image_checksum: md5(qcowB),
      image_disk_format: 'qcow2',
      image_type: 'whole-disk',
    });
    await expectWholeDisk(imageB, node, logMark);
    const write = (await agentLog()).filter((l) => l.msg === 'writing image');
    expect(write.at(-1)).toMatchObject({ urls: [url], algorithm: 'md5', format: 'qcow2', virtual_size: imageB.raw.length });
  });

  test('(c) a partition image with a config drive (checksum file URL) reaches active: ESP, config-2, root', async () => {
    await undeploy();
    // This deploy needs GRUB in a vfat ESP, which this host cannot give: an agent that ignores
    // boot loader failures, as an operator would set ipa-ignore-bootloader-failure.
    keptAgentDirs.push(dirname(agent!.logFile));
    await agent!.stop();
    agent = await startTheAgent(['--ignore-bootloader-failure']);

    const url = images!.add('images/c-root.img', rootC.raw);
    const sums = [`${sha256('something else')}  other.img`, `${sha256(rootC.raw)}  c-root.img`, ''].join('\n');
    const sumsUrl = images!.add('images/SHA256SUMS', Buffer.from(sums));
    const logMark = (await ironic!.conductorLog()).length;
    const node = await deploy(
      { image_source: url, image_checksum: sumsUrl, image_type: 'partition', root_gb: 1 },
      { configdrive: cdC.encoded },
    );

    // IPA's layout for UEFI: ESP (200 MiB) | config drive (its size in MiB) | root (root_gb) last.
    const cdMiB = Math.ceil(cdC.iso.length / MiB);
    const table = await sfdisk();
    expect(table.label).toBe('gpt');
    expect(table.parts.map((p) => [p.node, (p.start * SECTOR) / MiB, (p.size * SECTOR) / MiB, p.type])).toEqual([
      [`${disk!.path}p1`, 1, 200, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'],
      [`${disk!.path}p2`, 201, cdMiB, '0FC63DAF-8483-4772-8E79-3D69D8477DE4'],
      [`${disk!.path}p3`, 201 + cdMiB, 1024, '0FC63DAF-8483-4772-8E79-3D69D8477DE4'],
    ]);
    await partitionsAppear(3);
    const [esp, cd, root] = await Promise.all([1, 2, 3].map((n) => blkidTags(`${disk!.path}p${n}`)));
    expect(esp).toMatchObject({ TYPE: 'vfat', LABEL: 'efi-part' });
    expect(cd).toMatchObject({ TYPE: 'iso9660', LABEL: 'config-2' });
    expect(root).toMatchObject({ TYPE: 'ext4', UUID: rootC.uuid });

    // The root filesystem, and the config drive Ironic passed on: the ISO byte for byte, its meta_data.
    // (install_bootloader mounted it to look for GRUB, so its superblock changed: compare files.)
    expect(await must('debugfs', ['-R', 'cat /marker', `${disk!.path}p3`])).toBe(rootC.marker);
    expect(sha256(await ext4File(`${disk!.path}p3`, '/random.bin'))).toBe(sha256(await ext4File(join(workDir, 'c.ext4'), '/random.bin')));
    expect((await sh('e2fsck', ['-fn', `${disk!.path}p3`])).code, 'the root filesystem is clean').toBe(0);
    expect(readAt(`${disk!.path}p2`, 0, cdC.iso.length).equals(cdC.iso)).toBe(true);
    expect(await must('isoinfo', ['-R', '-i', `${disk!.path}p2`, '-x', '/openstack/latest/meta_data.json'])).toBe(cdC.metaData);
    expect(await must('isoinfo', ['-d', '-i', `${disk!.path}p2`])).toMatch(/^Volume id:\s*config-2$/m);

    // get_partition_uuids: the root filesystem's UUID and the ESP's, which Ironic recorded and
    // handed to install_bootloader.
    expect(node.driver_internal_info['root_uuid_or_disk_id']).toBe(rootC.uuid);
    expect(node.driver_internal_info['is_whole_disk_image']).toBe(false);
    const log = await conductorLogSince(logMark);
    const uuids = agentCommandResult(log, 'standby.get_partition_uuids');
    expect(uuids).toContain(`'root uuid': '${rootC.uuid}'`);
    expect(uuids).toContain(`'efi system partition uuid': '${esp!['UUID']}'`);
    // (Ironic's log masks the value of any key named configdrive.)
    expect(uuids).toContain(`'partitions': {'efi system partition': '${disk!.path}p1', 'configdrive': '***', 'root': '${disk!.path}p3'}`);
    expect(log).toContain(`Installing the bootloader for node ${nodeUuid} on partition ${rootC.uuid}, EFI system partition ${esp!['UUID']}`);

    // The boot loader could not be installed here; the agent said why, and went on as told.
    const alog = await agentLog();
    const explained = alog.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Error setting up bootloader. Error '));
    expect(explained.length, 'the boot loader failure is logged').toBeGreaterThanOrEqual(1);
    expect(explained.at(-1)!.msg!.length, 'with an explanation').toBeGreaterThan('Error setting up bootloader. Error '.length + 20);
    expect(alog.some((l) => typeof l.msg === 'string' && l.msg.startsWith('ignoring the boot loader failure (ignore_bootloader_failure): '))).toBe(true);
    expect(images!.requestsFor('images/SHA256SUMS').some((r) => r.method === 'GET' && r.status === 200)).toBe(true);
  });

  test('undeploy: cleaning wipes the deployed disk and the node is available again', async () => {
    await undeploy();
    const print = await sh('sgdisk', ['-p', disk!.path]);
    expect(print.stdout.split('\n').filter((l) => /^\s+\d+\s+\d+\s+\d+\s/.test(l))).toEqual([]);
    expect((await sh('wipefs', ['-n', disk!.path])).stdout.trim()).toBe('');
    expect((await ironic!.api.getNode(nodeUuid)).provision_state).toBe('available');
  });
});
