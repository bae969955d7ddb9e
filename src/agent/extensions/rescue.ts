// rescue.finalize_rescue (IPA 9.4.3): stores the rescue password's hash where the ramdisk's
// rescue unit picks it up (it sets the "rescue" user's password and starts sshd, see systemd/),
// then stops serving: after this reply the node is on the tenant's network, and neither the
// command API nor heartbeats may be exposed there.
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { AGENT_COMMANDS, type CommandParams } from '../../protocol/agent-commands.js';
import { AgentError } from '../errors.js';
import type { CommandDefinition } from '../executor.js';
import type { Services } from '../services.js';

/** crypt(3) SHA-512 of a plain password with a random salt, as IPA's crypt.crypt(pw, crypt.mksalt()). */
async function sha512Crypt(password: string): Promise<string> {
  const { encrypt } = await import('unixcrypt');
  return encrypt(password, '$6$');
}

export function rescueCommands(s: Services): CommandDefinition[] {
  return [
    {
      name: 'rescue.finalize_rescue',
      mode: 'sync',
      params: AGENT_COMMANDS['rescue.finalize_rescue'].params,
      run: async (p: CommandParams<'rescue.finalize_rescue'>, ctx) => {
        const password = String(p.rescue_password ?? '');
        const hash = p.hashed === true ? password : await sha512Crypt(password);
        const file = s.config.rescuePasswordFile;
        try {
          await fs.mkdir(dirname(file), { recursive: true, mode: 0o700 });
          // Write then rename: the rescue unit watches for the file and must never read half of it.
          await fs.writeFile(`${file}.tmp`, hash, { mode: 0o600 });
          await fs.rename(`${file}.tmp`, file);
        } catch (err) {
          throw new AgentError(
            'CommandExecutionError',
            `Rescue Operation failed when writing the hashed rescue password to the password file. Error ${(err as Error).message}`,
          );
        }
        ctx.log.info({ file }, 'rescue password written; the agent stops serving after this reply');
        s.stopServing('rescue finalized');
        return null;
      },
    },
  ];
}
