// flow.start_flow (IPA 9.4.3): runs a list of commands in order, each to its end, and fails at the
// first one that fails. Every step is checked before anything runs (names and parameters), so a
// typo in step 5 does not leave steps 1-4 half-applied. The steps run inside the flow command:
// the agent's history shows the flow, as IPA's does.
import { AGENT_COMMANDS } from '../../protocol/agent-commands.js';
import { schemaErrors } from '../../protocol/validate.js';
import { AgentError, asAgentError, errors } from '../errors.js';
import type { CommandDefinition, Executor } from '../executor.js';

type Flow = Array<Record<string, Record<string, unknown>>>;

function steps(flow: Flow): Array<[string, Record<string, unknown>]> {
  return flow.flatMap((task) => Object.entries(task));
}

export function flowCommands(executor: Pick<Executor, 'definition'>): CommandDefinition[] {
  return [
    {
      name: 'flow.start_flow',
      mode: 'async',
      params: AGENT_COMMANDS['flow.start_flow'].params,
      validate: (p: { flow: Flow }) => {
        for (const [method, params] of steps(p.flow)) {
          if (method === 'flow.start_flow') throw errors.invalidParams('a flow cannot start another flow');
          const def = executor.definition(method);
          if (!def) throw errors.invalidParams(`flow step ${method}: no such command (extension.command)`);
          const problems = schemaErrors(def.params, params);
          if (problems.length > 0) throw errors.invalidParams(`flow step ${method}: ${problems.join('; ')}`);
          def.validate?.(params);
        }
      },
      run: async (p: { flow: Flow }, ctx) => {
        for (const [method, params] of steps(p.flow)) {
          const def = executor.definition(method)!;
          ctx.log.info({ step: method }, `flow: executing ${method}`);
          try {
            await def.run(params, { ...ctx, log: ctx.log.child({ step: method }) });
          } catch (err) {
            const cause = asAgentError(err);
            ctx.log.error({ step: method, err: cause }, `flow: ${method} failed`);
            throw new AgentError('CommandExecutionError', `${method} was failed: ${cause.type}: ${cause.details}`, { cause: err });
          }
          ctx.log.info({ step: method }, `flow: ${method} done`);
        }
        return null;
      },
    },
  ];
}
