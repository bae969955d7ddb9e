// A loop device whose /dev node does not exist yet: the test picks an unused number, hands the path
// to the agent, and attaches a sparse file to it later (losetup creates the node through
// /dev/loop-control). destroy() detaches it and removes the kernel device again (LOOP_CTL_REMOVE),
// so no node is left behind.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { backsOnto } from './loop-device.js';

const run = promisify(execFile);

export interface LateLoopDevice {
  path: string;
  number: number;
  file: string;
  /** Attaches the backing file: the device appears. */
  attach(): Promise<void>;
  destroy(): Promise<void>;
}

function unusedLoopNumber(): number {
  for (let tries = 0; tries < 500; tries++) {
    const n = 64 + Math.floor(Math.random() * 900);
    if (!existsSync(`/dev/loop${n}`) && !existsSync(`/sys/block/loop${n}`)) return n;
  }
  throw new Error('no unused loop device number');
}

export async function lateLoopDevice(sizeMiB: number): Promise<LateLoopDevice> {
  const dir = await mkdtemp(join(tmpdir(), 'ferrum-late-loop-'));
  const file = join(dir, 'disk.img');
  await run('truncate', ['-s', `${sizeMiB}M`, file]);
  const number = unusedLoopNumber();
  const path = `/dev/loop${number}`;
  let attached = false;
  return {
    path,
    number,
    file,
    async attach() {
      await run('losetup', [path, file]);
      attached = true;
    },
    async destroy() {
      if (attached) {
        if (backsOnto(path, file)) await run('losetup', ['-d', path]).catch(() => undefined);
        attached = false;
      }
      // LOOP_CTL_REMOVE (0x4C81): drop the device losetup created, if it is free.
      await run('/usr/bin/python3', [
        '-c',
        `import fcntl, os\nfd = os.open('/dev/loop-control', os.O_RDWR)\ntry:\n    fcntl.ioctl(fd, 0x4C81, ${number})\nexcept OSError:\n    pass`,
      ]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
