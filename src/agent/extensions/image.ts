// image.*: install_bootloader (async), as IPA 9.4.3 — the work lives in ../bootloader/.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { installBootloader, type InstallBootloaderParams } from '../bootloader/install.js';
import { stopAllIscsiTargets } from './iscsi.js';

export function imageCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'image.install_bootloader',
      mode: 'async',
      params: AGENT_COMMANDS['image.install_bootloader'].params,
      run: async (params: InstallBootloaderParams, ctx) => {
        await stopAllIscsiTargets(s, ctx.log);
        return installBootloader(
          { host: s.host, config: s.config, node: (s.state.node as Record<string, unknown> | null) ?? null, log: ctx.log },
          params,
        );
      },
    },
  ];
}
