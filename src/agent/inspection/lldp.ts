// Passive LLDP listening. Node has no raw sockets, so one `tcpdump` per interface captures the
// first LLDP frame (EtherType 0x88cc) as pcap on stdout; started in the background at boot so
// inventory never waits for the switch's next announcement (every 30 s by default).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../log.js';

export type LldpTlv = [number, string];

/** TLVs of an LLDP frame (Ethernet header included) as IPA reports them: [type, value hex]. */
export function parseLldpFrame(frame: Buffer): LldpTlv[] {
  let off = 12;
  let etherType = frame.readUInt16BE(off);
  if (etherType === 0x8100) {
    off += 4; // VLAN tag
    etherType = frame.readUInt16BE(off);
  }
  if (etherType !== 0x88cc) return [];
  off += 2;
  const tlvs: LldpTlv[] = [];
  while (off + 2 <= frame.length) {
    const header = frame.readUInt16BE(off);
    const type = header >> 9;
    const len = header & 0x1ff;
    off += 2;
    if (type === 0 || off + len > frame.length) break; // End of LLDPDU
    tlvs.push([type, frame.subarray(off, off + len).toString('hex')]);
    off += len;
  }
  return tlvs;
}

/** Frames of a classic pcap stream (little or big endian). */
export function parsePcap(buf: Buffer): Buffer[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const frames: Buffer[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const incl = u32(off + 8);
    if (off + 16 + incl > buf.length) break;
    frames.push(buf.subarray(off + 16, off + 16 + incl));
    off += 16 + incl;
  }
  return frames;
}

export class LldpListener {
  private readonly heard = new Map<string, LldpTlv[]>();
  private readonly procs: ChildProcess[] = [];

  constructor(private readonly log: Logger) {}

  /** Starts listening on each interface for up to `timeoutSec`. Missing tcpdump is logged, not fatal. */
  start(interfaces: string[], timeoutSec: number, tcpdump = 'tcpdump'): void {
    for (const name of interfaces) {
      const chunks: Buffer[] = [];
      const proc = spawn(tcpdump, ['-i', name, '-c', '1', '-U', '-s', '9000', '-w', '-', 'ether', 'proto', '0x88cc'], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      this.procs.push(proc);
      const timer = setTimeout(() => proc.kill('SIGTERM'), timeoutSec * 1000);
      proc.stdout!.on('data', (c: Buffer) => chunks.push(c));
      proc.on('error', (err) => {
        clearTimeout(timer);
        this.log.warn({ interface: name, err: err.message }, 'LLDP listening unavailable');
      });
      proc.on('close', () => {
        clearTimeout(timer);
        const frame = parsePcap(Buffer.concat(chunks))[0];
        if (frame) {
          const tlvs = parseLldpFrame(frame);
          this.heard.set(name, tlvs);
          this.log.info({ interface: name, tlvs: tlvs.length }, 'LLDP frame received');
        }
      });
    }
  }

  /** TLVs heard on an interface ([] when nothing was heard, as IPA). */
  tlvs(name: string): LldpTlv[] {
    return this.heard.get(name) ?? [];
  }

  all(): Record<string, LldpTlv[]> {
    return Object.fromEntries(this.heard);
  }

  stop(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGTERM');
  }
}
