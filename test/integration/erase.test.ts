// The erase steps of a real agent process against real loop devices (agent-protocol.md §9):
// erase_devices_metadata (clean and deploy) removes partition tables, both GPT headers and every
// filesystem / RAID signature; erase_devices overwrites the whole disk as driver_internal_info asks;
// version mismatches and unknown steps fail as IPA's do. Safety: the agent only ever gets
// `--devices <loop device made here>`; a second loop device proves nothing outside the list is
// touched, and the non-ramdisk refusal is shown where nothing could be written even if it failed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { AgentClient, AgentCommandError } from '../../src/conductor/agent-client.js';
import { LocalHost } from '../../src/agent/host/host.js';
import { AgentError } from '../../src/agent/errors.js';
import { silentLogger } from '../../src/agent/log.js';
import type { StepRequest } from '../../src/protocol/index.js';
import {
  BASE_ARGS,
  commandsRun,
  destroyLoop,
  deviceHash,
  findPattern,
  nonZeroBytes,
  partitionNodes,
  prepareDisk,
  readAt,
  run,
  sgdiskPartitions,
  tempDir,
  wipefsSignatures,
  writeAt,
  pattern,
  writeFixture,
  type PreparedDisk,
  removeTempDirs,
  stopAgent,
} from './support.js';

const MiB = 1024 * 1024;
const VERSIONS = { generic_hardware_manager: '1.1' };
const node = (driverInternalInfo: Record<string, unknown> = {}) => ({
  uuid: '0e1d2c3b-4a59-4867-9786-a5b4c3d2e1f0',
  driver_internal_info: driverInternalInfo,
});
// Steps as Ironic sends them back: the listed step plus its extra keys (StepRequest allows any).
const stepRequest = (s: StepRequest & Record<string, unknown>): StepRequest => s;
const metadataStep = stepRequest({ step: 'erase_devices_metadata', interface: 'deploy', priority: 99, reboot_requested: false, abortable: true });
const eraseStep = stepRequest({ step: 'erase_devices', interface: 'deploy', priority: 10, reboot_requested: false, abortable: true });
const deployMetadataStep: StepRequest = { step: 'erase_devices_metadata', interface: 'deploy', priority: 0, args: {} };

/** What blkid finds when probing a byte range of a device (exit 2 = nothing). */
async function probeRange(dev: string, start: number, size: number): Promise<{ code: number; out: string }> {
  const res = await sh('blkid', ['-p', '-O', String(start), '-S', String(size), dev]);
  return { code: res.code, out: res.stdout.trim() };
}

async function expectPreparedDisk(dev: LoopDevice, disk: PreparedDisk): Promise<void> {
  // Sanity: the fixture really carries what the erase must remove, and the probes can see it.
  expect(await sgdiskPartitions(dev.path)).toHaveLength(4);
  expect(partitionNodes(dev)).toHaveLength(4);
  expect((await wipefsSignatures(dev.path)).join('\n')).toMatch(/gpt[\s\S]*PMBR|PMBR[\s\S]*gpt/);
  for (const [i, p] of disk.partitions.entries()) {
    expect((await wipefsSignatures(`${dev.path}p${i + 1}`)).join('\n')).toContain(p.fstype);
    const probe = await probeRange(dev.path, p.start, p.size);
    expect(probe.out).toContain(`TYPE="${p.fstype}"`);
  }
  expect(readAt(dev.path, 512, 8).toString('latin1')).toBe('EFI PART');
  expect(readAt(dev.path, dev.sizeBytes - 512, 8).toString('latin1')).toBe('EFI PART');
  expect(await findPattern(dev.path)).toBe(disk.patternOffset);
}

async function expectMetadataGone(dev: LoopDevice, disk: PreparedDisk): Promise<void> {
  expect(await sgdiskPartitions(dev.path)).toEqual([]);
  expect(await wipefsSignatures(dev.path)).toEqual([]);
  const blkid = await sh('blkid', ['-p', dev.path]);
  expect(blkid.code, blkid.stdout).toBe(2); // nothing found
  expect(blkid.stdout.trim()).toBe('');
  // No stale partition nodes, and nothing left where the partitions were.
  expect(partitionNodes(dev)).toEqual([]);
  for (const p of disk.partitions) {
    const probe = await probeRange(dev.path, p.start, p.size);
    expect(probe, `${p.fstype} at ${p.start}`).toEqual({ code: 2, out: '' });
  }
  // Primary GPT header (LBA 1), backup header (last LBA) and the protective MBR signature.
  expect(readAt(dev.path, 512, 512).equals(Buffer.alloc(512))).toBe(true);
  expect(readAt(dev.path, dev.sizeBytes - 512, 512).equals(Buffer.alloc(512))).toBe(true);
  expect(readAt(dev.path, 510, 2).equals(Buffer.alloc(2))).toBe(true);
}

afterAll(removeTempDirs);

describe('erase steps on loop devices', () => {
  let disk: LoopDevice | undefined;
  let bystander: LoopDevice | undefined;
  let bystanderHash = '';
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;

  beforeAll(async () => {
    disk = await createLoopDevice(256);
    bystander = await createLoopDevice(64);
    // The bystander: a partitioned disk with data that no step may change.
    await run('sgdisk', ['-n', '1:0:+16M', '-n', '2:0:0', bystander.path]);
    await run('partprobe', [bystander.path]);
    await run('mkfs.ext4', ['-q', '-F', `${bystander.path}p1`]);
    writeAt(bystander, 40 * MiB, pattern(MiB));
    await run('sync', []);
    bystanderHash = await deviceHash(bystander.path);

    agent = await startAgent({ args: [...BASE_ARGS, '--devices', disk.path, '--debug'], port: await freePort() });
    client = new AgentClient({ url: agent.url, pollIntervalMs: 100 });
  });

  afterAll(async () => {
    await client?.close();
    await stopAgent(agent);
    await destroyLoop(disk);
    await destroyLoop(bystander);
  });

  it('lists the generic manager steps as IPA', async () => {
    const clean = await client!.getCleanSteps(node(), []);
    expect(clean.hardware_manager_version).toEqual(VERSIONS);
    expect(clean.clean_steps['GenericHardwareManager']).toEqual(
      expect.arrayContaining([
        { step: 'erase_devices', priority: 10, interface: 'deploy', reboot_requested: false, abortable: true },
        { step: 'erase_devices_metadata', priority: 99, interface: 'deploy', reboot_requested: false, abortable: true },
      ]),
    );
    const deploy = await client!.getDeploySteps(node(), []);
    expect(deploy.hardware_manager_version).toEqual(VERSIONS);
    expect(deploy.deploy_steps['GenericHardwareManager']).toEqual(
      expect.arrayContaining([expect.objectContaining({ step: 'erase_devices_metadata', priority: 0, interface: 'deploy' })]),
    );
  });

  it('clean step erase_devices_metadata removes partitions, both GPTs and all signatures', async () => {
    const prepared = await prepareDisk(disk!);
    await expectPreparedDisk(disk!, prepared);

    const result = await client!.executeCleanStep(metadataStep, node(), [], VERSIONS);
    expect(result).toEqual({ clean_result: null, clean_step: metadataStep });
    const last = (await client!.listCommands()).at(-1)!;
    expect(last).toMatchObject({ command_name: 'execute_clean_step', command_status: 'SUCCEEDED', command_error: null });

    await expectMetadataGone(disk!, prepared);
    // Metadata only: the data area is left alone (that is erase_devices' job).
    expect(await findPattern(disk!.path)).toBe(prepared.patternOffset);
    // Partitions first (reverse name order), then the disk: one wipefs, which takes them in order.
    const wipefs = (await commandsRun(agent!)).filter((c) => c.cmd === 'wipefs').at(-1)!;
    expect(wipefs.args).toEqual(['--force', '--all', ...[4, 3, 2, 1].map((n) => `${disk!.path}p${n}`), disk!.path]);
  });

  it('deploy step erase_devices_metadata does the same', async () => {
    const prepared = await prepareDisk(disk!);
    await expectPreparedDisk(disk!, prepared);
    const result = await client!.executeDeployStep(deployMetadataStep, node(), [], VERSIONS);
    expect(result).toEqual({ deploy_result: null, deploy_step: deployMetadataStep });
    const last = (await client!.listCommands()).at(-1)!;
    expect(last).toMatchObject({ command_name: 'execute_deploy_step', command_status: 'SUCCEEDED' });
    await expectMetadataGone(disk!, prepared);
  });

  it('erase_devices overwrites the whole device and leaves zeros by default', async () => {
    const prepared = await prepareDisk(disk!);
    await expectPreparedDisk(disk!, prepared);
    const result = await client!.executeCleanStep(eraseStep, node(), [], VERSIONS);
    expect(result).toEqual({ clean_result: { [disk!.path]: null }, clean_step: eraseStep });
    expect(await findPattern(disk!.path)).toBe(-1);
    expect(await nonZeroBytes(disk!.path)).toBe(0);
    const shred = (await commandsRun(agent!)).filter((c) => c.cmd === 'shred').at(-1)!;
    expect(shred.args).toEqual(['--force', '--zero', '--verbose', '--iterations', '1', disk!.path]);
  });

  it('erase_devices honours agent_erase_devices_iterations and agent_erase_devices_zeroize', async () => {
    // 0 random passes + zeroize: a single pass of zeros.
    writeAt(disk!, 100 * MiB, pattern(MiB));
    await run('sync', []);
    expect(await findPattern(disk!.path)).toBe(100 * MiB);
    await client!.executeCleanStep(eraseStep, node({ agent_erase_devices_iterations: 0, agent_erase_devices_zeroize: true }), [], VERSIONS);
    expect(await nonZeroBytes(disk!.path)).toBe(0);
    let shred = (await commandsRun(agent!)).filter((c) => c.cmd === 'shred').at(-1)!;
    expect(shred.args).toEqual(['--force', '--zero', '--verbose', '--iterations', '0', disk!.path]);

    // 2 random passes, no zeroing: random data remains, the pattern is gone.
    writeAt(disk!, 100 * MiB, pattern(MiB));
    await run('sync', []);
    await client!.executeCleanStep(eraseStep, node({ agent_erase_devices_iterations: 2, agent_erase_devices_zeroize: false }), [], VERSIONS);
    expect(await findPattern(disk!.path)).toBe(-1);
    expect(await nonZeroBytes(disk!.path)).toBeGreaterThan(disk!.sizeBytes * 0.9);
    shred = (await commandsRun(agent!)).filter((c) => c.cmd === 'shred').at(-1)!;
    expect(shred.args).toEqual(['--force', '--verbose', '--iterations', '2', disk!.path]);
  });

  it('answers CLEAN_VERSION_MISMATCH when clean_version or deploy_version differs, touching nothing', async () => {
    const prepared = await prepareDisk(disk!);
    const before = await deviceHash(disk!.path);
    const cases: Array<() => Promise<unknown>> = [
      () => client!.executeCleanStep(metadataStep, node(), [], { generic_hardware_manager: '1.0' }),
      () => client!.executeCleanStep(eraseStep, node(), [], { generic_hardware_manager: '1.1', other_manager: '3' }),
      () => client!.executeDeployStep(deployMetadataStep, node(), [], { generic_hardware_manager: '9.9' }),
    ];
    for (const run of cases) {
      const err = await run().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AgentCommandError);
      const r = (err as AgentCommandError).result;
      expect(r.command_status).toBe('CLEAN_VERSION_MISMATCH');
      expect(r.command_result).toBeNull();
      expect(r.command_error).toMatchObject({
        type: 'VersionMismatch',
        code: 409,
        message: 'Hardware managers version mismatch, reload agent with correct version',
      });
      expect(r.command_error!.details).toContain('generic_hardware_manager');
    }
    expect(await deviceHash(disk!.path)).toBe(before);
    await expectPreparedDisk(disk!, prepared);
  });

  it('fails a step no hardware manager has with HardwareManagerMethodNotFound', async () => {
    const before = await deviceHash(disk!.path);
    for (const run of [
      () => client!.executeCleanStep({ step: 'erase_everything_now', interface: 'deploy', priority: 1 }, node(), [], VERSIONS),
      () => client!.executeDeployStep({ step: 'install_everything_now', interface: 'deploy', priority: 80 }, node(), [], VERSIONS),
    ]) {
      const err = (await run().catch((e: unknown) => e)) as AgentCommandError;
      expect(err).toBeInstanceOf(AgentCommandError);
      expect(err.result.command_status).toBe('FAILED');
      expect(err.result.command_error).toEqual({
        type: 'HardwareManagerMethodNotFound',
        code: 500,
        message: 'No HardwareManager found to handle method',
        details: expect.stringMatching(/^Could not find method: (erase_everything_now|install_everything_now)$/),
      });
    }
    expect(await deviceHash(disk!.path)).toBe(before);
  });

  it('never touched the device outside --devices', async () => {
    expect(await deviceHash(bystander!.path)).toBe(bystanderHash);
    expect((await wipefsSignatures(bystander!.path)).join('\n')).toContain('gpt');
    expect(partitionNodes(bystander!)).toHaveLength(2);
    const touched = (await commandsRun(agent!)).flatMap((c) => c.args).filter((a) => a === bystander!.path || a.startsWith(`${bystander!.path}p`));
    expect(touched).toEqual([]);
  });
});

describe('the destructive-work guard (LocalHost.assertMayDestroy, in process, nothing written)', () => {
  let a: LoopDevice | undefined;
  let b: LoopDevice | undefined;

  beforeAll(async () => {
    a = await createLoopDevice(32);
    b = await createLoopDevice(32);
    await run('sgdisk', ['-n', '1:0:0', a.path]);
    await run('partprobe', [a.path]);
    await run('sgdisk', ['-n', '1:0:0', b.path]);
    await run('partprobe', [b.path]);
  });

  afterAll(async () => {
    await destroyLoop(a);
    await destroyLoop(b);
  });

  const hostWith = (sysRoot: string, devices: string[] | null) =>
    new LocalHost({ sysRoot, devices, power: 'none', log: silentLogger() });

  async function refusal(p: Promise<unknown>): Promise<AgentError> {
    const err = await p.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).type).toBe('UnsafeHostError');
    expect((err as AgentError).code).toBe(403);
    return err as AgentError;
  }

  it('refuses every device on a host whose root is a disk filesystem, without --devices', async () => {
    for (const mounts of [
      '/dev/vda / ext4 rw,relatime 0 0\n',
      'rootfs / rootfs rw 0 0\n/dev/sda2 / xfs rw 0 0\n', // a disk mounted over the initramfs
      'tmpfs /run tmpfs rw 0 0\n', // no root entry at all
    ]) {
      const root = await tempDir('ferrum-sysroot-');
      await writeFixture(root, 'proc/mounts', mounts);
      const host = hostWith(root, null);
      expect(await host.isDeployRamdisk()).toBe(false);
      const err = await refusal(host.assertMayDestroy('/dev/vda'));
      expect(err.details).toMatch(/not a deploy ramdisk/);
      await refusal(host.openForWrite('/dev/sda'));
      await writeFixture(root, 'sys/fs/pstore/dmesg-efi-1', 'x');
      await refusal(host.removeSystemFile('/sys/fs/pstore/dmesg-efi-1'));
      expect(existsSync(`${root}/sys/fs/pstore/dmesg-efi-1`)).toBe(true);
    }
    // An unreadable /proc/mounts is no ramdisk either.
    await refusal(hostWith(await tempDir('ferrum-sysroot-'), null).assertMayDestroy('/dev/vda'));
  });

  it('allows destructive work in a deploy ramdisk (root on rootfs/tmpfs)', async () => {
    for (const mounts of ['rootfs / rootfs rw 0 0\n', 'none / tmpfs rw 0 0\n', '/dev/root / ext4 ro 0 0\ntmpfs / tmpfs rw 0 0\n']) {
      const root = await tempDir('ferrum-sysroot-');
      await writeFixture(root, 'proc/mounts', mounts);
      const host = hostWith(root, null);
      expect(await host.isDeployRamdisk()).toBe(true);
      await expect(host.assertMayDestroy('/dev/sda')).resolves.toBeUndefined();
    }
  });

  it('with --devices allows exactly the listed devices and their partitions', async () => {
    const host = hostWith('/', [a!.path]);
    await expect(host.assertMayDestroy(a!.path)).resolves.toBeUndefined();
    await expect(host.assertMayDestroy(`${a!.path}p1`)).resolves.toBeUndefined();
    for (const other of [b!.path, `${b!.path}p1`, '/dev/vda', '/dev/ferrum-no-such-device', `${a!.path}p9`]) {
      const err = await refusal(host.assertMayDestroy(other));
      expect(err.details).toContain('is not one of the devices the agent may touch');
    }
    // The list wins over a ramdisk-looking root.
    const root = await tempDir('ferrum-sysroot-');
    await writeFixture(root, 'proc/mounts', 'rootfs / rootfs rw 0 0\n');
    await refusal(hostWith(root, ['/dev/ferrum-listed']).assertMayDestroy('/dev/sda'));
  });
});

describe('the agent process refuses destructive steps on a non-ramdisk host without --devices', () => {
  let agent: AgentProcess | undefined;
  let devBefore: string[] = [];

  afterAll(async () => {
    await stopAgent(agent);
  });

  it('fails erase steps with UnsafeHostError before running any disk tool', async () => {
    // Two independent safety nets: the agent's guard (root "filesystem" is ext4 in the --sys-root
    // fixture), and a private mount namespace whose /dev is an empty tmpfs, so no block device node
    // exists for anything to open even if the guard were broken.
    const root = await tempDir('ferrum-sysroot-');
    await writeFixture(root, 'proc/mounts', 'sysfs /sys sysfs rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\n');
    devBefore = readdirSync('/dev').sort();
    const isolate = [
      'unshare', '--mount', '--propagation', 'private', '--',
      'sh', '-c',
      'mount -t tmpfs -o mode=755 ferrum-empty-dev /dev && mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && ' +
        'mknod -m 444 /dev/urandom c 1 9 && [ -z "$(find /dev -type b)" ] && exec "$@"',
      'sh',
    ];
    agent = await startAgent({ args: [...BASE_ARGS, '--sys-root', root, '--debug'], port: await freePort(), wrapper: isolate });
    const client = new AgentClient({ url: agent.url, pollIntervalMs: 100 });
    try {
      const attempts: Array<() => Promise<unknown>> = [
        () => client.executeCleanStep(metadataStep, node(), [], VERSIONS),
        () => client.executeCleanStep(eraseStep, node(), [], VERSIONS),
        () => client.executeDeployStep(deployMetadataStep, node(), [], VERSIONS),
      ];
      for (const attempt of attempts) {
        const err = (await attempt().catch((e: unknown) => e)) as AgentCommandError;
        expect(err).toBeInstanceOf(AgentCommandError);
        expect(err.result.command_status).toBe('FAILED');
        expect(err.result.command_error).toMatchObject({ type: 'UnsafeHostError', code: 403, message: 'Refusing destructive operation on this host' });
        expect(err.result.command_error!.details).toMatch(/not a deploy ramdisk/);
      }
    } finally {
      await client.close();
    }
    const ran = (await commandsRun(agent)).map((c) => c.cmd);
    for (const tool of ['wipefs', 'sgdisk', 'shred', 'dd', 'partprobe', 'hdparm', 'nvme', 'blkdiscard']) expect(ran).not.toContain(tool);
    expect(await agent.log()).not.toMatch(/wiping signatures|overwriting disk/);
    // The namespace stayed private: this machine's /dev is as it was.
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
    for (const disk of devBefore.filter((n) => /^(vd[a-z]+|sd[a-z]+|nvme\d+n\d+|xvd[a-z]+)$/.test(n))) {
      expect(statSync(`/dev/${disk}`).isBlockDevice()).toBe(true);
    }
  });
});

describe('--devices naming something that is not a block device', () => {
  async function exitOf(args: string[]): Promise<{ code: number | null; output: string }> {
    const agent = await startAgent({ args: [...BASE_ARGS, ...args], port: await freePort(), waitForApi: false });
    try {
      // 'close' comes after the output pipes ended; then give the log file's writer a moment to flush.
      if (agent.proc.exitCode === null || agent.proc.stdout?.readableEnded === false) await once(agent.proc, 'close');
      const code = agent.proc.exitCode;
      await sleep(200);
      return { code, output: await agent.log() };
    } finally {
      await stopAgent(agent);
    }
  }

  it('makes the agent exit with a clear error', async () => {
    const missing = await exitOf(['--devices', '/dev/ferrum-no-such-disk']);
    expect(missing.code).not.toBe(0);
    expect(missing.code).toBe(1);
    expect(missing.output).toContain('ferrum-agent: --devices: /dev/ferrum-no-such-disk does not exist');

    const notBlock = await exitOf(['--devices', '/dev/null']);
    expect(notBlock.code).not.toBe(0);
    expect(notBlock.output).toContain('ferrum-agent: --devices: /dev/null is not a block device');

    const notDev = await exitOf(['--devices', 'loop0']);
    expect(notDev.code).toBe(2);
    expect(notDev.output).toContain('devices: "loop0" is not a /dev path');
  });

  it('refuses a list where only some devices exist', async () => {
    const loop = await createLoopDevice(8);
    try {
      const res = await exitOf(['--devices', `${loop.path},/dev/ferrum-no-such-disk`]);
      expect(res.code).not.toBe(0);
      expect(res.output).toContain('/dev/ferrum-no-such-disk does not exist');
    } finally {
      await destroyLoop(loop);
    }
  });
});
