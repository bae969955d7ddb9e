// iscsi.start_iscsi_target (IPA <= 7.x): exports the install disk over iSCSI for a conductor that
// writes the image itself (Ironic's iscsi deploy, <= 17). The target is torn down again before
// image.install_bootloader, as IPA 7.x did, so the conductor's writes are flushed and the disk is
// the agent's alone when the bootloader goes on.
import { AGENT_COMMANDS, type CommandParams } from '../../protocol/agent-commands.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { chooseInstallDevice } from '../hardware/install-device.js';
import { diskByName } from '../hardware/block-devices.js';
import { eraseDiskMetadata } from '../hardware/erase.js';
import { DEFAULT_PORTAL_PORT, defaultIqn, iqnProblem, listIscsiTargets, startIscsiTarget, stopIscsiTarget } from '../hardware/iscsi-target.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';

export function iscsiCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'iscsi.start_iscsi_target',
      mode: 'sync',
      params: AGENT_COMMANDS['iscsi.start_iscsi_target'].params,
      validate: (p: CommandParams<'iscsi.start_iscsi_target'>) => {
        const problem = typeof p.iqn === 'string' ? iqnProblem(p.iqn) : null;
        if (problem) throw errors.invalidParams(problem);
      },
      run: async (p: CommandParams<'iscsi.start_iscsi_target'>, ctx) => {
        const iqn = p.iqn ?? defaultIqn();
        const port = p.portal_port ?? DEFAULT_PORTAL_PORT;
        const node = (s.state.node as Record<string, unknown> | null) ?? null;
        const chosen = await chooseInstallDevice(s.host, node, ctx.log, { waitAttempts: s.config.diskWaitAttempts, waitDelaySec: s.config.diskWaitDelay });
        if (p.wipe_disk_metadata === true) await eraseDiskMetadata(s.host, await diskByName(s.host, chosen.name), ctx.log);
        await startIscsiTarget(s.host, ctx.log, { iqn, device: chosen.name, port });
        return { iscsi_target_iqn: iqn };
      },
    },
  ];
}

/** Removes every target this agent exported (before the bootloader goes on, as IPA 7.x). */
export async function stopAllIscsiTargets(s: Services, log: Logger): Promise<void> {
  for (const t of await listIscsiTargets(s.host)) await stopIscsiTarget(s.host, log, t);
}
