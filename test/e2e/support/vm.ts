// QEMU for the e2e test: a q35 VM with OVMF (UEFI, its NVRAM in a per-run copy of OVMF_VARS) or
// SeaBIOS, a virtio NIC on a tap of the PXE network, a virtio disk, virtio-rng and the serial console in a
// file. KVM is used only when a probe shows it really works: on these machines /dev/kvm is a
// PVM hypervisor (kvm_pvm) under which a stock kernel crawls, so TCG is the usual answer.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, copyFileSync, existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PxeNetwork } from './pxe-network.js';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export type Accel = 'kvm' | 'tcg';
export type Firmware = 'uefi' | 'bios';

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

/**
 * KVM or TCG? FERRUM_E2E_ACCEL=kvm|tcg decides when set. Otherwise: no usable /dev/kvm → TCG;
 * else boot `kernel` (no initramfs: it panics at once for want of a root file system, and
 * panic=-1 with -no-reboot ends QEMU) under KVM, and use KVM only when that finishes within
 * `budgetMs` (real KVM: about a second; TCG takes several; PVM does not get there in 30 s).
 */
export async function chooseAccel(kernel: string, budgetMs = 12_000): Promise<AccelChoice> {
  const forced = process.env['FERRUM_E2E_ACCEL'];
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: `FERRUM_E2E_ACCEL=${forced}` };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: '/dev/kvm is missing or not accessible' };
  }
  const started = Date.now();
  const args = ['-accel', 'kvm', '-machine', 'q35', '-m', '256', '-nographic', '-nodefaults', '-no-user-config', '-no-reboot',
    '-serial', 'stdio', '-monitor', 'none', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 loglevel=4'];
  const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  };
  process.once('exit', kill); // never leave the probe behind, whatever happens to the test
  let out = '';
  p.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
  p.stderr.on('data', (c: Buffer) => (out += c.toString('latin1')));
  const finished = await Promise.race([
    new Promise<boolean>((resolve) => p.once('exit', () => resolve(true))),
    new Promise<boolean>((resolve) => p.once('error', () => resolve(false))),
    sleep(budgetMs).then(() => false),
  ]);
  kill();
  process.removeListener('exit', kill);
  const ms = Date.now() - started;
  if (finished && /Kernel panic/.test(out)) return { accel: 'kvm', reason: `KVM probe: kernel booted to its expected panic in ${ms} ms` };
  const why = finished ? `QEMU/KVM failed: ${out.trim().split('\n').slice(-2).join(' | ').slice(0, 200)}` : `the kernel did not get through early boot within ${budgetMs} ms`;
  return { accel: 'tcg', reason: `KVM probe: ${why}` };
}

export interface VmOptions {
  name: string;
  mac: string;
  net: PxeNetwork;
  tap: string;
  disk: string;
  /** More disks (raw files), after the first; each with its own serial. */
  extraDisks?: string[];
  /** uefi (default): OVMF, its NVRAM in varsFile. bios: QEMU's SeaBIOS. */
  firmware?: Firmware;
  /** UEFI only: a per-run copy of OVMF_VARS (created when missing), the VM's NVRAM. */
  varsFile?: string;
  serialLog: string;
  qemuLog: string;
  accel: Accel;
  memMiB: number;
  smp?: number;
  /**
   * pxe: the NIC (iPXE ROM) boots first. disk: no boot order from QEMU and no NIC ROM: OVMF follows
   * its NVRAM BootOrder, SeaBIOS boots the first disk.
   */
  boot: 'pxe' | 'disk';
}

export interface Vm {
  proc: ChildProcess;
  startedAt: number;
  args: string[];
  exited: Promise<number | null>;
  serial(): string;
  /** Resolves with the time the pattern appeared; rejects when QEMU exits first or on timeout. */
  waitForSerial(pattern: RegExp, timeoutMs: number): Promise<number>;
  stop(): Promise<void>;
}

export function startVm(o: VmOptions): Vm {
  const uefi = (o.firmware ?? 'uefi') === 'uefi';
  if (uefi) {
    for (const f of [OVMF_CODE, OVMF_VARS]) {
      if (!existsSync(f)) throw new Error(`${f} is missing: install the Debian package ovmf (scripts/install-deps.sh --with-vm)`);
    }
    if (!o.varsFile) throw new Error('a UEFI VM needs a varsFile (its NVRAM)');
    if (!existsSync(o.varsFile)) copyFileSync(OVMF_VARS, o.varsFile);
  }
  const nicRom = o.boot === 'pxe' ? ',bootindex=1' : ',romfile=';
  const args = [
    '-name', o.name, '-machine', 'q35', '-accel', o.accel, ...(o.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(o.memMiB), '-smp', String(o.smp ?? 2),
    // -nographic + -serial file: firmware, iPXE and kernel output all reach the log file.
    '-nographic', '-no-user-config', '-nodefaults', '-no-reboot', '-monitor', 'none', '-serial', `file:${o.serialLog}`,
    // Without pflash drives QEMU boots its SeaBIOS.
    ...(uefi ? ['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,unit=1,file=${o.varsFile}`] : []),
    '-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-pci,rng=rng0',
    '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no`,
    // No romfile= for PXE: QEMU's default efi-virtio.rom is a combined BIOS+UEFI iPXE.
    '-device', `virtio-net-pci,netdev=n0,mac=${o.mac}${nicRom}`,
    '-drive', `file=${o.disk},if=none,id=d0,format=raw,cache=unsafe,discard=unmap`,
    '-device', 'virtio-blk-pci,drive=d0,serial=ferrum-e2e-disk',
    ...(o.extraDisks ?? []).flatMap((f, i) => [
      '-drive', `file=${f},if=none,id=d${i + 1},format=raw,cache=unsafe,discard=unmap`,
      '-device', `virtio-blk-pci,drive=d${i + 1},serial=ferrum-e2e-disk-${i + 1}`,
    ]),
  ];
  const out = openSync(o.qemuLog, 'a');
  const startedAt = Date.now();
  const proc = spawn(o.net.execPrefix[0]!, [...o.net.execPrefix.slice(1), 'qemu-system-x86_64', ...args], { stdio: ['ignore', out, out], detached: true });
  closeSync(out);
  proc.once('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const onExit = () => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  };
  process.once('exit', onExit);
  const serial = () => {
    try {
      return readFileSync(o.serialLog, 'latin1');
    } catch {
      return '';
    }
  };
  return {
    proc,
    startedAt,
    args,
    exited,
    serial,
    async waitForSerial(pattern, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (pattern.test(serial())) return Date.now();
        if (proc.exitCode !== null || proc.signalCode !== null) {
          await sleep(300); // the last lines may still be on their way
          if (pattern.test(serial())) return Date.now();
          throw new Error(`QEMU exited (${proc.exitCode ?? proc.signalCode}) before ${pattern} appeared on the serial console`);
        }
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} on the serial console`);
        await sleep(250);
      }
    },
    async stop() {
      process.removeListener('exit', onExit);
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!gone) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** The last `n` lines of the serial console, without ANSI escapes (firmware draws with them). */
export function serialTail(text: string, n = 60): string {
  const clean = text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  return clean.split('\n').filter((l) => l.trim() !== '').slice(-n).join('\n');
}
