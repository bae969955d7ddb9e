// bmc_address: IPA loads the IPMI kernel modules before asking ipmitool (udev does not load
// ipmi_devintf, which makes /dev/ipmi0), so a real BMC is seen; a shared host is left alone.
import { describe, expect, it } from 'vitest';
import { collectBmc } from '../../src/agent/hardware/inventory/bmc.js';
import { FakeHost, fail, ok } from './support/fake-host.js';

const LAN_PRINT = `IP Address Source       : Static Address
IP Address              : 192.0.2.100
Subnet Mask             : 255.255.255.0
MAC Address             : 52:54:00:be:ef:01
`;

/** A machine whose /dev/ipmi0 only appears once ipmi_devintf is loaded. */
function machine(deviceAllowList: string[] | null): FakeHost {
  const files: Record<string, string> = {};
  const host: FakeHost = new FakeHost({
    files,
    deviceAllowList,
    run: (cmd, args) => {
      if (cmd === 'modprobe') {
        if (args[0] === 'ipmi_devintf') files['/dev/ipmi0'] = '';
        return ok('');
      }
      if (cmd === 'ipmitool' && args.join(' ') === 'lan print 1') return ok(LAN_PRINT);
      if (cmd === 'ipmitool' && args[0] === 'lan6') return ok('');
      return fail('Invalid channel');
    },
  });
  host.hasCommand = async () => true;
  return host;
}

describe('collectBmc', () => {
  it('loads ipmi_msghandler, ipmi_devintf and ipmi_si first (once), then finds the BMC', async () => {
    const host = machine(null);
    expect(await collectBmc(host)).toEqual({ bmc_address: '192.0.2.100', bmc_v6address: '::/0', bmc_mac: '52:54:00:be:ef:01' });
    await collectBmc(host);
    const modprobes = host.commands.filter((c) => c.cmd === 'modprobe').map((c) => c.args.join(' '));
    expect(modprobes).toEqual(['ipmi_msghandler', 'ipmi_devintf', 'ipmi_si']);
    expect(host.commands.findIndex((c) => c.cmd === 'modprobe')).toBe(0);
  });

  it('loads no kernel module on a shared host (--devices): no device, no BMC', async () => {
    const host = machine(['/dev/loop7']);
    expect(await collectBmc(host)).toEqual({ bmc_address: null, bmc_v6address: null });
    expect(host.commands).toEqual([]);
  });
});
