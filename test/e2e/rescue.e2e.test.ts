// Rescue mode in the ramdisk itself: what happens after rescue.finalize_rescue (the protocol with
// the real Ironic is test/ironic/rescue.test.ts). A QEMU VM boots Ferrum's ramdisk in standalone
// mode; the test sends finalize_rescue with a plain password (hashed=false: the agent makes the
// SHA-512 crypt), and then expects what a tenant gets: the agent's API gone, sshd up (it never
// runs during a deploy), and a login as "rescue" with that password, and no other.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FORWARDED_SSH_PORT, RAMDISK_DIR, StandaloneRun } from './support/standalone-vm.js';
import { chooseAccel, serialTail } from './support/vm.js';

const PASSWORD = 'ferrum rescue e2e';

const run = new StandaloneRun('rescue', { ssh: 'openssh-client', sshpass: 'sshpass' });

const log = (line: string) => console.log(`[e2e-rescue ${new Date().toISOString().slice(11, 19)}] ${line}`);

function ssh(addr: string, password: string, command: string): { code: number; out: string } {
  const res = spawnSync('sshpass', ['-p', password, 'ssh', '-p', String(FORWARDED_SSH_PORT), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'ConnectTimeout=20', '-o', 'PreferredAuthentications=password', '-o', 'PubkeyAuthentication=no', `rescue@${addr}`, command], { encoding: 'utf8', timeout: 60_000 });
  return { code: res.status ?? -1, out: `${res.stdout ?? ''}${res.stderr ?? ''}` };
}

describe('Ferrum ramdisk: rescue mode after finalize_rescue', () => {
  beforeAll(() => run.setUp(), 600_000);
  afterAll(() => run.tearDown(), 120_000);

  test('the agent stops serving, sshd starts, and "rescue" logs in with the password', async () => {
    const n = run.net!;
    const accel = await chooseAccel(join(RAMDISK_DIR, 'kernel'));
    const disk = join(run.runDir, 'disk.raw');
    spawnSync('truncate', ['-s', '5G', disk]);
    const s = await run.boot(disk, accel.accel);
    const { client, vm } = s;
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp} (${accel.accel})`);
    // No sshd during a deploy: not started at boot (nor failing to start there, which would
    // also use up its start limit before rescue needs it).
    expect(ssh(n.addr, PASSWORD, 'true').code).not.toBe(0);
    expect(vm.serial()).not.toMatch(/ssh\.servic|Secure Shell server/);

    expect(await client.finalizeRescue(PASSWORD, false)).toBeNull();
    await sleep(2000);
    const still = await client.status().then(() => true, () => false);
    expect(still, "the agent's API still answers after finalize_rescue").toBe(false);

    let login = { code: -1, out: '' };
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      login = ssh(n.addr, PASSWORD, 'id -un; cat /etc/hostname');
      if (login.code === 0) break;
      await sleep(2000);
    }
    log(`ssh rescue@ramdisk: exit ${login.code}: ${login.out.trim().split('\n').slice(-2).join(' | ')}`);
    if (login.code !== 0) throw new Error(`no rescue login: ${login.out}\n--- serial console\n${serialTail(vm.serial(), 40)}`);
    expect(login.out).toMatch(/^rescue$/m);
    expect(login.out).toMatch(/ferrum-ramdisk/);
    const wrong = ssh(n.addr, 'not the password', 'true');
    expect(wrong.code).not.toBe(0);
    expect(vm.serial()).toMatch(/rescue mode: log in as 'rescue'/);
    run.passed = true;
  }, 1_800_000);
});
