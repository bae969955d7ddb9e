// The e2e test's isolated PXE network: a network namespace holding a bridge (the "provisioning
// network"), dnsmasq (DHCP + TFTP, no DNS), an HTTP server for iPXE scripts, kernels, initramfs
// and images, and taps for QEMU VMs. Ironic runs in the same namespace, bound to the bridge
// address. The test process reaches the namespace over one veth pair (a /30 of its own) with a
// host route to the bridge address only; the namespace forwards nothing, and DHCP hands out no
// router and no DNS, so the VMs can reach nothing but the namespace's own services.
//
//   host: vfh<id> 10.C.D.1/30 ── veth ── vfn<id> 10.C.D.2/30   (namespace ferrum-e2e-<id>)
//         route 10.A.B.1/32 via 10.C.D.2                     br-fe 10.A.B.1/24 + fdxx::1/64
//                                                             ├─ dnsmasq: DHCP .100-.199, TFTP, RA
//                                                             ├─ HTTP :8080, Ironic :6385
//                                                             └─ tap-<vm> ── QEMU virtio-net
//
// destroy() stops exactly the processes it started and deletes the namespace (which removes the
// bridge, the taps and the namespace end of the veth); an exit hook does the same if the test
// process dies first.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { prefixesOverlap } from '../../helpers/netns.js';
import { sh } from '../../helpers/loop-device.js';

export interface PxeNetwork {
  name: string;
  /** `ip netns exec NAME` */
  execPrefix: string[];
  bridge: string;
  /** 10.A.B.1: dnsmasq, HTTP and Ironic bind here. */
  addr: string;
  /** 10.A.B: the VMs get .100-.199. */
  prefix: string;
  httpPort: number;
  /** http://10.A.B.1:8080 */
  httpUrl: string;
  /** Files under it are served at httpUrl. */
  httpRoot: string;
  httpLog: string;
  dnsmasqLog: string;
  stateDir: string;
  /** Creates a tap on the bridge (inside the namespace) for a VM. */
  addTap(name: string): Promise<string>;
  deleteTap(name: string): Promise<void>;
  /** Writes the per-MAC iPXE script the TFTP stage chains to. */
  writeIpxeScript(mac: string, script: string): void;
  /** Spawns a process inside the namespace, tracked and killed by destroy(). */
  spawnInside(argv: string[], logFile: string): ChildProcess;
  destroy(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  const res = await sh('ip', args);
  if (res.code !== 0) throw new Error(`ip ${args.join(' ')} failed: ${res.stderr.trim() || res.stdout.trim()}`);
}

async function usedPrefixes(): Promise<Array<[string, number]>> {
  const used: Array<[string, number]> = [];
  const routes = JSON.parse((await sh('ip', ['-j', '-4', 'route', 'show', 'table', 'all'])).stdout || '[]') as Array<{ dst?: string }>;
  for (const r of routes) {
    if (!r.dst || r.dst === 'default') continue;
    const [addr, len] = r.dst.split('/');
    if (addr && /^\d+\.\d+\.\d+\.\d+$/.test(addr)) used.push([addr, len === undefined ? 32 : Number(len)]);
  }
  const links = JSON.parse((await sh('ip', ['-j', '-4', 'addr', 'show'])).stdout || '[]') as Array<{ addr_info?: Array<{ local?: string; prefixlen?: number }> }>;
  for (const l of links) for (const a of l.addr_info ?? []) if (a.local) used.push([a.local, a.prefixlen ?? 32]);
  return used.filter(([, len]) => len >= 8);
}

async function pickSubnets(n: number): Promise<string[]> {
  const used = await usedPrefixes();
  const picked: string[] = [];
  for (let i = 0; i < 500 && picked.length < n; i++) {
    const p = `10.${randomInt(16, 250)}.${randomInt(1, 250)}`;
    if (picked.includes(p)) continue;
    if (!used.some(([addr, len]) => prefixesOverlap(`${p}.0`, 24, addr, len))) picked.push(p);
  }
  if (picked.length < n) throw new Error('no free 10.x.y.0/24 subnets for the e2e network');
  return picked;
}

export async function assertCommands(cmds: Record<string, string>): Promise<void> {
  const missing: string[] = [];
  for (const [cmd, pkg] of Object.entries(cmds)) {
    if ((await sh('sh', ['-c', `command -v ${cmd}`])).code !== 0) missing.push(`${cmd} (${pkg})`);
  }
  if (missing.length > 0) {
    throw new Error(`the e2e test needs ${missing.join(', ')}: run scripts/install-deps.sh --with-vm as root`);
  }
}

export async function createPxeNetwork(o: { stateDir: string; httpPort?: number }): Promise<PxeNetwork> {
  if (process.getuid?.() !== 0) throw new Error('the e2e test must run as root (network namespaces, taps, mmdebstrap)');
  await assertCommands({ ip: 'iproute2', dnsmasq: 'dnsmasq-base', 'qemu-system-x86_64': 'qemu-system-x86' });
  const id = randomBytes(3).toString('hex');
  const name = `ferrum-e2e-${id}`;
  const bridge = 'br-fe';
  const hostVeth = `vfh${id}`;
  const nsVeth = `vfn${id}`;
  const [prefix, linkPrefix] = (await pickSubnets(2)) as [string, string];
  const addr = `${prefix}.1`;
  const httpPort = o.httpPort ?? 8080;
  const stateDir = o.stateDir;
  const tftpRoot = join(stateDir, 'tftp');
  const httpRoot = join(stateDir, 'http');
  for (const d of [tftpRoot, join(httpRoot, 'ipxe')]) mkdirSync(d, { recursive: true });
  const execPrefix = ['ip', 'netns', 'exec', name];
  const children = new Set<ChildProcess>();
  // A random ULA /64 (fdXX:XXXX:XXXX:1::/64) for the router advertisements iPXE waits for.
  const ula64 = `fd${randomBytes(1).toString('hex')}:${randomBytes(2).toString('hex')}:${randomBytes(2).toString('hex')}:1`;

  const removeSync = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const args of [['link', 'del', hostVeth], ['netns', 'del', name]]) {
      try {
        execFileSync('ip', args, { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', removeSync);

  const spawnInside = (argv: string[], logFile: string): ChildProcess => {
    const out = openSync(logFile, 'a');
    const child = spawn(execPrefix[0]!, [...execPrefix.slice(1), ...argv], { stdio: ['ignore', out, out], detached: true });
    closeSync(out);
    child.once('error', () => undefined);
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  };

  let destroyed = false;
  const net: PxeNetwork = {
    name,
    execPrefix,
    bridge,
    addr,
    prefix,
    httpPort,
    httpUrl: `http://${addr}:${httpPort}`,
    httpRoot,
    httpLog: join(stateDir, 'http.log'),
    dnsmasqLog: join(stateDir, 'dnsmasq.log'),
    stateDir,
    async addTap(tap) {
      await sh('ip', ['-n', name, 'link', 'del', tap]);
      await ip(['-n', name, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      await ip(['-n', name, 'link', 'set', tap, 'master', bridge, 'up']);
      return tap;
    },
    async deleteTap(tap) {
      await sh('ip', ['-n', name, 'link', 'del', tap]);
    },
    writeIpxeScript(mac, script) {
      writeFileSync(join(httpRoot, 'ipxe', `${mac.toLowerCase().replace(/:/g, '-')}.ipxe`), script);
    },
    spawnInside,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const c of [...children]) {
        if (c.exitCode !== null || c.signalCode !== null) continue;
        c.kill('SIGTERM');
        const gone = await Promise.race([new Promise((r) => c.once('exit', () => r(true))), sleep(5000).then(() => false)]);
        if (!gone) c.kill('SIGKILL');
      }
      process.removeListener('exit', removeSync);
      await sh('ip', ['link', 'del', hostVeth]);
      await sh('ip', ['netns', 'del', name]);
    },
  };

  try {
    await ip(['netns', 'add', name]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    // A new namespace forwards nothing; say so explicitly: the VMs must reach only its services.
    await sh('ip', ['netns', 'exec', name, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0']);
    await ip(['-n', name, 'link', 'add', bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await ip(['-n', name, 'addr', 'add', `${addr}/24`, 'dev', bridge]);
    await ip(['-n', name, 'addr', 'add', `${ula64}::1/64`, 'dev', bridge, 'nodad']);
    await ip(['-n', name, 'link', 'set', bridge, 'up']);
    await ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nsVeth, 'netns', name]);
    await ip(['addr', 'add', `${linkPrefix}.1/30`, 'dev', hostVeth]);
    await ip(['link', 'set', hostVeth, 'up']);
    await ip(['-n', name, 'addr', 'add', `${linkPrefix}.2/30`, 'dev', nsVeth]);
    await ip(['-n', name, 'link', 'set', nsVeth, 'up']);
    await ip(['route', 'add', `${addr}/32`, 'via', `${linkPrefix}.2`, 'dev', hostVeth]);

    // First stage, fetched by the NIC's iPXE ROM over TFTP: chain to a per-MAC script over HTTP,
    // the shape of Ironic's own boot.ipxe.
    writeFileSync(
      join(tftpRoot, 'boot.ipxe'),
      [
        '#!ipxe',
        'echo ferrum-e2e: ${net0/mac} got ${net0/ip}',
        `chain http://${addr}:${httpPort}/ipxe/\${net0/mac:hexhyp}.ipxe || shell`,
        '',
      ].join('\n'),
    );
    // --no-ping: no ~3 s ICMP probe before each offer. RA (ra-only, router lifetime 0): without
    // one iPXE waits ~14 s for IPv6 autoconfiguration. No router and no DNS are handed out.
    const dnsmasq = spawnInside(
      [
        'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--port=0', '--user=root', '--group=root',
        `--interface=${bridge}`, '--bind-interfaces', '--except-interface=lo',
        `--dhcp-range=${prefix}.100,${prefix}.199,255.255.255.0,1h`,
        '--dhcp-authoritative', '--dhcp-rapid-commit', '--no-ping',
        '--dhcp-option=option:router', '--dhcp-option=option:dns-server',
        '--enable-ra', `--dhcp-range=${ula64}::,ra-only,64,1h`, `--ra-param=${bridge},0,0`,
        `--dhcp-leasefile=${join(stateDir, 'dnsmasq.leases')}`,
        '--dhcp-userclass=set:ipxe,iPXE', '--dhcp-match=set:ipxe,175', '--dhcp-boot=tag:ipxe,boot.ipxe',
        '--enable-tftp', `--tftp-root=${tftpRoot}`,
        '--log-dhcp', `--log-facility=${join(stateDir, 'dnsmasq.log')}`,
      ],
      join(stateDir, 'dnsmasq.out'),
    );
    const http = spawnInside(
      [process.execPath, join(import.meta.dirname, 'http-server.mjs'), '--bind', addr, '--port', String(httpPort), '--root', httpRoot, '--log', net.httpLog],
      join(stateDir, 'http.out'),
    );
    // Both must be up, and the HTTP server reachable from here (proves the host route).
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (dnsmasq.exitCode !== null) throw new Error(`dnsmasq exited (${dnsmasq.exitCode}); see ${join(stateDir, 'dnsmasq.out')}`);
      if (http.exitCode !== null) throw new Error(`the HTTP server exited (${http.exitCode}); see ${join(stateDir, 'http.out')}`);
      const ok = await fetch(`${net.httpUrl}/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.status === 404,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`the HTTP server in ${name} is not reachable at ${net.httpUrl}`);
      await sleep(200);
    }
  } catch (err) {
    await net.destroy();
    throw err;
  }
  return net;
}
