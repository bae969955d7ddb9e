// What format readers hand to the device writer: positioned writes and known-zero ranges.
// Readers are async generators, so back-pressure is just "the writer pulls the next op".

/** Write `data` at byte `offset` of the target. */
export interface DataOp {
  kind: 'data';
  offset: number;
  data: Buffer;
  /** Called once the writer no longer needs `data`, so that its buffer can be reused. */
  release?: () => void;
  /** `data` lies in one of the writer's pool buffers (aligned for direct I/O when the pool is). */
  pooled?: boolean;
  /**
   * `data`'s memory is reused once the next op is asked for (a view of a transient download
   * chunk): the writer is done with it, copied or written, when apply() returns.
   */
  transient?: boolean;
}

/** The range [offset, offset+length) must read back as zeros (qcow2 zero clusters, sparse holes). */
export interface ZeroOp {
  kind: 'zero';
  offset: number;
  length: number;
}

/** The image's virtual size, as soon as the reader knows it (qcow2 header). */
export interface SizeOp {
  kind: 'size';
  virtualSize: number;
}

export type WriteOp = DataOp | ZeroOp | SizeOp;

/** A byte range of the target. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** Discards ranges of the target where a discard leaves zeros (a loop device's punched hole). */
export interface HolePuncher {
  /** Queues a discard of `range`; settles true once it is done, false when the device refused it. */
  discard(range: ByteRange): Promise<boolean>;
  /** Ends the discards once the queued ones are done (and any process doing them). */
  close(): Promise<void>;
}

/**
 * Scratch space for data a streaming reader cannot place yet (a qcow2 cluster whose L2 table comes
 * later in the file). On a real deploy it lives on the target disk beyond the image's virtual
 * size — never in RAM or tmpfs.
 */
export interface SpillArea {
  /** Stores `data`; returns where it went, for `read`. Throws when full. */
  write(data: Buffer): Promise<number>;
  read(position: number, length: number): Promise<Buffer>;
  /** Bytes stored so far. */
  readonly used: number;
}
