// Which digest an image must have: os_hash_algo/os_hash_value, else `checksum` (algorithm inferred
// from its length: 32 md5, 40 sha1, 64 sha256, 96 sha384, 128 sha512), which may also be the URL
// of a checksums file (one bare digest, or "<digest> [*]<file>", "<file> <digest>" or BSD
// "ALGO (<file>) = <digest>" lines, "#" comments), matched to the image URL's file name.
import { getHashes } from 'node:crypto';
import { parallelDigest, type StreamDigest } from './parallel-digest.js';
import { posix } from 'node:path';
import type { ImageInfo } from '../../protocol/image-info.js';
import { AgentError, errors } from '../errors.js';

export const SUPPORTED_ALGORITHMS = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as const;
export type HashAlgorithm = (typeof SUPPORTED_ALGORITHMS)[number];

export interface ExpectedDigest {
  algorithm: HashAlgorithm;
  value: string;
  /** Where the value came from, for error messages. */
  source: string;
}

const BY_LENGTH: Record<number, HashAlgorithm> = { 32: 'md5', 40: 'sha1', 56: 'sha224', 64: 'sha256', 96: 'sha384', 128: 'sha512' };

export function isUrl(v: string): boolean {
  return /^https?:\/\//i.test(v);
}

/** Validates the checksum fields of image_info (IPA answers 400 before starting). */
export function validateChecksumFields(info: ImageInfo): void {
  const algo = info.os_hash_algo ?? null;
  const value = info.os_hash_value ?? null;
  if ((algo && !value) || (!algo && value)) {
    throw errors.invalidParams('image_info: os_hash_algo and os_hash_value must be given together');
  }
  if (algo && !SUPPORTED_ALGORITHMS.includes(algo.toLowerCase() as HashAlgorithm) && !info.checksum) {
    throw errors.invalidParams(`image_info: unsupported os_hash_algo "${algo}" (supported: ${SUPPORTED_ALGORITHMS.join(', ')})`);
  }
  if (info.checksum !== undefined && info.checksum !== null && (typeof info.checksum !== 'string' || info.checksum.trim() === '')) {
    throw errors.invalidParams('image_info: checksum must be a non-empty string');
  }
  if (!algo && !info.checksum) throw errors.invalidParams('image_info: no checksum: give os_hash_algo + os_hash_value or checksum');
  if (info.checksum && !isUrl(info.checksum) && !BY_LENGTH[info.checksum.trim().length]) {
    throw errors.invalidParams(`image_info: checksum "${info.checksum}" is neither a known digest length nor a URL`);
  }
}

function algorithmFor(digest: string, source: string): HashAlgorithm {
  const algo = BY_LENGTH[digest.length];
  if (!algo || !/^[0-9a-f]+$/.test(digest)) throw new AgentError('ImageDownloadError', `${source}: "${digest}" is not a hex digest`);
  return algo;
}

/** Picks the digest for `fileName` out of a checksums file. */
export function parseChecksumFile(text: string, fileName: string, source: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (lines.length === 0) throw new AgentError('ImageDownloadError', `checksum file ${source} is empty`);
  if (lines.length === 1 && !/\s/.test(lines[0]!)) return lines[0]!.toLowerCase();
  for (const line of lines) {
    const bsd = /^[A-Za-z0-9-]+\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$/.exec(line);
    if (bsd) {
      if (posix.basename(bsd[1]!) === fileName) return bsd[2]!.toLowerCase();
      continue;
    }
    const [a, b] = line.split(/\s+/, 2);
    if (!a || !b) continue;
    const file = (x: string) => posix.basename(x.replace(/^\*/, ''));
    if (/^[0-9a-fA-F]+$/.test(a) && file(b) === fileName) return a.toLowerCase();
    if (/^[0-9a-fA-F]+$/.test(b) && file(a) === fileName) return b.toLowerCase();
  }
  throw new AgentError('ImageDownloadError', `checksum file ${source} has no entry for ${fileName}`);
}

/** Resolves the expected digest; `fetch` downloads a checksum file when `checksum` is a URL. */
export async function expectedDigest(info: ImageInfo, fetch: (url: string) => Promise<Buffer>): Promise<ExpectedDigest> {
  const algo = info.os_hash_algo?.toLowerCase();
  if (algo && info.os_hash_value && SUPPORTED_ALGORITHMS.includes(algo as HashAlgorithm)) {
    return { algorithm: algo as HashAlgorithm, value: info.os_hash_value.trim().toLowerCase(), source: `os_hash_value (${algo})` };
  }
  const checksum = info.checksum?.trim();
  if (!checksum) throw errors.invalidParams('image_info has no usable checksum');
  if (isUrl(checksum)) {
    const text = (await fetch(checksum)).toString('utf8');
    const fileName = posix.basename(new URL(info.urls[0]!).pathname);
    const digest = parseChecksumFile(text, fileName, checksum);
    return { algorithm: algorithmFor(digest, checksum), value: digest, source: checksum };
  }
  const digest = checksum.toLowerCase();
  return { algorithm: algorithmFor(digest, 'checksum'), value: digest, source: 'checksum' };
}

export function createDigest(algorithm: HashAlgorithm): StreamDigest {
  if (!getHashes().includes(algorithm)) throw new AgentError('ImageChecksumError', `hash algorithm ${algorithm} is not available`);
  return parallelDigest(algorithm);
}

export function checksumError(imageId: string, location: string, expected: string, actual: string): AgentError {
  return new AgentError(
    'ImageChecksumError',
    `Image failed to verify against checksum. location: ${location}; image ID: ${imageId}; image checksum: ${expected}; verification checksum: ${actual}`,
  );
}
