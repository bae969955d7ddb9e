// End to end, as on bare metal: a QEMU VM PXE-boots Ferrum's ramdisk (image-build/out), a real
// Ironic 21.4.4 cleans its disk and deploys a Debian disk image onto it, and the VM then boots that
// OS from its own disk. Everything runs inside a network namespace this test creates (see
// support/pxe-network.ts): a bridge, dnsmasq (DHCP + TFTP → iPXE), an HTTP server (iPXE scripts,
// kernel, initramfs, the image), Ironic bound to the bridge address, and the VM on a tap.
//
// Ironic's fake-hardware cannot power the VM: the node is a fake-hardware node (UEFI, vendor
// lenovo, see test/helpers/ironic.ts) whose port is the VM's MAC, and the ramdisk runs the agent
// with ferrum-power=none, so after Ironic's fake power-off/reboot the agent looks up again as a
// freshly booted ramdisk would. The test plays the part of the power switch: once the node is
// active it stops the VM and starts it again from its disk, with the same OVMF NVRAM, so the boot
// entry the agent wrote with efibootmgr is what the firmware boots.
//
// Run with `npm run test:e2e` (builds the ramdisk first when image-build/out has none). Needs
// root and scripts/install-deps.sh --with-vm; it fails, never skips, when something is missing.
// FERRUM_E2E_ACCEL=kvm|tcg overrides the KVM probe; FERRUM_RAMDISK_DIR another ramdisk;
// FERRUM_E2E_KEEP=1 keeps the run directory (logs, serial consoles) even when the test passes.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, symlinkSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IronicServer, assertIronicInstalled, type IronicNode } from '../helpers/ironic.js';
import { DEPLOYED_OS_MARKER, diskImage, type DiskImage } from './support/disk-image.js';
import { assertCommands, createPxeNetwork, type PxeNetwork } from './support/pxe-network.js';
import { chooseAccel, serialTail, startVm, type AccelChoice, type Vm } from './support/vm.js';
import { randomMac } from './support/standalone-vm.js';

const REPO = resolve(import.meta.dirname, '../..');
const RAMDISK_DIR = resolve(process.env['FERRUM_RAMDISK_DIR'] ?? join(REPO, 'image-build/out'));
const VM_MEM_MIB = 1536;
const DISK_GIB = 6;
/** Issue 5's target; the hard limit below only catches a boot that is broken, not slow. */
const FIRST_HEARTBEAT_TARGET_S = 45;
const FIRST_HEARTBEAT_LIMIT_S = Number(process.env['FERRUM_E2E_FIRST_HEARTBEAT_LIMIT_S'] ?? 240);
const API_HEADERS = { 'X-OpenStack-Ironic-API-Version': 'latest', 'content-type': 'application/json', accept: 'application/json' };

let runDir = '';
let net: PxeNetwork | null = null;
let ironic: IronicServer | null = null;
let vm: Vm | null = null;
let image: DiskImage | null = null;
let accel: AccelChoice | null = null;
let passed = false;
const figures: Array<[string, string]> = [];

const log = (line: string) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}] ${line}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

function figure(name: string, value: string): void {
  figures.push([name, value]);
  log(`FIGURE ${name}: ${value}`);
}

async function patchNode(uuid: string, ops: Array<{ op: string; path: string; value?: unknown }>): Promise<void> {
  const res = await fetch(`${ironic!.apiUrl}/v1/nodes/${uuid}`, { method: 'PATCH', headers: API_HEADERS, body: JSON.stringify(ops) });
  if (res.status !== 200) throw new Error(`PATCH node answered ${res.status}: ${await res.text()}`);
}

async function provision(uuid: string, target: string): Promise<void> {
  const res = await fetch(`${ironic!.apiUrl}/v1/nodes/${uuid}/states/provision`, { method: 'PUT', headers: API_HEADERS, body: JSON.stringify({ target }) });
  if (res.status !== 202) throw new Error(`provision ${target} answered ${res.status}: ${await res.text()}`);
}

/** What a failure message needs: the VM's console, the conductor's log, the HTTP requests. */
async function diagnostics(): Promise<string> {
  const parts: string[] = [`run directory (kept): ${runDir}`, ...(ironic ? [`Ironic's logs: ${ironic.stateDir}`] : [])];
  if (vm) parts.push(`--- serial console (last lines)\n${serialTail(vm.serial(), 50)}`);
  if (ironic) parts.push(await ironic.tail('ironic-conductor', 30));
  if (net && existsSync(net.httpLog)) parts.push(`--- HTTP requests (last)\n${readFileSync(net.httpLog, 'utf8').trim().split('\n').slice(-8).join('\n')}`);
  return parts.join('\n');
}

async function waitState(uuid: string, states: string | string[], timeoutMs: number): Promise<IronicNode> {
  return ironic!.api.waitForProvisionState(uuid, states, { timeoutMs, onFailure: diagnostics });
}

interface HttpEvent {
  t: number;
  method?: string;
  url?: string;
  status?: number;
  bytes?: number;
  ms?: number;
}

function httpEvents(): HttpEvent[] {
  if (!net || !existsSync(net.httpLog)) return [];
  return readFileSync(net.httpLog, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as HttpEvent);
}

/** Guest uptime (kernel clock) of the boot's milestones, from the ramdisk's serial console. */
function bootTimeline(serial: string): string {
  const at = (re: RegExp) => {
    const m = new RegExp(`^\\[\\s*(\\d+\\.\\d+)\\][^\\n]*${re.source}`, 'm').exec(serial.replace(/\r/g, ''));
    return m ? `${Number(m[1]).toFixed(1)}` : '?';
  };
  return [
    `initramfs unpacked ${at(/Freeing initrd memory/)}`,
    `systemd ${at(/systemd\[1\]: systemd \d+/)}`,
    `PXE NIC has an address ${at(/wait-bootif: .* is up/)}`,
    `agent started ${at(/Ferrum agent starting/)}`,
    `lookup ${at(/lookup succeeded/)}`,
    `heartbeating ${at(/"msg":"heartbeating"/)}`,
  ].join(', ');
}

/** The highest "mem USED/TOTAL MiB" the ramdisk's console status line printed. */
function ramdiskMemory(serial: string): { maxUsed: number; total: number; samples: number } | null {
  const samples = [...serial.matchAll(/\[ferrum \d+s\].*\| mem (\d+)\/(\d+) MiB/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
  if (samples.length === 0) return null;
  return { maxUsed: Math.max(...samples.map((s) => s[0])), total: samples[samples.length - 1]![1], samples: samples.length };
}

describe('Ferrum ramdisk, end to end in a VM', () => {
  beforeAll(async () => {
    // Everything this needs, checked up front with a clear message: never a silent skip.
    if (process.getuid?.() !== 0) throw new Error('the e2e test must run as root');
    await assertCommands({
      'qemu-system-x86_64': 'qemu-system-x86',
      dnsmasq: 'dnsmasq-base',
      mmdebstrap: 'mmdebstrap',
      'mkfs.ext4': 'e2fsprogs',
      'mkfs.vfat': 'dosfstools',
      mcopy: 'mtools',
      sfdisk: 'fdisk',
    });
    await assertIronicInstalled();
    for (const f of ['/usr/lib/ipxe/qemu/efi-virtio.rom', '/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd']) {
      if (!existsSync(f)) throw new Error(`${f} is missing: run scripts/install-deps.sh --with-vm`);
    }
    for (const f of ['kernel', 'initramfs', 'sizes.json']) {
      if (!existsSync(join(RAMDISK_DIR, f))) {
        throw new Error(`${join(RAMDISK_DIR, f)} is missing: build the ramdisk with 'npm run build:ramdisk' (npm run test:e2e does it when image-build/out is empty)`);
      }
    }
    runDir = await mkdtemp('/tmp/ferrum-e2e-');
    log(`run directory ${runDir}; load average ${load()}`);

    // The slow parts side by side: the KVM probe, the (cached) disk image, network + Ironic.
    const netReady = createPxeNetwork({ stateDir: join(runDir, 'net') }).then(async (n) => {
      net = n;
      ironic = await IronicServer.start({
        bindAddr: n.addr,
        execPrefix: n.execPrefix,
        ramdiskHeartbeatTimeout: 30,
        // Generous: the node waits in "clean wait" while the VM boots under emulation.
        callbackTimeout: 1800,
        // Automated cleaning wipes metadata only: shredding the whole disk under TCG would take long.
        eraseDevicesPriority: 0,
      });
    });
    // allSettled: when one fails, the others still finish (no orphaned probe or half-built image).
    const [a, img, ready] = await Promise.allSettled([chooseAccel(join(RAMDISK_DIR, 'kernel')), diskImage(log), netReady]);
    for (const r of [a, img, ready]) if (r.status === 'rejected') throw r.reason;
    accel = (a as PromiseFulfilledResult<AccelChoice>).value;
    image = (img as PromiseFulfilledResult<DiskImage>).value;
    log(`accelerator: ${accel.accel} (${accel.reason})`);
    log(`disk image: ${image.path} (${MB(image.bytes)}${image.builtSeconds ? `, built in ${image.builtSeconds.toFixed(0)} s` : ', cached'})`);
    log(`network ${net!.name}: bridge ${net!.addr}/24, Ironic ${ironic!.apiUrl}, HTTP ${net!.httpUrl}`);
  }, 3_600_000);

  afterAll(async () => {
    await vm?.stop().catch(() => undefined);
    await ironic?.stop().catch(() => undefined);
    await net?.destroy().catch(() => undefined);
    const keep = !passed || process.env['FERRUM_E2E_KEEP'] === '1';
    if (ironic) {
      if (keep) console.log(`Ironic's state directory (logs, database) kept: ${ironic.stateDir}`);
      else await ironic.removeStateDir().catch(() => undefined);
    }
    if (figures.length) {
      const width = Math.max(...figures.map(([n]) => n.length));
      console.log(`\nFerrum ramdisk e2e figures (accel ${accel?.accel ?? '?'}, load average now ${load()}):\n${figures.map(([n, v]) => `  ${n.padEnd(width)}  ${v}`).join('\n')}\n`);
    }
    if (runDir) {
      if (!keep) await rm(runDir, { recursive: true, force: true });
      else console.log(`e2e run directory kept: ${runDir}`);
    }
  }, 120_000);

  test('PXE boot, lookup, cleaning, deploy, and a boot of the deployed OS from disk', async () => {
    const sizes = JSON.parse(readFileSync(join(RAMDISK_DIR, 'sizes.json'), 'utf8')) as {
      initramfs: { compressed_bytes: number; uncompressed_bytes: number; compression: string };
      kernel: { bytes: number; package: string };
      node_version: string;
      agent_version: string;
    };
    figure('initramfs', `${MB(sizes.initramfs.compressed_bytes)} compressed (${sizes.initramfs.compression}), ${MB(sizes.initramfs.uncompressed_bytes)} uncompressed`);
    figure('kernel', `${MB(sizes.kernel.bytes)} (${sizes.kernel.package}); node ${sizes.node_version}, agent ${sizes.agent_version}`);
    const n = net!;
    const api = ironic!.api;
    const mac = randomMac();

    // What Ironic's PXE boot interface would serve: the ramdisk over HTTP, a per-MAC iPXE script.
    mkdirSync(join(n.httpRoot, 'ramdisk'), { recursive: true });
    mkdirSync(join(n.httpRoot, 'images'), { recursive: true });
    symlinkSync(join(RAMDISK_DIR, 'kernel'), join(n.httpRoot, 'ramdisk/kernel'));
    symlinkSync(join(RAMDISK_DIR, 'initramfs'), join(n.httpRoot, 'ramdisk/initramfs'));
    symlinkSync(image!.path, join(n.httpRoot, 'images/debian.raw'));
    const kernelArgs = [
      'console=ttyS0,115200', `ipa-api-url=${ironic!.apiUrl}`, `BOOTIF=01-${mac.replace(/:/g, '-')}`,
      'ferrum-power=none', 'ferrum-lookup-max-interval=2', 'systemd.show_status=auto',
      ...(process.env['FERRUM_E2E_KERNEL_ARGS'] ?? '').split(' ').filter(Boolean),
    ].join(' ');
    n.writeIpxeScript(
      mac,
      ['#!ipxe', 'echo ferrum-e2e: loading the Ferrum ramdisk', `kernel ${n.httpUrl}/ramdisk/kernel initrd=initramfs ${kernelArgs}`,
        `initrd --name initramfs ${n.httpUrl}/ramdisk/initramfs`, 'boot', ''].join('\n'),
    );

    // The node: fake-hardware, UEFI, its port the VM's MAC; "provide" puts it into clean wait
    // (Ironic fake-reboots it into the ramdisk), so the agent's first lookup finds it.
    const created = await api.createNode({
      name: 'ferrum-e2e-vm',
      driverInfo: { deploy_kernel: `${n.httpUrl}/ramdisk/kernel`, deploy_ramdisk: `${n.httpUrl}/ramdisk/initramfs` },
      properties: { capabilities: 'boot_mode:uefi', local_gb: DISK_GIB - 1, memory_mb: VM_MEM_MIB, cpus: 2 },
    });
    const uuid = created.uuid;
    await api.createPort(uuid, mac);
    await provision(uuid, 'manage');
    await waitState(uuid, 'manageable', 120_000);
    await provision(uuid, 'provide');
    await waitState(uuid, 'clean wait', 120_000);
    log(`node ${uuid} is in clean wait; port ${mac}`);

    // The VM: empty sparse disk, fresh NVRAM, PXE first.
    const disk = join(runDir, 'disk.raw');
    execFileSync('truncate', ['-s', `${DISK_GIB}G`, disk]);
    const tap = await n.addTap('tap-fe0');
    const varsFile = join(runDir, 'OVMF_VARS.fd');
    const loadAtBoot = load();
    vm = startVm({ name: 'ferrum-e2e', mac, net: n, tap, disk, varsFile, accel: accel!.accel, memMiB: VM_MEM_MIB, boot: 'pxe',
      serialLog: join(runDir, 'serial-ramdisk.log'), qemuLog: join(runDir, 'qemu-ramdisk.log') });
    const qemuStart = vm.startedAt;
    log(`QEMU started (${accel!.accel}, ${VM_MEM_MIB} MiB, PXE/UEFI); serial console: ${join(runDir, 'serial-ramdisk.log')}; load average ${loadAtBoot}`);
    writeFileSync(join(runDir, 'qemu-ramdisk.args'), `${vm.args.join(' ')}\n`);

    // First heartbeat: Ironic records its time (UTC) in driver_internal_info.
    let firstHeartbeatAt = 0;
    for (;;) {
      const node = await api.getNode(uuid).catch(() => null);
      const hb = node?.driver_internal_info['agent_last_heartbeat'];
      if (typeof hb === 'string') {
        firstHeartbeatAt = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(hb) ? hb : `${hb}Z`);
        break;
      }
      if (vm.proc.exitCode !== null) throw new Error(`QEMU exited before the first heartbeat\n${await diagnostics()}`);
      if (Date.now() - qemuStart > FIRST_HEARTBEAT_LIMIT_S * 1000) {
        throw new Error(`no heartbeat within ${FIRST_HEARTBEAT_LIMIT_S} s of QEMU start\n${await diagnostics()}`);
      }
      await sleep(250);
    }
    const toHeartbeat = firstHeartbeatAt - qemuStart;
    const events = httpEvents();
    const rel = (e: HttpEvent | undefined) => (e ? secs(e.t - qemuStart) : 'n/a');
    const ipxe = events.find((e) => e.url?.startsWith('/ipxe/'));
    const kernelGet = events.find((e) => e.url === '/ramdisk/kernel' && e.method === 'GET');
    const initrdGet = events.find((e) => e.url === '/ramdisk/initramfs' && e.method === 'GET' && e.status === 200);
    figure('QEMU start -> iPXE script / kernel / initramfs fetched', `${rel(ipxe)} / ${rel(kernelGet)} / ${rel(initrdGet)}${initrdGet?.ms ? ` (initramfs in ${initrdGet.ms} ms)` : ''}`);
    figure('QEMU start -> first heartbeat', `${secs(toHeartbeat)} (target ${FIRST_HEARTBEAT_TARGET_S} s: ${toHeartbeat <= FIRST_HEARTBEAT_TARGET_S * 1000 ? 'met' : 'MISSED'}; ${accel!.accel}; load average at boot ${loadAtBoot})`);
    figure('ramdisk boot, guest uptime in s', bootTimeline(vm.serial()));
    expect(toHeartbeat).toBeGreaterThan(0);

    // Automated cleaning (erase_devices_metadata), then Ironic fake-powers the node off.
    await waitState(uuid, 'available', 900_000);
    figure('first heartbeat -> cleaning done (available)', secs(Date.now() - firstHeartbeatAt));

    // Deploy the whole-disk image; the agent writes it, adds the UEFI boot entry, "powers off".
    await patchNode(uuid, [
      { op: 'add', path: '/instance_info/image_source', value: `${n.httpUrl}/images/debian.raw` },
      { op: 'add', path: '/instance_info/image_os_hash_algo', value: 'sha256' },
      { op: 'add', path: '/instance_info/image_os_hash_value', value: image!.sha256 },
      { op: 'add', path: '/instance_info/image_disk_format', value: 'raw' },
      { op: 'add', path: '/instance_info/image_type', value: 'whole-disk' },
    ]);
    const deployAt = Date.now();
    await provision(uuid, 'active');
    const active = await waitState(uuid, 'active', 1_200_000);
    const toActive = Date.now() - deployAt;
    figure('deploy -> active', `${secs(toActive)} (image ${MB(image!.bytes)} raw)`);
    expect(active.last_error).toBeNull();
    const imageGets = httpEvents().filter((e) => e.url === '/images/debian.raw' && e.method === 'GET');
    const served = imageGets.reduce((s, e) => s + (e.bytes ?? 0), 0);
    figure('image download', `${imageGets.length} GET(s), ${MB(served)} served`);
    // The agent powers off (simulated) at the end; give its last console status line a moment.
    await sleep(4000);
    const mem = ramdiskMemory(vm.serial());
    figure('VM RAM used (ramdisk, highest status line)', mem ? `${mem.maxUsed} MiB of ${mem.total} MiB (MemTotal-MemAvailable, ${mem.samples} samples)` : 'no status line seen');
    expect(mem, 'the console status line (ferrum-console-status.service) never printed').not.toBeNull();
    await vm.stop();
    await n.deleteTap(tap);

    // "Power on" from disk: same disk, same NVRAM, no PXE ROM and no boot order from QEMU.
    const tap2 = await n.addTap('tap-fe1');
    vm = startVm({ name: 'ferrum-e2e-disk', mac, net: n, tap: tap2, disk, varsFile, accel: accel!.accel, memMiB: VM_MEM_MIB, boot: 'disk',
      serialLog: join(runDir, 'serial-disk.log'), qemuLog: join(runDir, 'qemu-disk.log') });
    const diskStart = vm.startedAt;
    const markerRe = new RegExp(`${DEPLOYED_OS_MARKER} \\S+ root=`);
    let markerAt = 0;
    try {
      markerAt = await vm.waitForSerial(markerRe, 900_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await diagnostics()}`);
    }
    const serial = vm.serial();
    const markerLine = serial.split('\n').find((l) => markerRe.test(l))?.trim() ?? '';
    const bootEntry = /BdsDxe: (?:loading|starting) (Boot[0-9A-F]{4} "[^"]*")/.exec(serial)?.[1] ?? 'not shown by the firmware';
    figure('disk boot: QEMU start -> marker', `${secs(markerAt - diskStart)}; firmware booted ${bootEntry}`);
    log(markerLine);
    expect(markerLine).toContain(DEPLOYED_OS_MARKER);
    // The entry the agent made with efibootmgr (IPA's labels: ironic1, ironic2, ...) is what OVMF
    // booted, when it says so; the fallback path EFI/BOOT/BOOTX64.EFI alone would also boot.
    if (bootEntry.startsWith('Boot')) expect(bootEntry).toMatch(/"ironic\d+"/);
    await vm.exited.catch(() => undefined);
    passed = true;
  }, 3_600_000);
});
