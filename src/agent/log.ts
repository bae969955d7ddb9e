// pino logging to stdout (the journal in the ramdisk) and to a bounded in-memory ring, so that
// log.collect_system_logs can return the agent's own log without a file on a tmpfs.
import { pino, multistream, type Logger } from 'pino';
import { Writable } from 'node:stream';

export type { Logger };

/** Keeps the most recent log lines up to `maxBytes`. */
export class LogRing extends Writable {
  private lines: string[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes = 8 * 1024 * 1024) {
    super();
  }

  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    const text = typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    this.lines.push(text);
    this.bytes += text.length;
    while (this.bytes > this.maxBytes && this.lines.length > 1) {
      this.bytes -= this.lines.shift()!.length;
    }
    done();
  }

  contents(): string {
    return this.lines.join('');
  }
}

export interface AgentLogging {
  logger: Logger;
  ring: LogRing;
}

export function createLogging(opts: { debug: boolean; destination?: NodeJS.WritableStream; ring?: LogRing }): AgentLogging {
  const ring = opts.ring ?? new LogRing();
  const level = opts.debug ? 'debug' : 'info';
  const destination = opts.destination ?? process.stdout;
  // Whoever reads stdout (the journal, a pipe) may go away. Unhandled, the EPIPE would be an
  // uncaught exception whose handler logs again to the dead stream: a nextTick loop that spins
  // the CPU and starves the API and SIGTERM. Console output is best effort; the ring keeps logging.
  destination.on('error', () => undefined);
  const logger = pino(
    { level: 'debug', base: { svc: 'ferrum-agent' }, timestamp: pino.stdTimeFunctions.isoTime },
    multistream([
      { level, stream: destination },
      { level: 'debug', stream: ring },
    ]),
  );
  return { logger, ring };
}

/** A logger that drops everything (unit tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
