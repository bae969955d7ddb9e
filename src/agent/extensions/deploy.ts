// deploy.*: list deploy steps and run one.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import type { GetStepsParams } from '../../protocol/steps.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';
import { rememberNode, runStep, type StepParams } from './step-runner.js';

export function deployCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'deploy.get_deploy_steps',
      mode: 'sync',
      readOnly: true,
      params: AGENT_COMMANDS['deploy.get_deploy_steps'].params,
      run: async (p: GetStepsParams) => {
        rememberNode(s, p.node);
        return { deploy_steps: s.managers.steps('deploy'), hardware_manager_version: s.managers.versions() };
      },
    },
    {
      name: 'deploy.execute_deploy_step',
      mode: 'async',
      params: AGENT_COMMANDS['deploy.execute_deploy_step'].params,
      run: (p: StepParams, ctx) => runStep(s, 'deploy', p, ctx),
    },
  ];
}
