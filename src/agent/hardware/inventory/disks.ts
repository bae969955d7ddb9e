// disks: lsblk for the device list, the udev database for WWNs and serials, sysfs for vendor and
// HCTL, /dev/disk/by-path for the stable path. IPA's fields, plus sector sizes and transport.
import { posix } from 'node:path';
import type { InventoryDisk } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { listDisks, type BlockDevice } from '../block-devices.js';

/** `E:KEY=value` lines of /run/udev/data/b<major>:<minor>. */
export function parseUdevData(text: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('E:')) continue;
    const eq = line.indexOf('=');
    if (eq > 2) props.set(line.slice(2, eq), line.slice(eq + 1));
  }
  return props;
}

async function udevProperties(host: Host, kname: string): Promise<Map<string, string>> {
  const dev = (await host.readTextOrNull(`/sys/class/block/${kname}/dev`))?.trim();
  if (!dev) return new Map();
  const text = await host.readTextOrNull(`/run/udev/data/b${dev}`);
  return text ? parseUdevData(text) : new Map();
}

/** /dev/disk/by-path link → kernel name, read once per inventory. */
async function byPathIndex(host: Host): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const dir = '/dev/disk/by-path';
  for (const link of await host.readdir(dir)) {
    const target = await host.readlinkOrNull(`${dir}/${link}`);
    if (!target) continue;
    const kname = posix.basename(target);
    const path = `${dir}/${link}`;
    // Several links may name one disk (e.g. -ata-1 and -ata-1.0): keep the shortest, stable one.
    const prev = index.get(kname);
    if (!prev || path.length < prev.length) index.set(kname, path);
  }
  return index;
}

export async function diskDetails(host: Host, d: BlockDevice, byPath: Map<string, string>): Promise<InventoryDisk> {
  const [udev, vendor, scsi] = await Promise.all([
    udevProperties(host, d.kname),
    host.readTextOrNull(`/sys/class/block/${d.kname}/device/vendor`),
    host.readdir(`/sys/class/block/${d.kname}/device/scsi_device`),
  ]);
  const u = (k: string) => udev.get(k) ?? udev.get(`DM_${k.replace(/^ID_/, '')}`) ?? null;
  return {
    name: d.name,
    model: d.model,
    size: d.size,
    rotational: d.rotational,
    wwn: u('ID_WWN') ?? d.wwn,
    serial: d.serial ?? udev.get('ID_SERIAL_SHORT') ?? udev.get('ID_SERIAL') ?? null,
    vendor: vendor?.trim() || d.vendor,
    wwn_with_extension: u('ID_WWN_WITH_EXTENSION'),
    wwn_vendor_extension: u('ID_WWN_VENDOR_EXTENSION'),
    hctl: scsi[0] ?? d.hctl,
    by_path: byPath.get(d.kname) ?? null,
    logical_sectors: d.logicalSectorSize,
    physical_sectors: d.physicalSectorSize,
    tran: d.tran,
  };
}

export async function collectDisks(host: Host): Promise<InventoryDisk[]> {
  const [disks, byPath] = await Promise.all([listDisks(host, { nested: true }), byPathIndex(host)]);
  return Promise.all(disks.map((d) => diskDetails(host, d, byPath)));
}
