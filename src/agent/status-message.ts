// The text heartbeats carry as agent_status_message (Ironic >= 1.72 records it in the node's
// driver_internal_info): what the agent is doing, so that an operator sees a long image write's
// progress with `baremetal node show`, not only through the agent's own API.
import type { CommandRecord } from './executor.js';
import type { ProgressSnapshot } from './image/progress.js';

/** Long enough for a progress line or an error's gist; Ironic keeps it in every node read. */
export const STATUS_MESSAGE_MAX = 255;

const GIB = 1024 ** 3;

function isProgress(p: unknown): p is ProgressSnapshot {
  return typeof p === 'object' && p !== null && typeof (p as ProgressSnapshot).phase === 'string' && typeof (p as ProgressSnapshot).bytes_done === 'number';
}

const gib = (bytes: number) => `${(bytes / GIB).toFixed(2)} GiB`;
const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

/** "writing 1.20 of 2.00 GiB (60 %), 950 MB/s, ETA 1 s, 0.90 GiB of zeros skipped, 2 resumes". */
export function describeProgress(p: ProgressSnapshot): string {
  const parts = [
    p.bytes_total
      ? `${p.phase} ${(p.bytes_done / GIB).toFixed(2)} of ${gib(p.bytes_total)} (${Math.floor((p.bytes_done / p.bytes_total) * 100)} %)`
      : `${p.phase} ${gib(p.bytes_done)}`,
  ];
  if (p.phase === 'writing') {
    parts.push(`${Math.round(p.rate_bytes_per_s / 1e6)} MB/s`);
    if (p.eta_s !== null) parts.push(`ETA ${p.eta_s} s`);
  }
  if (p.bytes_skipped > 0) parts.push(`${gib(p.bytes_skipped)} of zeros skipped`);
  if (p.resumes > 0) parts.push(`${p.resumes} resume${p.resumes === 1 ? '' : 's'}`);
  return parts.join(', ');
}

/** The newest command as one line: running (with its progress, if it reports any) or how it ended. */
export function commandStatusMessage(record: CommandRecord | undefined, now = Date.now()): string | null {
  if (!record) return null;
  let text: string;
  if (record.status === 'RUNNING') {
    const progress = record.progress?.();
    text = `${record.commandName} RUNNING for ${secs(now - record.startedAt)}`;
    if (isProgress(progress)) text += `: ${describeProgress(progress)}`;
  } else {
    text = `${record.commandName} ${record.status} after ${secs((record.finishedAt ?? now) - record.startedAt)}`;
    if (record.error) text += `: ${record.error.message}`;
  }
  return text.length > STATUS_MESSAGE_MAX ? `${text.slice(0, STATUS_MESSAGE_MAX - 1)}…` : text;
}
