// log.collect_system_logs: {"system_logs": base64 of a tar.gz}.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { collectSystemLogs } from '../system-logs.js';

export function logCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'log.collect_system_logs',
      mode: 'sync',
      readOnly: true,
      params: AGENT_COMMANDS['log.collect_system_logs'].params,
      run: async () => {
        const tgz = await collectSystemLogs(s.host, s.logRing, s.host.deviceAllowList !== null);
        return { system_logs: tgz.toString('base64') };
      },
    },
  ];
}
