// iSCSI exposure, end to end: a QEMU VM PXE-boots Ferrum's ramdisk with ipa-standalone=1 (no
// conductor), the test asks its agent for iscsi.start_iscsi_target, and then reads and writes the
// VM's disk over iSCSI from outside the VM. Linux-IO needs a kernel with target_core_mod and
// iscsi_target_mod; this host's kernel has neither, the ramdisk's Debian kernel has both, so this
// is the only place the target can be proven. The initiator is user space (libiscsi's tools and
// qemu-io with qemu's iSCSI driver): no iscsi_tcp needed on the host either.
//
// The VM sits on the bridge of the test's namespace (support/pxe-network.ts), which the test
// process cannot route to; a TCP forwarder inside the namespace (support/tcp-forward.mjs) carries
// the agent's API (9999) and the iSCSI portal (3260) to the bridge address.
//
// What is checked, on the VM's disk file as the host sees it:
//  - wipe_disk_metadata=true really wipes the GPT the test put on the disk before boot;
//  - the target answers an INQUIRY as LIO, LUN 1 reports the disk's size;
//  - a pattern the test wrote into the disk file before boot reads back over iSCSI;
//  - a pattern written over iSCSI lands in the disk file;
//  - image.install_bootloader tears the target down first (as IPA 7.x), so the portal is gone.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AgentHttpError } from '../../src/conductor/agent-client.js';
import { sh } from '../helpers/loop-device.js';
import { readAt } from '../integration/support.js';
import { chooseAccel } from './support/vm.js';
import { FORWARDED_ISCSI_PORT, RAMDISK_DIR, StandaloneRun } from './support/standalone-vm.js';

const DISK_BYTES = 5 * 2 ** 30; // the agent's install disk must be >= 4 GiB
const READ_AT = 2 * 2 ** 30; // a pattern the test puts there before boot
const WRITE_AT = 3 * 2 ** 30; // a pattern written over iSCSI
const PATTERN_BYTES = 1 << 20;
const QEMU_ISCSI_DRIVER = '/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so';

const run = new StandaloneRun('iscsi', { 'iscsi-inq': 'libiscsi-bin', 'iscsi-readcapacity16': 'libiscsi-bin', 'qemu-io': 'qemu-utils', sgdisk: 'gdisk' });
const log = (line: string) => console.log(`[e2e-iscsi ${new Date().toISOString().slice(11, 19)}] ${line}`);


function fill(file: string, offset: number, byte: number, length: number): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.alloc(length, byte), 0, length, offset);
  } finally {
    closeSync(fd);
  }
}

const allBytes = (buf: Buffer, byte: number) => buf.every((b) => b === byte);

async function tool(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const res = await sh(cmd, args);
  return { code: res.code, out: `${res.stdout}${res.stderr}` };
}

describe('Ferrum ramdisk: a disk exported over iSCSI (Linux-IO) from a VM', () => {
  beforeAll(async () => {
    if (!existsSync(QEMU_ISCSI_DRIVER)) throw new Error(`${QEMU_ISCSI_DRIVER} is missing: install qemu-block-extra (scripts/install-deps.sh --with-vm)`);
    await run.setUp();
  }, 600_000);
  afterAll(() => run.tearDown(), 120_000);

  test('start_iscsi_target exports the install disk as LUN 1; reads and writes reach the disk; install_bootloader removes it', async () => {
    const n = run.net!;
    const accel = await chooseAccel(join(RAMDISK_DIR, 'kernel'));
    log(`accelerator: ${accel.accel} (${accel.reason})`);

    // The disk: a GPT (which wipe_disk_metadata must remove) and a known pattern at 2 GiB.
    const disk = join(run.runDir, 'disk.raw');
    execFileSync('truncate', ['-s', String(DISK_BYTES), disk]);
    execFileSync('sgdisk', ['-n', '1:0:+100M', '-t', '1:8300', disk], { stdio: 'ignore' });
    fill(disk, READ_AT, 0x5a, PATTERN_BYTES);
    expect(allBytes(readAt(disk, 512, 512), 0), 'the test disk has a GPT header before boot').toBe(false);

    const s = await run.boot(disk, accel.accel);
    const client = s.client;
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);

    // A bad IQN is refused before anything happens.
    const bad = await client.execute('iscsi.start_iscsi_target', { iqn: 'not an iqn' }, { wait: true }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(AgentHttpError);
    expect((bad as AgentHttpError).status).toBe(400);
    expect(allBytes(readAt(disk, 512, 512), 0), 'a refused command must not touch the disk').toBe(false);

    const iqn = `iqn.2008-10.org.openstack:${randomUUID()}`;
    const started = Date.now();
    const result = await client.startIscsiTarget({ iqn, wipe_disk_metadata: true, portal_port: 3260 });
    log(`start_iscsi_target answered in ${Date.now() - started} ms: ${JSON.stringify(result)}`);
    expect(result).toEqual({ iscsi_target_iqn: iqn });

    // wipe_disk_metadata: no GPT at either end of the disk any more.
    expect(allBytes(readAt(disk, 0, 1 << 20), 0), 'the first MiB (MBR, primary GPT) is wiped').toBe(true);
    expect(allBytes(readAt(disk, DISK_BYTES - (1 << 20), 1 << 20), 0), 'the last MiB (backup GPT) is wiped').toBe(true);

    const url = `iscsi://${n.addr}:${FORWARDED_ISCSI_PORT}/${iqn}/1`;
    const inq = await tool('iscsi-inq', [url]);
    log(`iscsi-inq: ${inq.out.trim().split('\n').slice(0, 6).join(' | ')}`);
    expect(inq.code, inq.out).toBe(0);
    expect(inq.out).toMatch(/LIO-ORG/);
    const cap = await tool('iscsi-readcapacity16', [url]);
    expect(cap.code, cap.out).toBe(0);
    const total = /Total size:\s*(\d+)/.exec(cap.out)?.[1];
    expect(Number(total), cap.out).toBe(DISK_BYTES);

    // Reads: the pattern put into the disk file before boot, through LIO and iSCSI.
    const read = await tool('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x5a ${READ_AT} ${PATTERN_BYTES}`, url]);
    expect(read.code, read.out).toBe(0);
    expect(read.out).toMatch(new RegExp(`read ${PATTERN_BYTES}/${PATTERN_BYTES} bytes`));
    expect(read.out).not.toMatch(/Pattern verification failed/);
    // Writes: over iSCSI, into the disk file the host sees.
    expect(allBytes(readAt(disk, WRITE_AT, PATTERN_BYTES), 0)).toBe(true);
    const write = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0xc3 ${WRITE_AT} ${PATTERN_BYTES}`, '-c', 'flush', url]);
    expect(write.code, write.out).toBe(0);
    expect(allBytes(readAt(disk, WRITE_AT, PATTERN_BYTES), 0xc3), 'the bytes written over iSCSI are on the disk').toBe(true);

    // The same IQN twice is a clear error, and the first target keeps working.
    const again = await client.execute('iscsi.start_iscsi_target', { iqn }, { wait: true });
    expect(again.command_status).toBe('FAILED');
    expect(again.command_error).toMatchObject({ type: 'ISCSIError' });
    expect(JSON.stringify(again.command_error)).toMatch(/already exists/);
    expect((await tool('iscsi-inq', [url])).code).toBe(0);

    // install_bootloader first removes the target (as IPA 7.x); this disk has no ESP and no root,
    // so the boot loader part itself has nothing to do but fail, which is ignored here.
    await client.installBootloader({ root_uuid: null, target_boot_mode: 'uefi', ignore_bootloader_failure: true }, { timeoutMs: 300_000 });
    const gone = await tool('iscsi-inq', [url]);
    log(`iscsi-inq after install_bootloader: exit ${gone.code}: ${gone.out.trim().split('\n')[0]}`);
    expect(gone.code).not.toBe(0);
    // A new target can be made again afterwards, with a generated IQN in IPA's namespace.
    const second = await client.startIscsiTarget({});
    expect(second.iscsi_target_iqn).toMatch(/^iqn\.2008-10\.org\.openstack:[0-9a-f-]{36}$/);
    const inq2 = await tool('iscsi-inq', [`iscsi://${n.addr}:${FORWARDED_ISCSI_PORT}/${second.iscsi_target_iqn}/1`]);
    expect(inq2.code, inq2.out).toBe(0);
    run.passed = true;
  }, 1_800_000);
});
