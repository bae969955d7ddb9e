// poll.get_hardware_info returns a freshly collected inventory; poll.set_node_info only works in
// standalone mode (IPA), where no conductor provides the node.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import { errors } from '../errors.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';

export function pollCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'poll.get_hardware_info',
      mode: 'sync',
      readOnly: true,
      params: AGENT_COMMANDS['poll.get_hardware_info'].params,
      run: () => s.inventory.collect(),
    },
    {
      name: 'poll.set_node_info',
      mode: 'sync',
      params: AGENT_COMMANDS['poll.set_node_info'].params,
      run: async (p: { node_info: Record<string, unknown> }) => {
        if (!s.config.standalone) throw errors.invalidCommand('set_node_info is only allowed in standalone mode');
        const uuid = p.node_info['uuid'];
        s.state.node = { ...p.node_info, uuid: typeof uuid === 'string' ? uuid : 'standalone' };
        return null;
      },
    },
  ];
}
