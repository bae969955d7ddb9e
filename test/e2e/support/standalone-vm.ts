// A VM running Ferrum's ramdisk in standalone mode (ipa-standalone=1: no conductor, commands need
// no token), PXE-booted on the test's network, with its agent API (and iSCSI portal, and sshd) forwarded to
// the bridge address so the test process can reach them (see tcp-forward.mjs). For the e2e tests
// that drive the agent directly, where no Ironic 21.4 flow exists (iSCSI) or to look closer than
// a conductor does (the UEFI boot loader of a partition image).
import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../../../src/conductor/agent-client.js';
import type { PxeNetwork } from './pxe-network.js';
import { serialTail, startVm, type Accel, type Vm } from './vm.js';

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
  accel: Accel;
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
    name: o.name, mac, net: n, tap, disk: o.disk, varsFile: join(o.runDir, `${o.name}-OVMF_VARS.fd`), accel: o.accel, memMiB: o.memMiB ?? 1536,
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
