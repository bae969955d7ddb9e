// Zeroing a target before writing, when the device can do it without writing every byte. Afterwards
// the writer may skip all-zero blocks, so sparse images write faster than the wire. Two ways:
//  - a discard, where the device documents that discarded blocks read back as zeros: NVMe
//    namespaces whose DLFEAT says so. A discard moves no data, whatever the device's write speed.
//  - WRITE ZEROES with unmap (NVMe deallocate, thin/virtual disks), when a timed probe shows it is
//    offloaded; devices that would zero by writing (HDDs, emulated WRITE SAME) are left alone.
// Loop devices are not pre-zeroed: the writer discards the image's zero runs as they pass
// (punchesHoles and holePuncher below). A discard of the whole span first freed every page of a
// tmpfs-backed file that a random image then had to fill again: 4.25 s instead of ~3.6 s for 2 GiB.
import { posix } from 'node:path';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { PassThrough } from 'node:stream';
import type { ByteRange, HolePuncher } from './write-ops.js';

// A probe big enough that timing noise does not decide: 256 MiB takes ~1 s on an HDD, ~0 when offloaded.
const PROBE_BYTES = 256 * 1024 * 1024;
/** Faster than a disk writes in practice: the device offloads zeroing (deallocates, punches holes). */
const OFFLOAD_BYTES_PER_S = 2e9;

/** The whole-disk sysfs dir of a disk or partition name (queue/ lives there). */
async function queueDir(host: Host, device: string): Promise<string | null> {
  const name = posix.basename(await host.realpath(device).catch(() => device));
  if (await host.exists(`/sys/class/block/${name}/queue`)) return `/sys/class/block/${name}/queue`;
  const sys = await host.realpath(`/sys/class/block/${name}`).catch(() => null);
  if (!sys) return null;
  const parent = posix.basename(posix.dirname(sys));
  return (await host.exists(`/sys/class/block/${parent}/queue`)) ? `/sys/class/block/${parent}/queue` : null;
}

/** The namespace's DLFEAT (NVMe 1.3+, Identify Namespace byte 33): bits 2:0 = 001b, deallocated blocks read as zeros. */
export function dlfeatReadsZeroes(idNsJson: string): boolean {
  try {
    const dlfeat = (JSON.parse(idNsJson) as { dlfeat?: unknown }).dlfeat;
    return typeof dlfeat === 'number' && (dlfeat & 0x7) === 1;
  } catch {
    return false;
  }
}

/** Why a discard of `device` leaves zeros behind, or null when nothing says it does. */
export async function discardZeroesBecause(host: Host, device: string): Promise<string | null> {
  const q = await queueDir(host, device);
  if (!q || !(Number((await host.readTextOrNull(`${q}/discard_max_bytes`))?.trim() ?? '0') > 0)) return null;
  const disk = posix.basename(posix.dirname(q));
  if (/^nvme\d+n\d+$/.test(disk) && (await host.hasCommand('nvme'))) {
    const res = await host.run('nvme', ['id-ns', `/dev/${disk}`, '--output-format=json'], { allowFailure: true, timeoutMs: 15_000 });
    if (res.exitCode === 0 && dlfeatReadsZeroes(res.stdout)) return 'an NVMe namespace whose DLFEAT says deallocated blocks read as zeros';
  }
  return null;
}

/**
 * True for a loop device that takes discards: the loop driver punches a hole in its backing file
 * (or zeroes a backing block device without fallback), so a discarded range reads back zeros or
 * the discard fails. The writer then discards the image's zero runs instead of writing them.
 */
export async function punchesHoles(host: Host, device: string): Promise<boolean> {
  const q = await queueDir(host, device);
  if (!q || !/^loop\d+$/.test(posix.basename(posix.dirname(q)))) return false;
  return Number((await host.readTextOrNull(`${q}/discard_max_bytes`))?.trim() ?? '0') > 0;
}

// One small shell runs every blkdiscard of a write, fed range by range while the image streams, so
// the holes are punched on the other core meanwhile instead of after the last byte. Spawning each
// from the agent would fork a process of ~150 MiB, after which every page of the writer's buffers
// takes a copy-on-write fault. --force skips blkdiscard's signature probe (libblkid reads the
// device each time: ~12 ms a range instead of ~5.5 ms); the agent chose and wiped this device.
const DISCARD_SCRIPT = 'while read -r off len; do if blkdiscard --force --offset "$off" --length "$len" "$1" 2>/dev/null; then echo ok; else echo no; fi; done';

/**
 * Discards ranges of `device` one at a time, in order, as they are handed over: the process starts
 * with the first range and ends with close(). Each range's promise says whether the device took it.
 */
export function holePuncher(host: Host, device: string): HolePuncher {
  let lines: PassThrough | null = null;
  let ended: Promise<void> = Promise.resolve();
  /** The shell is gone (or closed): nothing more is discarded. */
  let over = false;
  const waiting: Array<(ok: boolean) => void> = [];
  const start = (): PassThrough => {
    const input = new PassThrough();
    // A shell that died takes its stdin with it; its unanswered ranges are refused below.
    input.on('error', () => undefined);
    ended = host
      .run('sh', ['-c', DISCARD_SCRIPT, 'ferrum-discard', device], { input, allowFailure: true, onStdoutLine: (line) => waiting.shift()?.(line === 'ok') })
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        over = true;
        for (const answer of waiting.splice(0)) answer(false);
      });
    return input;
  };
  return {
    discard(range: ByteRange): Promise<boolean> {
      if (over) return Promise.resolve(false);
      lines ??= start();
      const answer = new Promise<boolean>((resolve) => waiting.push(resolve));
      lines.write(`${range.offset} ${range.length}\n`);
      return answer;
    },
    async close(): Promise<void> {
      over = true;
      if (lines && !lines.writableEnded) lines.end();
      await ended;
    },
  };
}

async function discard(host: Host, device: string, size: number, because: string, log: Logger): Promise<boolean> {
  await host.assertMayDestroy(device);
  const t0 = performance.now();
  const res = await host.run('blkdiscard', ['--offset', '0', '--length', String(size), device], { allowFailure: true, timeoutMs: 600_000 });
  if (res.exitCode === 0) {
    log.info({ device, bytes: size, ms: Math.round(performance.now() - t0), because }, 'device discarded: zero blocks of the image will be skipped');
    return true;
  }
  log.info({ device, stderr: res.stderr.trim() }, 'discard failed: trying zero-out');
  return false;
}

/** Zeroes [0, size) of `device` if that is cheap; returns true when it now reads back zeros. */
export async function zeroOutIfCheap(host: Host, device: string, size: number, log: Logger): Promise<boolean> {
  if (!(await host.hasCommand('blkdiscard'))) return false;
  const because = await discardZeroesBecause(host, device);
  if (because && (await discard(host, device, size, because, log))) return true;
  return zeroOutOffloaded(host, device, size, log);
}

/** WRITE ZEROES over [0, size) when a timed probe shows the device offloads it. */
async function zeroOutOffloaded(host: Host, device: string, size: number, log: Logger): Promise<boolean> {
  const q = await queueDir(host, device);
  const maxZeroes = q ? Number((await host.readTextOrNull(`${q}/write_zeroes_max_bytes`))?.trim() ?? '0') : 0;
  if (!(maxZeroes > 0)) {
    log.info({ device }, 'device cannot zero out ranges: writing every block');
    return false;
  }
  await host.assertMayDestroy(device);
  const probe = Math.min(PROBE_BYTES, size);
  const t0 = performance.now();
  const res = await host.run('blkdiscard', ['--zeroout', '--offset', '0', '--length', String(probe), device], { allowFailure: true, timeoutMs: 30_000 });
  const secs = (performance.now() - t0) / 1000;
  if (res.exitCode !== 0) {
    log.info({ device, stderr: res.stderr.trim() }, 'zero-out not supported: writing every block');
    return false;
  }
  if (probe / secs < OFFLOAD_BYTES_PER_S && probe === PROBE_BYTES) {
    log.info({ device, rate: Math.round(probe / secs) }, 'zero-out is not offloaded on this device: writing every block');
    return false;
  }
  const t1 = performance.now();
  const full = await host.run('blkdiscard', ['--zeroout', '--offset', '0', '--length', String(size), device], { allowFailure: true, timeoutMs: 600_000 });
  if (full.exitCode !== 0) {
    log.warn({ device, stderr: full.stderr.trim() }, 'zero-out failed: writing every block');
    return false;
  }
  log.info({ device, bytes: size, ms: Math.round(performance.now() - t1) }, 'device zeroed out: zero blocks of the image will be skipped');
  return true;
}
