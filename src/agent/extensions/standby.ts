// standby.*: flush, power off / reboot, and the partition UUIDs a deploy recorded.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import { AgentError } from '../errors.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { checkImageInfo, runImageWrite } from '../image/image-commands.js';
import type { ImageInfo } from '../../protocol/image-info.js';

export function standbyCommands(s: Services): CommandDefinition[] {
  const shutdown = async (action: 'off' | 'reboot') => {
    // IPA syncs the clock first so the deployed OS starts with the right time; failures are ignored.
    // Not when power is simulated: nothing boots from this machine then, and stepping the clock or
    // writing the RTC would change the (shared) host the agent runs on.
    if (s.config.power !== 'none') {
      if (s.config.ntpServer && (await s.host.hasCommand('ntpdate'))) {
        await s.host.run('ntpdate', [s.config.ntpServer], { allowFailure: true, timeoutMs: 30_000 });
      }
      if (await s.host.hasCommand('hwclock')) await s.host.run('hwclock', ['-v', '--systohc'], { allowFailure: true, timeoutMs: 30_000 });
    }
    await s.host.power(action);
    return null;
  };
  return [
    {
      name: 'standby.sync',
      mode: 'sync',
      params: AGENT_COMMANDS['standby.sync'].params,
      run: async () => {
        const res = await s.host.run('sync', [], { allowFailure: true, timeoutMs: 600_000 });
        if (res.exitCode !== 0) throw new AgentError('CommandExecutionError', `sync failed with exit code ${res.exitCode}: ${res.stderr}`);
        return null;
      },
    },
    { name: 'standby.power_off', mode: 'async', params: AGENT_COMMANDS['standby.power_off'].params, run: () => shutdown('off') },
    { name: 'standby.run_image', mode: 'async', params: AGENT_COMMANDS['standby.run_image'].params, run: () => shutdown('reboot') },
    {
      name: 'standby.prepare_image',
      mode: 'async',
      params: AGENT_COMMANDS['standby.prepare_image'].params,
      validate: (p: { image_info: unknown }) => checkImageInfo(p.image_info),
      run: (p: { image_info: ImageInfo; configdrive?: string | null }, ctx) =>
        runImageWrite(s, ctx, { imageInfo: p.image_info, configdrive: p.configdrive ?? null }),
    },
    {
      name: 'standby.cache_image',
      mode: 'async',
      params: AGENT_COMMANDS['standby.cache_image'].params,
      validate: (p: { image_info: unknown }) => checkImageInfo(p.image_info),
      run: (p: { image_info: ImageInfo; force?: boolean }, ctx) =>
        runImageWrite(s, ctx, { imageInfo: p.image_info, configdrive: null, cacheOnly: true, force: p.force === true }),
    },
    {
      name: 'standby.get_partition_uuids',
      mode: 'sync',
      readOnly: true,
      params: AGENT_COMMANDS['standby.get_partition_uuids'].params,
      run: async () => s.state.partitionUuids,
    },
  ];
}
