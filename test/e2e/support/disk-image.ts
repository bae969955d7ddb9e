// The Debian disk image the e2e test deploys, built once by build-disk-image.sh and cached under
// $FERRUM_CACHE_DIR (default ~/.cache/ferrum)/e2e with its sha256, keyed by DISK_IMAGE_VERSION.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheDir } from '../../helpers/bootable-image.js';

/** Change when build-disk-image.sh or the marker changes: it names the cached file. */
export const DISK_IMAGE_VERSION = 'bookworm-cloud-sdboot-v1';
/** What the deployed OS prints on its serial console when it has booted from its own disk. */
export const DEPLOYED_OS_MARKER = 'FERRUM-E2E-DEPLOYED-OS-BOOTED';

export interface DiskImage {
  path: string;
  bytes: number;
  sha256: string;
  /** Seconds spent building it now (0: it came from the cache). */
  builtSeconds: number;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function diskImage(log: (line: string) => void): Promise<DiskImage> {
  const dir = join(cacheDir(), 'e2e');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `debian-${DISK_IMAGE_VERSION}.raw`);
  const sumFile = `${path}.sha256`;
  if (existsSync(path) && existsSync(sumFile)) {
    return { path, bytes: statSync(path).size, sha256: readFileSync(sumFile, 'utf8').trim(), builtSeconds: 0 };
  }
  const started = Date.now();
  const partial = `${path}.partial-${process.pid}`;
  log(`building the Debian disk image to deploy (cached afterwards): ${path}`);
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(join(import.meta.dirname, 'build-disk-image.sh'), [partial, DEPLOYED_OS_MARKER], { stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (c: Buffer) => {
      const text = c.toString();
      output.push(text);
      for (const line of text.split('\n')) if (line.trim()) log(`  ${line}`);
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('error', (err) => {
      output.push(String(err));
      resolve(-1);
    });
    p.on('exit', resolve);
  });
  if (code !== 0 || !existsSync(partial)) {
    await rm(partial, { force: true });
    throw new Error(`building the e2e disk image failed (exit ${code}):\n${output.join('').slice(-4000)}`);
  }
  const sum = await sha256(partial);
  await rename(partial, path);
  writeFileSync(sumFile, `${sum}\n`);
  return { path, bytes: statSync(path).size, sha256: sum, builtSeconds: (Date.now() - started) / 1000 };
}
