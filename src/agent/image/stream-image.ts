// The streaming pipeline: download → hash (of the bytes as served) → decompress → format reader
// (raw or qcow2) → device writer. One pass, bounded memory, back-pressure end to end.
import type { StreamDigest } from './parallel-digest.js';
import type { FileHandle } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import { copied, decompressing, peek, type Compression } from './decompress.js';
import { DeviceWriter, rawOps, type DeviceZeroing } from './device-writer.js';
import { downloadImage, type DownloadOptions } from './download.js';
import type { ImageProgress } from './progress.js';
import type { SpillArea, WriteOp } from './write-ops.js';

export type ImageFormat = 'raw' | 'qcow2';

export function detectFormat(head: Buffer): ImageFormat {
  return head.length >= 4 && head.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
}

export function invalidImage(details: string): AgentError {
  return new AgentError('InvalidImage', details);
}

export interface StreamOptions {
  download: DownloadOptions;
  hash: StreamDigest;
  progress: ImageProgress;
  fh: FileHandle;
  /** The device opened with O_DIRECT, or null (then every write is buffered). */
  directFh?: FileHandle | null;
  deviceName: string;
  deviceSize: number;
  /**
   * Settles once the device is prepared (wiped; zeroed out where that is cheap), with how it takes
   * zeros. The download starts before: nothing is written to the device until then.
   */
  prepared: Promise<DeviceZeroing>;
  /** disk_format from image_info (null when the conductor did not say). */
  diskFormat: string | null;
  /** Formats the conductor permits (lookup config permitted_image_formats). */
  permittedFormats: string[];
  log: Logger;
  /** Where a qcow2 reader may spill data it cannot place yet: from the image's end to the device's. */
  makeSpill: (fh: FileHandle, start: number, capacity: number) => SpillArea;
}

export interface StreamResult {
  format: ImageFormat;
  compression: Compression;
  /** How far the image reaches on the device. */
  extent: number;
  bytesWritten: number;
  bytesSkipped: number;
  downloaded: number;
}

/**
 * Hashes the bytes as served, in order. Once `handOver()` is called the tap stops: whoever takes
 * over (sharedHashing, for raw images) hashes from byte `hashed` on.
 */
class HashTap {
  hashed = 0;
  private stopped = false;

  constructor(
    private readonly hash: StreamDigest,
    private readonly progress: ImageProgress,
  ) {}

  async *pipe(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      if (!this.stopped) {
        const wait = this.hash.update(chunk);
        if (wait) await wait;
        this.hashed += chunk.length;
      }
      this.progress.add(chunk.length);
      yield chunk;
    }
  }

  handOver(): number {
    this.stopped = true;
    return this.hashed;
  }
}

/**
 * Raw, uncompressed images: the stream's bytes are the image's, and each lands in a shared pool
 * buffer anyway. The hash worker reads them there (no second copy of every byte); a buffer goes
 * back to the pool only once it is both written and hashed, which keeps the back-pressure.
 */
async function* sharedHashing(ops: AsyncIterable<WriteOp>, hash: StreamDigest, alreadyHashed: number): AsyncGenerator<WriteOp> {
  for await (const op of ops) {
    if (op.kind !== 'data' || op.offset + op.data.length <= alreadyHashed) {
      yield op;
      continue;
    }
    const from = Math.max(0, alreadyHashed - op.offset);
    const hashed = hash.updateShared(from === 0 ? op.data : op.data.subarray(from));
    hashed.catch(() => undefined); // a worker failure surfaces in digest()
    const release = op.release;
    yield { ...op, release: release ? () => void hashed.then(release, release) : undefined };
  }
}

/** A spill area that is only placed once the reader has said how big the image is. */
function deferredSpill(o: StreamOptions, virtualSize: () => number | null): SpillArea {
  let area: SpillArea | null = null;
  const get = () => {
    if (!area) {
      const size = virtualSize();
      if (size === null) throw invalidImage('qcow2 data arrived before its header gave the virtual size');
      const start = Math.ceil(size / 4096) * 4096;
      const capacity = o.deviceSize - start;
      if (capacity <= 0) throw invalidImage('this qcow2 image cannot be streamed (its data precedes its tables) and the disk has no room beyond the image to hold the data meanwhile');
      area = o.makeSpill(o.fh, start, capacity);
    }
    return area;
  };
  return {
    // The spill area lies on the device: not touched before it is prepared (wiped).
    write: async (data) => {
      await o.prepared;
      return get().write(data);
    },
    read: (pos, len) => get().read(pos, len),
    get used() {
      return area?.used ?? 0;
    },
  };
}

export async function streamImageToDevice(o: StreamOptions): Promise<StreamResult> {
  const tap = new HashTap(o.hash, o.progress);
  // Made first: the download is read into its pool buffers, and a zstd worker decompresses into them.
  const writer = new DeviceWriter(o.fh, { deviceName: o.deviceName, deviceSize: o.deviceSize, preZeroed: false, direct: o.directFh ?? null, prepared: o.prepared });
  // Every consumer below is done with a chunk when it asks for the next (or copies it, or takes its pool buffer).
  const source = tap.pipe(downloadImage({ ...o.download, readInto: writer.pool }));
  try {
    return await streamFrom(source, tap, writer, o);
  } catch (err) {
    // Whatever failed (the download, a refused format, a write), the device's preparation has
    // ended and no write is in flight when this returns.
    await writer.drain();
    throw err;
  } finally {
    // On failure (a refused format, a write error) the download is closed now, not when its stall
    // watchdog fires; after success this is a no-op. Not awaited: closing may wait for a read.
    source.return(undefined).catch(() => undefined);
  }
}

/** Why an image of `format` may not be written here (disk_format says otherwise, not permitted), or null. */
function refusal(format: ImageFormat, o: StreamOptions): AgentError | null {
  if (o.diskFormat && o.diskFormat !== format && !(o.diskFormat === 'iso' && format === 'raw')) {
    return invalidImage(`the image is ${format} but its disk_format says ${o.diskFormat}`);
  }
  const permittedName = format === 'raw' && o.diskFormat === 'iso' ? 'iso' : format;
  if (o.permittedFormats.length && !o.permittedFormats.includes(permittedName)) {
    return invalidImage(`image format ${permittedName} is not permitted (permitted: ${o.permittedFormats.join(', ')})`);
  }
  return null;
}

async function streamFrom(source: AsyncGenerator<Buffer>, tap: HashTap, writer: DeviceWriter, o: StreamOptions): Promise<StreamResult> {
  const { stream: plain, compression, reusesChunks, via } = await decompressing(source, { pool: writer.pool, hash: { digest: o.hash, handOver: () => tap.handOver() }, sourceReusesChunks: true });
  const { head, stream: peeked } = await peek(plain, 4);
  const format = detectFormat(head);
  const refused = refusal(format, o);
  if (refused) {
    // Closed now (peek has taken its first chunk): a decompressor is not left running.
    await plain.return(undefined).catch(() => undefined);
    throw refused;
  }
  o.log.info({ format, compression, decompressor: via }, 'image format detected');

  let virtualSize: number | null = null;
  let ops: AsyncIterable<WriteOp>;
  // rawOps takes a chunk's pool buffer, or copies the chunk, before it asks for the next. The qcow2
  // reader copies what it keeps across chunks when told its input is transient, and the writer is
  // done with each of its ops when apply() returns; without direct I/O (no gathering) it gets
  // copies instead.
  const transientQcow2 = reusesChunks && writer.gathers;
  const stream = reusesChunks && format === 'qcow2' && !transientQcow2 ? copied(peeked) : peeked;
  if (format === 'qcow2') {
    const { readQcow2 } = await import('./qcow2-reader.js');
    // Small ops: the writer copies them into its own aligned buffers anyway, and big short-lived
    // buffers are what drives the agent's peak memory (V8 collects external memory late).
    ops = readQcow2(stream, { spill: deferredSpill(o, () => virtualSize), log: o.log, maxOpBytes: 1024 * 1024, coalesceByCopy: !writer.gathers, transientInput: transientQcow2 });
  } else if (compression === null) {
    ops = sharedHashing(rawOps(stream, writer.pool), o.hash, tap.handOver());
  } else {
    ops = rawOps(stream, writer.pool);
  }
  o.progress.phase = 'writing';
  try {
    for await (const op of ops) {
      if (op.kind === 'size') virtualSize = op.virtualSize;
      await writer.apply(op);
      o.progress.written = writer.bytesWritten;
      o.progress.skipped = writer.bytesSkipped;
    }
    await writer.finish();
  } catch (err) {
    // A qcow2 the reader refuses (backing file, encryption, corruption…) is the image's fault.
    if (err instanceof Error && err.name === 'Qcow2Error') throw invalidImage(err.message);
    throw err;
  }
  o.progress.written = writer.bytesWritten;
  o.progress.skipped = writer.bytesSkipped;
  return {
    format,
    compression,
    extent: Math.max(writer.extent, virtualSize ?? 0),
    bytesWritten: writer.bytesWritten,
    bytesSkipped: writer.bytesSkipped,
    downloaded: o.progress.done,
  };
}
