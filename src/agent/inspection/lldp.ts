// Passive LLDP listening. Node has no raw sockets, so one `tcpdump` per interface captures the
// first LLDP frame (EtherType 0x88cc) as pcap on stdout; started in the background at boot so
// inventory rarely waits for the switch's next announcement (every 30 s by default). Like IPA's
// collect_lldp_data, a reader waits until every interface has heard a frame or listening timed
// out (ipa-lldp-timeout, counted from boot here); after that the first frame heard is reported.
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
    if (off + len > frame.length) break;
    tlvs.push([type, frame.subarray(off, off + len).toString('hex')]);
    off += len;
    // IPA lists the End of LLDPDU TLV too ([0, ""]); what follows it is only Ethernet padding.
    if (type === 0) break;
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
  /** Per interface: settles once its capture is over (frame heard, timed out, stopped or failed). */
  private readonly done = new Map<string, Promise<void>>();

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
      let finish!: () => void;
      this.done.set(name, new Promise<void>((resolve) => (finish = resolve)));
      proc.stdout!.on('data', (c: Buffer) => chunks.push(c));
      proc.on('error', (err) => {
        clearTimeout(timer);
        this.log.warn({ interface: name, err: err.message }, 'LLDP listening unavailable');
        // A process that never started emits no 'close': readers must not wait for it.
        finish();
      });
      proc.on('close', () => {
        clearTimeout(timer);
        const frame = parsePcap(Buffer.concat(chunks))[0];
        if (frame) {
          const tlvs = parseLldpFrame(frame);
          this.heard.set(name, tlvs);
          this.log.info({ interface: name, tlvs: tlvs.length }, 'LLDP frame received');
        } else {
          this.log.debug({ interface: name, timeout: timeoutSec }, 'no LLDP frame heard');
        }
        finish();
      });
    }
  }

  /** TLVs heard on an interface so far ([] when nothing was heard, as IPA). */
  tlvs(name: string): LldpTlv[] {
    return this.heard.get(name) ?? [];
  }

  /**
   * TLVs per interface once listening on all of them is over, as IPA's collect_lldp_data: every
   * name gets a list, [] for one that heard nothing (or is not listened on).
   */
  async collect(names: readonly string[]): Promise<Record<string, LldpTlv[]>> {
    await Promise.all(names.map((n) => this.done.get(n)));
    return Object.fromEntries(names.map((n) => [n, this.tlvs(n)]));
  }

  /** Everything heard, once listening is over on every interface. */
  async all(): Promise<Record<string, LldpTlv[]>> {
    await Promise.all(this.done.values());
    return Object.fromEntries(this.heard);
  }

  stop(): void {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
  }
}
