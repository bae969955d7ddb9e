// The LIO target through configfs, on an in-memory configfs tree: names, the clear error when the
// kernel has no target, and that a failure part-way removes everything it made. That the target
// really serves a disk is proven in the VM (test/e2e/iscsi.e2e.test.ts): this host's kernel has no LIO.
import { describe, expect, it } from 'vitest';
import type { ConfigfsChange } from '../../src/agent/host/host.js';
import { AgentError } from '../../src/agent/errors.js';
import { silentLogger } from '../../src/agent/log.js';
import { defaultIqn, iqnProblem, listIscsiTargets, startIscsiTarget, stopIscsiTarget } from '../../src/agent/hardware/iscsi-target.js';
import { FakeHost, fail } from './support/fake-host.js';

const log = silentLogger();

/** configfs as a set of directories, files and links; `failOn` makes one change fail like the kernel would. */
class ConfigfsHost extends FakeHost {
  readonly dirs = new Set<string>();
  readonly values = new Map<string, string>();
  readonly links = new Map<string, string>();
  readonly changes: ConfigfsChange[] = [];

  constructor(
    lio: boolean,
    private readonly failOn?: (c: ConfigfsChange) => boolean,
  ) {
    super({ run: () => fail('modprobe: FATAL: Module not found') });
    if (lio) for (const d of ['/sys/kernel/config', '/sys/kernel/config/target', '/sys/kernel/config/target/core']) this.dirs.add(d);
  }

  override async exists(path: string): Promise<boolean> {
    return this.dirs.has(path) || this.values.has(path) || this.links.has(path);
  }

  override async readdir(path: string): Promise<string[]> {
    const prefix = `${path}/`;
    const names = [...this.dirs, ...this.links.keys()].filter((p) => p.startsWith(prefix) && !p.slice(prefix.length).includes('/'));
    return names.map((p) => p.slice(prefix.length)).sort();
  }

  override async readlinkOrNull(path: string): Promise<string | null> {
    return this.links.get(path) ?? null;
  }

  override async readTextOrNull(path: string): Promise<string | null> {
    return this.values.get(path) ?? null;
  }

  override async assertMayDestroy(): Promise<void> {}

  override async configfs(c: ConfigfsChange): Promise<void> {
    this.changes.push(c);
    if (this.failOn?.(c)) throw Object.assign(new Error('EADDRINUSE: address already in use'), { code: 'EADDRINUSE' });
    const parent = c.path.slice(0, c.path.lastIndexOf('/'));
    if (!this.dirs.has(parent)) throw new Error(`ENOENT: ${parent}`);
    switch (c.op) {
      case 'mkdir':
        if (this.dirs.has(c.path)) throw new Error(`EEXIST: ${c.path}`);
        this.dirs.add(c.path);
        // configfs creates a group's attribute directories itself
        if (/\/tpgt_\d+$/.test(c.path)) for (const sub of ['attrib', 'lun', 'np']) this.dirs.add(`${c.path}/${sub}`);
        if (/\/iblock_0\/[^/]+$/.test(c.path)) this.dirs.add(`${c.path}/wwn`);
        return;
      case 'rmdir':
        if ((await this.readdir(c.path)).some((n) => !['attrib', 'lun', 'np', 'wwn'].includes(n))) throw new Error(`ENOTEMPTY: ${c.path}`);
        for (const d of [...this.dirs]) if (d === c.path || d.startsWith(`${c.path}/`)) this.dirs.delete(d);
        for (const v of [...this.values.keys()]) if (v.startsWith(`${c.path}/`)) this.values.delete(v);
        return;
      case 'write':
        this.values.set(c.path, c.value);
        return;
      case 'symlink':
        this.links.set(c.path, c.target);
        return;
      case 'unlink':
        this.links.delete(c.path);
        return;
    }
  }
}

const IQN = 'iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123';

describe('iSCSI names', () => {
  it('accepts iqn, eui and naa names and refuses others with a reason', () => {
    for (const ok of [IQN, 'iqn.2001-04.com.example', 'iqn.2001-04.com.example:storage.disk2.sys1.xyz', 'eui.02004567A425678D', 'naa.52004567BA64678D']) {
      expect(iqnProblem(ok), ok).toBeNull();
    }
    for (const bad of ['', 'not an iqn', 'iqn.2001.com.example', 'iqn.2001-04.com.example:a/b', 'eui.123', `iqn.2001-04.com.example:${'x'.repeat(220)}`]) {
      expect(iqnProblem(bad), bad).toMatch(/not a valid iSCSI name/);
    }
    expect(iqnProblem(defaultIqn())).toBeNull();
    expect(defaultIqn()).not.toBe(defaultIqn());
  });
});

describe('the Linux-IO target through configfs', () => {
  it('says clearly when the kernel has no Linux-IO target, after trying to load it, and changes nothing', async () => {
    const host = new ConfigfsHost(false);
    const err = await startIscsiTarget(host, log, { iqn: IQN, device: '/dev/sda', port: 3260 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).type).toBe('ISCSIError');
    expect((err as AgentError).details).toMatch(/Linux-IO target is not available/);
    expect(host.commands.map((c) => `${c.cmd} ${c.args.join(' ')}`)).toEqual(['modprobe target_core_mod', 'modprobe target_core_iblock', 'modprobe iscsi_target_mod']);
    expect(host.changes).toEqual([]);
  });

  it('makes LUN 1 of TPG 1 with no authentication and generated ACLs, listed and removed again', async () => {
    const host = new ConfigfsHost(true);
    await startIscsiTarget(host, log, { iqn: IQN, device: '/dev/sda', port: 3261 });
    const tpg = `/sys/kernel/config/target/iscsi/${IQN}/tpgt_1`;
    const so = `/sys/kernel/config/target/core/iblock_0/${IQN}`;
    expect(host.values.get(`${so}/control`)).toBe('udev_path=/dev/sda');
    expect(host.values.get(`${so}/enable`)).toBe('1');
    expect(host.values.get(`${tpg}/attrib/authentication`)).toBe('0');
    expect(host.values.get(`${tpg}/attrib/generate_node_acls`)).toBe('1');
    expect(host.values.get(`${tpg}/attrib/demo_mode_write_protect`)).toBe('0');
    expect(host.values.get(`${tpg}/enable`)).toBe('1');
    expect(host.links.get(`${tpg}/lun/lun_1/ferrum_lun`)).toBe(so);
    expect(host.dirs.has(`${tpg}/np/0.0.0.0:3261`)).toBe(true);
    // The TPG is enabled last: no initiator sees a half-made target.
    expect(host.changes.at(-1)).toEqual({ op: 'write', path: `${tpg}/enable`, value: '1' });
    host.values.set(`${so}/udev_path`, '/dev/sda\n');
    expect(await listIscsiTargets(host)).toEqual([{ iqn: IQN, device: '/dev/sda', port: 3261 }]);

    const again = await startIscsiTarget(host, log, { iqn: IQN, device: '/dev/sda', port: 3261 }).catch((e: unknown) => e);
    expect((again as AgentError).details).toMatch(/already exists/);

    await stopIscsiTarget(host, log, { iqn: IQN, device: '/dev/sda', port: 3261 });
    expect([...host.dirs].filter((d) => d.includes(IQN))).toEqual([]);
    expect(host.links.size).toBe(0);
    expect(await listIscsiTargets(host)).toEqual([]);
  });

  it('removes what it made when a step fails part-way (portal port taken), so a retry starts clean', async () => {
    const host = new ConfigfsHost(true, (c) => c.op === 'mkdir' && c.path.includes('/np/'));
    const err = await startIscsiTarget(host, log, { iqn: IQN, device: '/dev/sda', port: 3260 }).catch((e: unknown) => e);
    expect((err as AgentError).type).toBe('ISCSICommandError');
    expect((err as AgentError).details).toMatch(/np\/0\.0\.0\.0:3260 failed: EADDRINUSE/);
    expect([...host.dirs].filter((d) => d.includes(IQN))).toEqual([]);
    expect(host.links.size).toBe(0);
    // and now the same target can be made
    const ok = new ConfigfsHost(true);
    for (const d of host.dirs) ok.dirs.add(d);
    await startIscsiTarget(ok, log, { iqn: IQN, device: '/dev/sda', port: 3260 });
    expect(await ok.exists(`/sys/kernel/config/target/iscsi/${IQN}/tpgt_1/np/0.0.0.0:3260`)).toBe(true);
  });
});
