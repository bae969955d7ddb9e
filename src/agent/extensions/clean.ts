// clean.*: list clean steps and run one.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import type { GetStepsParams } from '../../protocol/steps.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { rememberNode, runStep, type StepParams } from './step-runner.js';

export function cleanCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'clean.get_clean_steps',
      mode: 'sync',
      readOnly: true,
      params: AGENT_COMMANDS['clean.get_clean_steps'].params,
      run: async (p: GetStepsParams) => {
        rememberNode(s, p.node);
        return { clean_steps: s.managers.steps('clean'), hardware_manager_version: s.managers.versions() };
      },
    },
    {
      name: 'clean.execute_clean_step',
      mode: 'async',
      params: AGENT_COMMANDS['clean.execute_clean_step'].params,
      run: (p: StepParams, ctx) => runStep(s, 'clean', p, ctx),
    },
  ];
}
