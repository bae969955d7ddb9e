// Progress of an image write, for GET /v1/commands while the command runs and for the logs.
export type ImagePhase = 'preparing' | 'writing' | 'verifying' | 'finalizing' | 'configdrive';

export interface ProgressSnapshot {
  phase: ImagePhase;
  /** Bytes downloaded so far (as served: compressed images count compressed bytes). */
  bytes_done: number;
  bytes_total: number | null;
  /** Bytes written to the device and bytes of zeros skipped. */
  bytes_written: number;
  bytes_skipped: number;
  rate_bytes_per_s: number;
  eta_s: number | null;
  resumes: number;
}

export class ImageProgress {
  phase: ImagePhase = 'preparing';
  done = 0;
  total: number | null = null;
  written = 0;
  skipped = 0;
  resumes = 0;
  private readonly started = Date.now();
  private window: Array<[number, number]> = [];

  /** Records downloaded bytes; the rate is over the last ~5 s. */
  add(bytes: number): void {
    this.done += bytes;
    const now = Date.now();
    const last = this.window[this.window.length - 1];
    if (!last || now - last[0] >= 250) {
      this.window.push([now, this.done]);
      while (this.window.length > 2 && now - this.window[0]![0] > 5000) this.window.shift();
    }
  }

  snapshot(): ProgressSnapshot {
    const first = this.window[0];
    const now = Date.now();
    const span = first ? (now - first[0]) / 1000 : 0;
    const rate = span > 0.2 && first ? (this.done - first[1]) / span : this.done / Math.max(0.001, (now - this.started) / 1000);
    const eta = this.total !== null && rate > 0 ? Math.max(0, (this.total - this.done) / rate) : null;
    return {
      phase: this.phase,
      bytes_done: this.done,
      bytes_total: this.total,
      bytes_written: this.written,
      bytes_skipped: this.skipped,
      rate_bytes_per_s: Math.round(rate),
      eta_s: eta === null ? null : Math.round(eta),
      resumes: this.resumes,
    };
  }
}
