// A pino logger whose JSON lines are kept in memory, so tests can assert what the agent logged.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export interface CapturedLog {
  log: Logger;
  lines(): Array<Record<string, unknown> & { level: number; msg?: string }>;
  /** Messages (msg) of all lines, in order. */
  messages(): string[];
}

export function captureLog(): CapturedLog {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      raw.push(chunk.toString());
      done();
    },
  });
  const log = pino({ level: 'debug' }, stream);
  const lines = () =>
    raw
      .join('')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown> & { level: number; msg?: string });
  return { log, lines, messages: () => lines().map((l) => String(l.msg ?? '')) };
}
