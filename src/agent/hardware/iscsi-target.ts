// Exports a disk as an iSCSI target with the kernel's Linux-IO target (LIO), through configfs
// directly: what IPA <= 7.x did with rtslib-fb, without Python or targetcli in the ramdisk. The
// layout Ironic's iSCSI deploy (<= 17) expects: the disk as LUN 1 of TPG 1, no authentication,
// any initiator allowed (generated ACLs), a portal on the wildcard address.
//
//   /sys/kernel/config/target/core/iblock_0/<iqn>         storage object: control, udev_path, enable
//   /sys/kernel/config/target/iscsi/<iqn>/tpgt_1/attrib    authentication=0, generate_node_acls=1 …
//   /sys/kernel/config/target/iscsi/<iqn>/tpgt_1/lun/lun_1/<link> -> the storage object
//   /sys/kernel/config/target/iscsi/<iqn>/tpgt_1/np/0.0.0.0:<port>
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { AgentError } from '../errors.js';
import { CONFIGFS_ROOT, type ConfigfsChange, type Host } from '../host/host.js';
import type { Logger } from '../log.js';

const TARGET = `${CONFIGFS_ROOT}/target`;
/** IPA's backstore HBA for block devices. */
const HBA = `${TARGET}/core/iblock_0`;
/** Ironic's iSCSI deploy always used LUN 1 (ironic/drivers/modules/deploy_utils.py). */
export const ISCSI_LUN = 1;
export const DEFAULT_PORTAL_PORT = 3260;
export const IQN_PREFIX = 'iqn.2008-10.org.openstack';

export interface IscsiTarget {
  iqn: string;
  device: string;
  port: number;
}

/** RFC 3720 iqn names: "iqn." yyyy-mm "." reversed domain, optional ":" and anything printable. */
const IQN_RE = /^iqn\.\d{4}-\d{2}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[\x21-\x7e]+)?$/i;
const EUI_RE = /^eui\.[0-9a-f]{16}$/i;
const NAA_RE = /^naa\.[0-9a-f]{16}([0-9a-f]{16})?$/i;

export function iqnProblem(iqn: string): string | null {
  if (iqn.length <= 223 && (IQN_RE.test(iqn) || EUI_RE.test(iqn) || NAA_RE.test(iqn)) && !iqn.includes('/')) return null;
  return `"${iqn}" is not a valid iSCSI name (iqn.yyyy-mm.domain[:name], eui.… or naa.…, at most 223 characters)`;
}

export function defaultIqn(): string {
  return `${IQN_PREFIX}:${randomUUID()}`;
}

/** Paths of one target, from its IQN (the storage object is named after the IQN too, as IPA). */
function pathsOf(iqn: string, port: number) {
  const tpg = `${TARGET}/iscsi/${iqn}/tpgt_1`;
  const lun = `${tpg}/lun/lun_${ISCSI_LUN}`;
  return {
    storage: `${HBA}/${iqn}`,
    target: `${TARGET}/iscsi/${iqn}`,
    tpg,
    lun,
    lunLink: `${lun}/ferrum_lun`,
    portal: `${tpg}/np/0.0.0.0:${port}`,
  };
}

/** Loads the LIO modules (a no-op when built in or loaded) and checks configfs is there. */
async function ensureLio(host: Host, log: Logger): Promise<void> {
  if (!(await host.exists(`${TARGET}/iscsi`))) {
    for (const mod of ['target_core_mod', 'target_core_iblock', 'iscsi_target_mod']) {
      const res = await host.run('modprobe', [mod], { allowFailure: true, timeoutMs: 30_000 }).catch((err: Error) => ({ exitCode: -1, stdout: '', stderr: err.message }));
      if (res.exitCode !== 0) log.warn({ module: mod, stderr: res.stderr.trim() }, 'modprobe failed');
    }
  }
  if (!(await host.exists(`${CONFIGFS_ROOT}/target`))) {
    throw new AgentError(
      'ISCSIError',
      `the Linux-IO target is not available: ${TARGET} does not exist (configfs not mounted, or the kernel has no target_core_mod)`,
    );
  }
}

async function apply(host: Host, change: ConfigfsChange): Promise<void> {
  try {
    await host.configfs(change);
  } catch (err) {
    const what = change.op === 'write' ? `writing "${change.value}" to ${change.path}` : `${change.op} ${change.path}`;
    throw new AgentError('ISCSICommandError', `${what} failed: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Creates the target. Refuses an IQN that is already exported; on any failure removes what it
 * created, so a retry starts clean.
 */
export async function startIscsiTarget(host: Host, log: Logger, t: IscsiTarget): Promise<void> {
  const problem = iqnProblem(t.iqn);
  if (problem) throw new AgentError('ISCSIError', problem);
  await host.assertMayDestroy(t.device);
  await ensureLio(host, log);
  const p = pathsOf(t.iqn, t.port);
  if ((await host.exists(p.target)) || (await host.exists(p.storage))) {
    throw new AgentError('ISCSIError', `an iSCSI target named ${t.iqn} already exists`);
  }
  const created: ConfigfsChange[] = [];
  const step = async (change: ConfigfsChange, undo?: ConfigfsChange) => {
    await apply(host, change);
    if (undo) created.push(undo);
  };
  try {
    if (!(await host.exists(HBA))) await step({ op: 'mkdir', path: HBA });
    await step({ op: 'mkdir', path: p.storage }, { op: 'rmdir', path: p.storage });
    await step({ op: 'write', path: `${p.storage}/control`, value: `udev_path=${t.device}` });
    await step({ op: 'write', path: `${p.storage}/udev_path`, value: t.device });
    await step({ op: 'write', path: `${p.storage}/wwn/vpd_unit_serial`, value: randomUUID() });
    await step({ op: 'write', path: `${p.storage}/enable`, value: '1' });
    // Creating the fabric directory loads iscsi_target_mod when modprobe could not.
    if (!(await host.exists(`${TARGET}/iscsi`))) await step({ op: 'mkdir', path: `${TARGET}/iscsi` });
    await step({ op: 'mkdir', path: p.target }, { op: 'rmdir', path: p.target });
    await step({ op: 'mkdir', path: p.tpg }, { op: 'rmdir', path: p.tpg });
    for (const [attr, value] of [['authentication', '0'], ['demo_mode_write_protect', '0'], ['generate_node_acls', '1'], ['cache_dynamic_acls', '1']]) {
      await step({ op: 'write', path: `${p.tpg}/attrib/${attr}`, value: value! });
    }
    await step({ op: 'mkdir', path: p.lun }, { op: 'rmdir', path: p.lun });
    await step({ op: 'symlink', path: p.lunLink, target: p.storage }, { op: 'unlink', path: p.lunLink });
    await step({ op: 'mkdir', path: p.portal }, { op: 'rmdir', path: p.portal });
    await step({ op: 'write', path: `${p.tpg}/enable`, value: '1' }, { op: 'write', path: `${p.tpg}/enable`, value: '0' });
  } catch (err) {
    for (const undo of created.reverse()) await host.configfs(undo).catch(() => undefined);
    throw err;
  }
  log.info({ iqn: t.iqn, device: t.device, lun: ISCSI_LUN, portal: `0.0.0.0:${t.port}` }, 'iSCSI target started');
}

/** The targets this module made (found in configfs, so an agent restart still finds them). */
export async function listIscsiTargets(host: Host): Promise<IscsiTarget[]> {
  const found: IscsiTarget[] = [];
  for (const iqn of await host.readdir(`${TARGET}/iscsi`)) {
    const tpg = `${TARGET}/iscsi/${iqn}/tpgt_1`;
    const link = await host.readlinkOrNull(`${tpg}/lun/lun_${ISCSI_LUN}/ferrum_lun`);
    if (!link) continue;
    const portals = (await host.readdir(`${tpg}/np`)).map((n) => Number(n.slice(n.lastIndexOf(':') + 1)));
    const device = ((await host.readTextOrNull(`${HBA}/${posix.basename(link)}/udev_path`)) ?? '').trim();
    found.push({ iqn, device, port: portals[0] ?? DEFAULT_PORTAL_PORT });
  }
  return found;
}

/** Removes a target and its storage object, in the order the kernel requires. */
export async function stopIscsiTarget(host: Host, log: Logger, t: IscsiTarget): Promise<void> {
  const p = pathsOf(t.iqn, t.port);
  const steps: ConfigfsChange[] = [
    { op: 'write', path: `${p.tpg}/enable`, value: '0' },
    ...(await host.readdir(`${p.tpg}/np`)).map((n): ConfigfsChange => ({ op: 'rmdir', path: `${p.tpg}/np/${n}` })),
    { op: 'unlink', path: p.lunLink },
    { op: 'rmdir', path: p.lun },
    { op: 'rmdir', path: p.tpg },
    { op: 'rmdir', path: p.target },
    { op: 'rmdir', path: p.storage },
  ];
  for (const change of steps) {
    // Whatever is already gone (a half-made or half-removed target) is skipped.
    if (!(await host.exists(change.path)) && !(await host.readlinkOrNull(change.path))) continue;
    await apply(host, change);
  }
  log.info({ iqn: t.iqn, device: t.device }, 'iSCSI target removed');
}
