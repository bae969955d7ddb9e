// LLDP: the pcap and TLV parsers on frames tcpdump captured from a real link
// (test/fixtures/lldp/), the listener's wait-until-heard-or-timed-out semantics with stand-in
// tcpdump scripts, and how the inventory reports what was heard (IPA: [[type, hex]…], [] when
// nothing was heard, null without ipa-collect-lldp).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LldpListener, parseLldpFrame, parsePcap } from '../../src/agent/inspection/lldp.js';
import { InventoryCollector, type LldpSource } from '../../src/agent/hardware/inventory/index.js';
import { FakeHost, ok } from './support/fake-host.js';
import { captureLog } from './support/log-capture.js';

const PCAP = readFileSync(join(import.meta.dirname, '../fixtures/lldp/switch-announcements.pcap'));

// Written out by hand from IEEE 802.1AB, independently of the code that built the frame.
const hex = (s: string) => Buffer.from(s).toString('hex');
const SWITCH_A: Array<[number, string]> = [
  [1, '04a0369f123456'], // chassis ID, subtype 4 (MAC)
  [2, '05' + hex('Ethernet1/7')], // port ID, subtype 5 (interface name)
  [3, '0078'], // TTL 120 s
  [4, hex('server-07 eth0')],
  [5, hex('switch-a.example')],
  [6, hex('Ferrum test switch, LLDP from a raw socket')],
  [7, '00140004'], // capabilities: bridge+router, bridge enabled
  [8, '0501c00002fa020000000700'], // management address 192.0.2.250, ifIndex 7
  [127, '0080c2010064'], // 802.1 port VLAN 100
  [127, '0080c2030064' + '0c' + hex('provisioning')], // 802.1 VLAN name
  [127, '00120f01036c01001e'], // 802.3 MAC/PHY
  [127, '00120f042400'], // 802.3 max frame size 9216
  [0, ''], // End of LLDPDU: IPA lists it too
];
const SWITCH_B: Array<[number, string]> = [
  [1, '04020000000001'],
  [2, '03020000000002'],
  [3, '001e'],
  [0, ''],
];

/** The same capture with every header field byte-swapped (a big-endian writer) and/or the nanosecond magic. */
function rewritePcap(buf: Buffer, o: { bigEndian: boolean; nano: boolean }): Buffer {
  const out = Buffer.from(buf);
  const w32 = (off: number, v: number) => (o.bigEndian ? out.writeUInt32BE(v, off) : out.writeUInt32LE(v, off));
  const w16 = (off: number, v: number) => (o.bigEndian ? out.writeUInt16BE(v, off) : out.writeUInt16LE(v, off));
  w32(0, o.nano ? 0xa1b23c4d : 0xa1b2c3d4);
  w16(4, buf.readUInt16LE(4));
  w16(6, buf.readUInt16LE(6));
  for (const f of [8, 12, 16, 20]) w32(f, buf.readUInt32LE(f));
  let off = 24;
  while (off + 16 <= buf.length) {
    const incl = buf.readUInt32LE(off + 8);
    for (const f of [0, 4, 8, 12]) w32(off + f, buf.readUInt32LE(off + f));
    off += 16 + incl;
  }
  return out;
}

describe('parsePcap', () => {
  it('splits the captured stream into its frames', () => {
    expect(PCAP.readUInt32LE(0)).toBe(0xa1b2c3d4); // what tcpdump wrote: little-endian, microseconds
    const frames = parsePcap(PCAP);
    expect(frames.map((f) => f.length)).toEqual([189, 60]);
    expect(frames[0]!.subarray(0, 6).toString('hex')).toBe('0180c200000e'); // nearest-bridge multicast
    expect(frames[0]!.readUInt16BE(12)).toBe(0x88cc);
  });

  it('reads big-endian and nanosecond captures alike', () => {
    const expected = parsePcap(PCAP).map((f) => f.toString('hex'));
    for (const o of [
      { bigEndian: true, nano: false },
      { bigEndian: false, nano: true },
      { bigEndian: true, nano: true },
    ]) {
      expect(parsePcap(rewritePcap(PCAP, o)).map((f) => f.toString('hex'))).toEqual(expected);
    }
  });

  it('keeps only complete records of a cut-off stream (tcpdump killed mid-write) and ignores a bare header', () => {
    expect(parsePcap(PCAP.subarray(0, PCAP.length - 1))).toHaveLength(1);
    expect(parsePcap(PCAP.subarray(0, 24 + 16 + 100))).toEqual([]);
    expect(parsePcap(PCAP.subarray(0, 24))).toEqual([]);
    expect(parsePcap(Buffer.alloc(0))).toEqual([]);
  });
});

describe('parseLldpFrame', () => {
  const [a, b] = parsePcap(PCAP) as [Buffer, Buffer];

  it('gives every TLV as [type, value hex] in frame order, End of LLDPDU included, as IPA', () => {
    expect(parseLldpFrame(a)).toEqual(SWITCH_A);
  });

  it('stops at End of LLDPDU: the Ethernet padding of a short frame is not reported as TLVs', () => {
    expect(parseLldpFrame(b)).toEqual(SWITCH_B);
  });

  it('decodes to what the switch announced', () => {
    const tlvs = new Map(parseLldpFrame(a).filter(([t]) => t !== 127).map(([t, v]) => [t, Buffer.from(v, 'hex')]));
    expect([...tlvs.get(1)!.subarray(1)].map((x) => x.toString(16).padStart(2, '0')).join(':')).toBe('a0:36:9f:12:34:56');
    expect(tlvs.get(2)!.subarray(1).toString()).toBe('Ethernet1/7');
    expect(tlvs.get(3)!.readUInt16BE(0)).toBe(120);
    expect(tlvs.get(5)!.toString()).toBe('switch-a.example');
  });

  it('skips an 802.1Q tag', () => {
    const tagged = Buffer.concat([a.subarray(0, 12), Buffer.from('81000064', 'hex'), a.subarray(12)]);
    expect(parseLldpFrame(tagged)).toEqual(SWITCH_A);
  });

  it('ignores other EtherTypes and stops at a TLV that runs past the frame', () => {
    const ipv4 = Buffer.from(a);
    ipv4.writeUInt16BE(0x0800, 12);
    expect(parseLldpFrame(ipv4)).toEqual([]);
    // Cut inside the system description (TLV 6): the TLVs before it survive.
    const cut = a.subarray(0, 14 + 9 + 14 + 4 + 16 + 18 + 2 + 10);
    expect(parseLldpFrame(cut)).toEqual(SWITCH_A.slice(0, 5));
  });
});

// ------------------------------------------------------------------------------------ listener

const scratch = mkdtempSync(join(tmpdir(), 'ferrum-lldp-unit-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A stand-in for tcpdump: `body` is a shell script; the interface is $2 (after -i). */
function fakeTcpdump(name: string, body: string): string {
  const path = join(scratch, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

describe('LldpListener', () => {
  writeFileSync(join(scratch, 'capture.pcap'), PCAP);
  // Hears the capture on "eth0" at once; on any other interface nothing comes until it is killed.
  const tcpdump = fakeTcpdump('tcpdump', `if [ "$2" = eth0 ]; then cat '${join(scratch, 'capture.pcap')}'; exit 0; fi\nexec sleep 60`);

  it('reports the first frame heard, and [] for a quiet interface only once its listening timed out', async () => {
    const { log, messages } = captureLog();
    const l = new LldpListener(log);
    const started = Date.now();
    l.start(['eth0', 'eth1'], 1, tcpdump);
    try {
      expect(await l.collect(['eth0'])).toEqual({ eth0: SWITCH_A });
      expect(Date.now() - started).toBeLessThan(900); // did not wait for eth1
      const both = await l.collect(['eth0', 'eth1']);
      expect(Date.now() - started).toBeGreaterThanOrEqual(950); // eth1 had its full second
      expect(both).toEqual({ eth0: SWITCH_A, eth1: [] });
      expect(await l.all()).toEqual({ eth0: SWITCH_A });
      expect(await l.collect(['eth9'])).toEqual({ eth9: [] }); // never listened on
      expect(messages()).toContain('LLDP frame received');
      expect(messages()).toContain('no LLDP frame heard');
    } finally {
      l.stop();
    }
  });

  it('stop() ends the captures and releases the readers', async () => {
    const l = new LldpListener(captureLog().log);
    l.start(['eth1'], 60, tcpdump);
    const reading = l.collect(['eth1']);
    l.stop();
    expect(await reading).toEqual({ eth1: [] });
  });

  it('without tcpdump: logged, and nobody waits', async () => {
    const { log, messages } = captureLog();
    const l = new LldpListener(log);
    l.start(['eth0'], 60, join(scratch, 'no-such-tcpdump'));
    expect(await l.collect(['eth0'])).toEqual({ eth0: [] });
    expect(messages()).toContain('LLDP listening unavailable');
  });
});

// ----------------------------------------------------------------------------------- inventory

function nicHost(): FakeHost {
  const files: Record<string, string> = {};
  const links: Record<string, string> = {};
  for (const [name, mac] of [
    ['eth0', '52:54:00:00:00:01'],
    ['eth1', '52:54:00:00:00:02'],
  ] as const) {
    files[`/sys/class/net/${name}/address`] = `${mac}\n`;
    files[`/sys/class/net/${name}/carrier`] = '1\n';
    files[`/sys/class/net/${name}/type`] = '1\n';
    links[`/sys/class/net/${name}/device`] = '../../../0000:00:03.0';
  }
  files['/proc/meminfo'] = 'MemTotal:        1024 kB\n';
  return new FakeHost({
    files,
    links,
    dirs: ['/sys/class/net/eth0/device', '/sys/class/net/eth1/device'],
    run: (cmd) => (cmd === 'ip' ? ok('[]') : cmd === 'lsblk' ? ok('{"blockdevices": []}') : cmd === 'lscpu' ? ok('CPU(s): 1\nArchitecture: x86_64\n') : ok('')),
  });
}

describe('inventory interfaces[].lldp', () => {
  it('is null on every interface without ipa-collect-lldp', async () => {
    const inv = await new InventoryCollector(nicHost(), { bootif: null, interfaces: ['eth0', 'eth1'] }).collect();
    expect(inv.interfaces.map((i) => [i.name, i.lldp])).toEqual([
      ['eth0', null],
      ['eth1', null],
    ]);
  });

  it('with it: what the listener heard, [] where nothing was heard; collection waits for the listener', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const asked: string[][] = [];
    const source: LldpSource = {
      async collect(names) {
        asked.push([...names]);
        await gate;
        return Object.fromEntries(names.map((n) => [n, n === 'eth0' ? SWITCH_A : []]));
      },
    };
    const collector = new InventoryCollector(nicHost(), { bootif: null, interfaces: ['eth0', 'eth1'], lldp: async () => source });
    let done = false;
    const pending = collector.collect().then((inv) => ((done = true), inv));
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false);
    release();
    const inv = await pending;
    expect(asked).toEqual([['eth0', 'eth1']]);
    expect(inv.interfaces.map((i) => [i.name, i.lldp])).toEqual([
      ['eth0', SWITCH_A],
      ['eth1', []],
    ]);
  });

  it('stays null when listening could not start', async () => {
    const inv = await new InventoryCollector(nicHost(), { bootif: null, interfaces: ['eth0'], lldp: async () => null }).collect();
    expect(inv.interfaces[0]!.lldp).toBeNull();
  });
});
