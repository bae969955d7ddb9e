// A switch's LLDP announcement, built byte by byte (IEEE 802.1AB: basic management TLVs plus the
// common 802.1/802.3 organisational ones), and a sender that puts it on a real link with a raw
// AF_PACKET socket (python3, stdlib only), as a switch does every few seconds.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

export type Tlv = [number, string];

export interface SwitchAnnouncement {
  /** Chassis ID, subtype 4 (MAC address). */
  chassisMac: string;
  /** Port ID, subtype 5 (interface name). */
  portName: string;
  ttl: number;
  portDescription: string;
  systemName: string;
  systemDescription: string;
  mgmtIpv4: string;
  /** 802.1 Port VLAN ID. */
  vlan: number;
  vlanName: string;
  /** 802.3 maximum frame size. */
  mtu: number;
}

export const DEFAULT_SWITCH: SwitchAnnouncement = {
  chassisMac: 'a0:36:9f:12:34:56',
  portName: 'Ethernet1/7',
  ttl: 120,
  portDescription: 'server-07 eth0',
  systemName: 'switch-a.example',
  systemDescription: 'Ferrum test switch, LLDP from a raw socket',
  mgmtIpv4: '192.0.2.250',
  vlan: 100,
  vlanName: 'provisioning',
  mtu: 9216,
};

const LLDP_MULTICAST = '01:80:c2:00:00:0e';

function mac(m: string): Buffer {
  return Buffer.from(m.split(':').map((b) => parseInt(b, 16)));
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 511) throw new Error('TLV value too long');
  return Buffer.concat([u16((type << 9) | value.length), value]);
}

/**
 * The frame (Ethernet header included, no FCS) and the TLVs IPA would report for it: every TLV in
 * order as [type, value hex], the End of LLDPDU as [0, ""].
 */
export function buildLldpFrame(sw: SwitchAnnouncement = DEFAULT_SWITCH): { frame: Buffer; tlvs: Tlv[] } {
  const values: Array<[number, Buffer]> = [
    [1, Buffer.concat([Buffer.from([4]), mac(sw.chassisMac)])],
    [2, Buffer.concat([Buffer.from([5]), Buffer.from(sw.portName)])],
    [3, u16(sw.ttl)],
    [4, Buffer.from(sw.portDescription)],
    [5, Buffer.from(sw.systemName)],
    [6, Buffer.from(sw.systemDescription)],
    // System capabilities: bridge + router available, bridge enabled.
    [7, Buffer.concat([u16(0x0014), u16(0x0004)])],
    // Management address: length 5, IPv4, the address, ifIndex numbering, interface 7, no OID.
    [8, Buffer.concat([Buffer.from([5, 1]), Buffer.from(sw.mgmtIpv4.split('.').map(Number)), Buffer.from([2, 0, 0, 0, 7, 0])])],
    // 802.1 Port VLAN ID.
    [127, Buffer.concat([Buffer.from([0x00, 0x80, 0xc2, 1]), u16(sw.vlan)])],
    // 802.1 VLAN name.
    [127, Buffer.concat([Buffer.from([0x00, 0x80, 0xc2, 3]), u16(sw.vlan), Buffer.from([sw.vlanName.length]), Buffer.from(sw.vlanName)])],
    // 802.3 MAC/PHY: autonegotiation supported + enabled, advertised 1000BASE-T FD…, MAU type 30 (1000BASE-T FD).
    [127, Buffer.concat([Buffer.from([0x00, 0x12, 0x0f, 1, 0x03]), u16(0x6c01), u16(30)])],
    // 802.3 maximum frame size.
    [127, Buffer.concat([Buffer.from([0x00, 0x12, 0x0f, 4]), u16(sw.mtu)])],
    [0, Buffer.alloc(0)],
  ];
  const header = Buffer.concat([mac(LLDP_MULTICAST), mac(sw.chassisMac), u16(0x88cc)]);
  const frame = Buffer.concat([header, ...values.map(([t, v]) => tlv(t, v))]);
  return { frame, tlvs: values.map(([t, v]): Tlv => [t, v.toString('hex')]) };
}

// Sends the frame every `interval` seconds until killed or `duration` seconds have passed (so it
// never outlives the test for long); prints the running count after each frame.
const SENDER = `
import socket, sys, time
ifname, frame, interval, duration = sys.argv[1], bytes.fromhex(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
end = time.monotonic() + duration
n = 0
while True:
    s.send(frame)
    n += 1
    print(n, flush=True)
    if time.monotonic() + interval > end:
        break
    time.sleep(interval)
`;

export interface LldpSender {
  proc: ChildProcess;
  /** Frames sent so far. */
  sent(): number;
  /** Resolves once at least `n` frames went out (rejects if the sender died first). */
  waitForSent(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts sending `frame` out of `ifname` (inside a namespace with `execPrefix`). Fails clearly if
 * python3 is missing or the socket cannot be opened.
 */
export async function startLldpSender(o: { ifname: string; frame: Buffer; execPrefix?: string[]; intervalSec?: number; durationSec?: number }): Promise<LldpSender> {
  const argv = [...(o.execPrefix ?? []), 'python3', '-c', SENDER, o.ifname, o.frame.toString('hex'), String(o.intervalSec ?? 1), String(o.durationSec ?? 120)];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let count = 0;
  let stderr = '';
  let spawnError: Error | null = null;
  proc.stdout!.on('data', (c: Buffer) => {
    const last = c.toString().trim().split('\n').at(-1);
    if (last && /^\d+$/.test(last)) count = Number(last);
  });
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.once('error', (err) => (spawnError = err));
  const exited = new Promise<void>((resolve) => proc.once('close', () => resolve()));
  const sender: LldpSender = {
    proc,
    sent: () => count,
    async waitForSent(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (count < n) {
        if (spawnError) throw new Error(`LLDP sender could not start (python3 missing?): ${(spawnError as Error).message}`);
        if (proc.exitCode !== null && count < n) throw new Error(`LLDP sender exited (${proc.exitCode}) after ${count} frame(s): ${stderr.trim()}`);
        if (Date.now() > deadline) throw new Error(`LLDP sender sent ${count} of ${n} frame(s) in ${timeoutMs} ms: ${stderr.trim()}`);
        await sleep(50);
      }
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
  await sender.waitForSent(1);
  return sender;
}
