// A VM running Ferrum's ramdisk in standalone mode (ipa-standalone=1: no conductor, commands need
// no token), PXE-booted on the test's network, with its agent API (and iSCSI portal, and sshd) forwarded to
// the bridge address so the test process can reach them (see tcp-forward.mjs). For the e2e tests
// that drive the agent directly, where no Ironic 21.4 flow exists (iSCSI) or to look closer than
// a conductor does (the UEFI boot loader of a partition image).
import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../../../src/conductor/agent-client.js';
import { assertCommands, createPxeNetwork, type PxeNetwork } from './pxe-network.js';
import { chooseAccel, serialTail, startVm, type Accel, type AccelChoice, type Firmware, type Vm } from './vm.js';

export const FORWARDED_AGENT_PORT = 19999;
export const FORWARDED_ISCSI_PORT = 13260;
export const FORWARDED_SSH_PORT = 10022;

export function randomMac(): string {
  return ['52', '54', '00', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export interface StandaloneVm {
  vm: Vm;
  mac: string;
  vmIp: string;
  /** The agent, through the forwarder. */
  client: AgentClient;
  /** Seconds from QEMU start until the agent's status line appeared. */
  upAfterS: number;
}

export async function startStandaloneVm(o: {
  net: PxeNetwork;
  ramdiskDir: string;
  runDir: string;
  name: string;
  disk: string;
  extraDisks?: string[];
  accel: Accel;
  firmware?: Firmware;
  memMiB?: number;
  mac?: string;
}): Promise<StandaloneVm> {
  const n = o.net;
  const mac = o.mac ?? randomMac();
  const rd = join(n.httpRoot, 'ramdisk');
  mkdirSync(rd, { recursive: true });
  for (const f of ['kernel', 'initramfs']) if (!existsSync(join(rd, f))) symlinkSync(join(o.ramdiskDir, f), join(rd, f));
  const kernelArgs = ['console=ttyS0,115200', 'ipa-standalone=1', 'systemd.show_status=auto'].join(' ');
  n.writeIpxeScript(mac, ['#!ipxe', `kernel ${n.httpUrl}/ramdisk/kernel initrd=initramfs ${kernelArgs}`, `initrd --name initramfs ${n.httpUrl}/ramdisk/initramfs`, 'boot', ''].join('\n'));
  const tap = await n.addTap(`tap-${o.name.slice(-6)}`);
  const vm = startVm({
    name: o.name, mac, net: n, tap, disk: o.disk, extraDisks: o.extraDisks, firmware: o.firmware, varsFile: join(o.runDir, `${o.name}-OVMF_VARS.fd`), accel: o.accel, memMiB: o.memMiB ?? 1536,
    boot: 'pxe', serialLog: join(o.runDir, `${o.name}-serial.log`), qemuLog: join(o.runDir, `${o.name}-qemu.log`),
  });
  // The console status line names the agent's phase and the VM's address once the API answers.
  const statusRe = /\[ferrum \d+s\] standalone\b.*\| ip (\d+\.\d+\.\d+\.\d+)/;
  try {
    await vm.waitForSerial(statusRe, 600_000);
  } catch (err) {
    await vm.stop();
    throw new Error(`${(err as Error).message}\n--- serial console (last lines)\n${serialTail(vm.serial(), 40)}`);
  }
  const upAfterS = (Date.now() - vm.startedAt) / 1000;
  const vmIp = statusRe.exec(vm.serial())![1]!;
  n.spawnInside(
    [process.execPath, join(import.meta.dirname, 'tcp-forward.mjs'), '--bind', n.addr, '--to', vmIp, `${FORWARDED_AGENT_PORT}:9999`, `${FORWARDED_ISCSI_PORT}:3260`, `${FORWARDED_SSH_PORT}:22`],
    join(o.runDir, `${o.name}-tcp-forward.log`),
  );
  const client = new AgentClient({ url: `http://${n.addr}:${FORWARDED_AGENT_PORT}`, requestTimeoutMs: 300_000 });
  for (let i = 0; !(await client.status().then(() => true, () => false)); i++) {
    if (i > 100) throw new Error(`the agent's API at ${vmIp} is not reachable through the forwarder`);
    await sleep(200);
  }
  return { vm, mac, vmIp, client, upAfterS };
}

export const RAMDISK_DIR = resolve(process.env['FERRUM_RAMDISK_DIR'] ?? join(import.meta.dirname, '../../../image-build/out'));

/**
 * The frame of a standalone-VM test file: what it needs checked up front (root, commands, the
 * built ramdisk; never a silent skip), a run directory, the network, and the cleanup that keeps
 * the run directory when the test failed (or FERRUM_E2E_KEEP=1).
 */
export class StandaloneRun {
  runDir = '';
  net: PxeNetwork | null = null;
  vm: Vm | null = null;
  client: AgentClient | null = null;
  passed = false;

  constructor(
    private readonly name: string,
    private readonly commands: Record<string, string>,
  ) {}

  async setUp(): Promise<void> {
    if (process.getuid?.() !== 0) throw new Error('the e2e test must run as root');
    await assertCommands({ 'qemu-system-x86_64': 'qemu-system-x86', dnsmasq: 'dnsmasq-base', ...this.commands });
    for (const f of ['kernel', 'initramfs']) {
      if (!existsSync(join(RAMDISK_DIR, f))) throw new Error(`${join(RAMDISK_DIR, f)} is missing: npm run build:ramdisk`);
    }
    this.runDir = await mkdtemp(`/tmp/ferrum-e2e-${this.name}-`);
    this.net = await createPxeNetwork({ stateDir: join(this.runDir, 'net') });
  }

  /**
   * setUp(), the accelerator probe and a slow build (a disk image) at once: the first failure
   * throws once all three have settled.
   */
  async setUpWith<T>(build: Promise<T>): Promise<{ accel: AccelChoice; built: T }> {
    const [a, b, r] = await Promise.allSettled([chooseAccel(join(RAMDISK_DIR, 'kernel')), build, this.setUp()]);
    for (const x of [a, b, r]) if (x.status === 'rejected') throw x.reason;
    return { accel: (a as PromiseFulfilledResult<AccelChoice>).value, built: (b as PromiseFulfilledResult<T>).value };
  }

  /** Boots the ramdisk VM on this run's network; its VM and client are stopped by tearDown(). */
  async boot(disk: string, accel: Accel, extraDisks: string[] = [], firmware: Firmware = 'uefi'): Promise<StandaloneVm> {
    const s = await startStandaloneVm({ net: this.net!, ramdiskDir: RAMDISK_DIR, runDir: this.runDir, name: `ferrum-${this.name}`, disk, extraDisks, accel, firmware });
    this.vm = s.vm;
    this.client = s.client;
    return s;
  }

  async tearDown(): Promise<void> {
    await this.client?.close().catch(() => undefined);
    await this.vm?.stop().catch(() => undefined);
    await this.net?.destroy().catch(() => undefined);
    if (!this.runDir) return;
    if (this.passed && process.env['FERRUM_E2E_KEEP'] !== '1') await rm(this.runDir, { recursive: true, force: true });
    else console.log(`e2e run directory kept: ${this.runDir}`);
  }

  /** Rethrows `err` with the run's diagnostics (for `.catch(run.fail)`). */
  readonly fail = (err: Error): never => {
    throw new Error(`${err.message}\n${this.diagnostics()}`);
  };

  diagnostics(): string {
    return [`run directory (kept): ${this.runDir}`, this.vm ? `--- serial console (last lines)\n${serialTail(this.vm.serial(), 50)}` : ''].join('\n');
  }
}
