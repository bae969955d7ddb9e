// The image download as a stream of chunks: plain-HTTP bodies through plain-http.ts where the
// consumer gives buffers to read into, undici for everything else. A dropped connection resumes
// where it broke with an HTTP Range request (If-Range keeps a changed file from being spliced in),
// failing over through every URL; a server that ignores Range is re-read and the bytes already
// delivered are skipped. A stall watchdog aborts a connection that stops sending. Back-pressure:
// the socket is only read as fast as the consumer pulls.
import { Agent, ProxyAgent, request, type Dispatcher } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BufferPool } from './buffer-pool.js';
import { plainHttpApplies, plainHttpGet } from './plain-http.js';

export interface DownloadOptions {
  urls: string[];
  imageId: string;
  /** Seconds without a byte before a connection counts as dropped (ipa-image-download-connection-timeout). */
  stallTimeoutSec: number;
  /** Retries per URL after connection errors, 5xx and stalls (ipa-image-download-connection-retries). */
  retries: number;
  retryIntervalSec: number;
  insecure: boolean;
  /** Plain-HTTP bodies through plain-http.ts where the consumer gives `readInto` (default true); false: undici only. */
  plainHttp?: boolean;
  /**
   * The consumer's pool buffers, which plain-HTTP bodies are read straight into. The consumer is
   * then done with a chunk when it asks for the next one, unless it takes the chunk's pool buffer
   * (offeredPoolBuffers). Without it, every chunk is the consumer's to keep.
   */
  readInto?: BufferPool;
  proxies?: { http?: string; https?: string } | null;
  noProxy?: string | null;
  /** Extra request headers (e.g. Authorization). */
  headers?: Record<string, string>;
  log: Logger;
  signal?: AbortSignal;
  /** Called once the size is known (Content-Length of the first answer). */
  onSize?: (bytes: number) => void;
  /** Called on every resume, with the offset it resumed from. */
  onResume?: (offset: number, url: string) => void;
  /** Called when a URL answers with the image (200/206). */
  onServing?: (url: string) => void;
}

export function downloadError(imageId: string, msg: string): AgentError {
  return new AgentError('ImageDownloadError', `Download of image ${imageId} failed: ${msg}`);
}

/** True when `host` matches a no_proxy list (suffix match, "*" for all, as curl/requests do). */
export function bypassesProxy(host: string, noProxy: string | null | undefined): boolean {
  if (!noProxy) return false;
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return noProxy
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean)
    .some((entry) => entry === '*' || h === entry.replace(/^\./, '') || h.endsWith(entry.startsWith('.') ? entry : `.${entry}`));
}

class RetryableError extends Error {}
/** This URL cannot work (4xx): no retries on it, the next URL is tried. */
class UrlFailedError extends Error {}

interface Dispatchers {
  direct: Dispatcher;
  proxy: Map<string, Dispatcher>;
}

/** An answer from either client, as the download loop uses it. */
interface Answer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Buffer>;
  dump(): Promise<void>;
  text(): Promise<string>;
}

/** What the plain-HTTP reader tells the stall watchdog. */
interface ReadSignals {
  onRead: () => void;
  onWaitForMemory: (waiting: boolean) => void;
}

async function ask(url: string, headers: Record<string, string>, signal: AbortSignal, o: DownloadOptions, d: Dispatchers, signals: ReadSignals): Promise<Answer> {
  const target = new URL(url);
  const dispatcher = dispatcherFor(target, o, d);
  if (o.readInto && o.plainHttp !== false && dispatcher === d.direct && plainHttpApplies(target, headers)) {
    const plain = await plainHttpGet(target, headers, signal, { memory: o.readInto, insecure: o.insecure, ...signals });
    if (plain) {
      o.log.info({ url, status: plain.statusCode, client: 'plain-http' }, 'image server answered');
      const dump = async () => plain.close();
      return { statusCode: plain.statusCode, headers: plain.headers, body: plain.body, dump, text: async () => (await dump(), '') };
    }
    o.log.debug({ url }, 'not a plain answer (status, chunked, or malformed head): asking again with undici');
  }
  const res = await request(url, {
    method: 'GET',
    headers,
    dispatcher,
    signal,
    headersTimeout: o.stallTimeoutSec * 1000,
    bodyTimeout: o.stallTimeoutSec * 1000,
  });
  o.log.info({ url, status: res.statusCode, client: 'undici' }, 'image server answered');
  return { statusCode: res.statusCode, headers: res.headers, body: res.body, dump: () => res.body.dump(), text: () => res.body.text() };
}

function dispatcherFor(url: URL, o: DownloadOptions, d: Dispatchers): Dispatcher {
  const proxy = url.protocol === 'https:' ? o.proxies?.https : o.proxies?.http;
  if (!proxy || bypassesProxy(url.hostname, o.noProxy)) return d.direct;
  let p = d.proxy.get(proxy);
  if (!p) {
    p = new ProxyAgent({ uri: proxy, requestTls: { rejectUnauthorized: !o.insecure } });
    d.proxy.set(proxy, p);
  }
  return p;
}

/** Yields the image's bytes in order, exactly once each, whatever happens to connections. */
export async function* downloadImage(o: DownloadOptions): AsyncGenerator<Buffer> {
  const dispatchers: Dispatchers = {
    direct: new Agent({ connect: { rejectUnauthorized: !o.insecure, timeout: o.stallTimeoutSec * 1000 } }),
    proxy: new Map(),
  };
  let offset = 0;
  let total: number | null = null;
  let validator: string | null = null;
  const failures: string[] = [];
  try {
    for (const url of o.urls) {
      let attempt = 0;
      // An ETag/Last-Modified only means something to the server that issued it: a mirror's differ
      // even for the same image (the digest still guards what is spliced together).
      validator = null;
      for (;;) {
        const offsetBefore = offset;
        o.signal?.throwIfAborted();
        const ac = new AbortController();
        const abortOuter = () => ac.abort(o.signal?.reason);
        o.signal?.addEventListener('abort', abortOuter, { once: true });
        let stalled = false;
        // One coarse timer per connection, not one per chunk: chunks arrive thousands of times a second.
        let lastData = Date.now();
        const arm = () => (lastData = Date.now());
        // The watchdog times the server, not the consumer: while the writer holds a chunk, or
        // every buffer the reader could fill (back-pressure, a slow disk, a disk still being
        // prepared), the connection is not stalled.
        let consumerHasChunk = false;
        let readerWaitsForMemory = false;
        const onWaitForMemory = (waiting: boolean) => {
          readerWaitsForMemory = waiting;
          arm();
        };
        const watchdog: NodeJS.Timeout = setInterval(() => {
          if (!consumerHasChunk && !readerWaitsForMemory && Date.now() - lastData > o.stallTimeoutSec * 1000) {
            stalled = true;
            ac.abort(new Error('stalled'));
          }
        }, Math.min(1000, o.stallTimeoutSec * 250));
        try {
          const headers: Record<string, string> = { ...o.headers };
          if (offset > 0) {
            headers['range'] = `bytes=${offset}-`;
            if (validator) headers['if-range'] = validator;
            o.onResume?.(offset, url);
            o.log.warn({ url, offset }, 'resuming image download');
          }
          arm();
          const res = await ask(url, headers, ac.signal, o, dispatchers, { onRead: arm, onWaitForMemory });
          let skip = 0;
          const served = res.headers['etag'] ?? res.headers['last-modified'];
          if (res.statusCode === 206 && offset > 0) {
            const range = /bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
            if (!range || Number(range[1]) !== offset) {
              await res.dump();
              throw new Error(`server resumed at the wrong offset (${String(res.headers['content-range'])}, wanted ${offset})`);
            }
            validator ??= served ? String(served) : null;
          } else if (res.statusCode === 200) {
            // A fresh answer: the whole file again (server ignored Range, or If-Range said it changed).
            if (offset > 0) {
              if (validator && served && String(served) !== validator) {
                await res.dump();
                throw new AgentError('ImageDownloadError', `Download of image ${o.imageId} failed: the image changed on the server during the download (${url})`);
              }
              skip = offset;
            }
            const len = Number(res.headers['content-length']);
            if (total === null && Number.isFinite(len) && len >= 0) {
              total = len;
              o.onSize?.(len);
            }
            validator ??= served ? String(served) : null;
          } else {
            const body = (await res.text().catch(() => '')).slice(0, 300);
            const msg = `${url} answered HTTP ${res.statusCode}${body ? `: ${body.trim()}` : ''}`;
            if (res.statusCode >= 500 || res.statusCode === 408 || res.statusCode === 429) throw new RetryableError(msg);
            // Not retried, but not the end either: the next URL may well have the image (as IPA).
            throw new UrlFailedError(msg);
          }
          o.onServing?.(url);
          for await (const raw of res.body) {
            arm();
            let chunk = raw as Buffer;
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length;
                continue;
              }
              chunk = chunk.subarray(skip);
              skip = 0;
            }
            offset += chunk.length;
            consumerHasChunk = true;
            yield chunk;
            consumerHasChunk = false;
            arm();
          }
          if (total !== null && offset < total) throw new RetryableError(`connection closed after ${offset} of ${total} bytes`);
          return;
        } catch (err) {
          if (err instanceof AgentError) throw err;
          if (o.signal?.aborted) throw err;
          if (err instanceof UrlFailedError) {
            failures.push(err.message);
            o.log.error({ url, reason: err.message }, 'giving up on this image URL');
            break;
          }
          // undici's own header/body timeouts are the same watchdog: report them the same way.
          const code = (err as { code?: unknown }).code;
          if (code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') stalled = true;
          const reason = stalled ? `no data for ${o.stallTimeoutSec} s` : (err as Error).message;
          // `retries` bounds consecutive fruitless attempts: a connection that delivered new bytes
          // before it broke starts the count again, or a long download over a flaky link would
          // fail after a few resumes that each made progress.
          if (offset > offsetBefore) attempt = 0;
          attempt++;
          failures.push(`${url}: ${reason}`);
          if (attempt > o.retries) {
            o.log.error({ url, reason }, 'giving up on this image URL');
            break;
          }
          o.log.warn({ url, reason, attempt, of: o.retries, offset }, `image download interrupted; retrying in ${o.retryIntervalSec} s`);
          await sleep(o.retryIntervalSec * 1000, undefined, { signal: o.signal });
        } finally {
          // A body left unread (an error before it was consumed) must not hold its connection open.
          ac.abort(new Error('download attempt over'));
          clearInterval(watchdog);
          o.signal?.removeEventListener('abort', abortOuter);
        }
      }
    }
    throw downloadError(o.imageId, failures.slice(-3).join('; ') || 'no URL to download from');
  } finally {
    await Promise.all([dispatchers.direct, ...dispatchers.proxy.values()].map((d) => d.close().catch(() => undefined)));
  }
}

/** Small text downloads (checksum files, configdrive URLs): one request with retries. */
export async function fetchText(url: string, o: Pick<DownloadOptions, 'insecure' | 'retries' | 'retryIntervalSec' | 'stallTimeoutSec' | 'log' | 'imageId' | 'signal'>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of downloadImage({ ...o, urls: [url] })) chunks.push(c);
  return Buffer.concat(chunks);
}
