// Zeroing a target before writing, when the device can do it without writing every byte
// (WRITE ZEROES with unmap: NVMe deallocate, thin/virtual disks, loop devices). Afterwards the
// writer may skip all-zero blocks, so sparse images write faster than the wire. Devices that would
// zero by writing (HDDs, emulated WRITE SAME) are detected with a timed probe and left alone.
import { posix } from 'node:path';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';

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

/** Zeroes [0, size) of `device` if that is cheap; returns true when it now reads back zeros. */
export async function zeroOutIfCheap(host: Host, device: string, size: number, log: Logger): Promise<boolean> {
  if (!(await host.hasCommand('blkdiscard'))) return false;
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
