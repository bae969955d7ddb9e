// Shared by clean and deploy: run one step through the hardware managers, as IPA's
// execute_clean_step / execute_deploy_step do.
import type { HardwareManagerVersions, Node, Ports, StepRequest } from '../../protocol/steps.js';
import { AgentError, errors } from '../errors.js';
import type { CommandContext } from '../executor.js';
import type { Services } from '../services.js';
import type { StepKind } from '../hardware/managers.js';

export interface StepParams {
  step: StepRequest;
  node?: Node | null;
  ports?: Ports | null;
  clean_version?: HardwareManagerVersions | null;
  deploy_version?: HardwareManagerVersions | null;
}

export function rememberNode(s: Services, node: Node | null | undefined): void {
  if (node && typeof node['uuid'] === 'string') s.state.node = { ...s.state.node, ...node, uuid: node['uuid'] };
}

export async function runStep(s: Services, kind: StepKind, p: StepParams, ctx: CommandContext): Promise<Record<string, unknown>> {
  const provided = kind === 'clean' ? p.clean_version : p.deploy_version;
  if (!s.managers.versionsMatch(provided)) throw errors.versionMismatch(s.managers.versions(), provided);
  rememberNode(s, p.node);
  const node: Node = p.node ?? (s.state.node as Node | null) ?? {};
  const stepName = p.step.step;
  ctx.log.info({ step: stepName, interface: p.step.interface, args: Object.keys(p.step.args ?? {}) }, `running ${kind} step ${stepName}`);
  let result: unknown;
  try {
    result = await s.managers.dispatch(stepName, {
      node,
      ports: p.ports ?? [],
      args: p.step.args ?? {},
      host: s.host,
      config: s.config,
      log: ctx.log,
      services: s,
      command: ctx,
    });
  } catch (err) {
    if (err instanceof AgentError) throw err;
    const e = err as Error;
    const text = `Unexpected exception performing ${kind} step ${stepName}. ${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`;
    throw kind === 'clean' ? errors.cleaning(text) : errors.deployment(text);
  }
  return { [`${kind}_result`]: result ?? null, [`${kind}_step`]: p.step };
}
