// The special-filesystem guard (IPA's ProtectedDeviceError): a disk holding a clustered or shared
// filesystem (IBM GPFS, Red Hat GFS2, VMware VMFS) may be a SAN volume other hosts still use, so
// erasing it is refused unless the operator said so (ipa-guard-special-filesystems=0, or the
// node's driver_info/driver_internal_info wipe_special_filesystems=true).
import type { BlockDevice } from './block-devices.js';
import { errors } from '../errors.js';

const PROTECTED_PARTITION_TYPES: Record<string, string> = {
  '37affc90-ef7d-4e96-91c3-2d7ae055b174': 'IBM GPFS partition',
  'aa31e02a-400f-11db-9590-000c2911d1b8': 'VMware VMFS partition',
  '9198effc-31c0-11db-8f78-000c2911d1b8': 'VMware reserved partition',
  '0xfb': 'VMware VMFS partition (MBR type 0xfb)',
};

const PROTECTED_FILESYSTEMS: Record<string, string> = {
  gfs2: 'Red Hat Global Filesystem 2 filesystem',
  vmfs_volume_member: 'VMware VMFS filesystem',
  vmfs: 'VMware VMFS filesystem',
  gpfs: 'IBM GPFS filesystem',
};

/** The first protected thing on the disk or its partitions, or null. */
export function findProtected(disk: BlockDevice): { device: string; what: string } | null {
  const visit = (d: BlockDevice): { device: string; what: string } | null => {
    const ptype = d.parttype?.toLowerCase();
    if (ptype && PROTECTED_PARTITION_TYPES[ptype]) return { device: d.name, what: PROTECTED_PARTITION_TYPES[ptype]! };
    const fs = d.fstype?.toLowerCase();
    if (fs && PROTECTED_FILESYSTEMS[fs]) return { device: d.name, what: PROTECTED_FILESYSTEMS[fs]! };
    for (const c of d.children) {
      const hit = visit(c);
      if (hit) return hit;
    }
    return null;
  };
  return visit(disk);
}

export function guardEnabled(guardConfig: boolean, node: Record<string, unknown>): boolean {
  if (!guardConfig) return false;
  const flag = (o: unknown) => (o as Record<string, unknown> | undefined)?.['wipe_special_filesystems'] === true;
  return !(flag(node['driver_info']) || flag(node['driver_internal_info']));
}

/** Throws ProtectedDeviceError when the guard is on and the disk holds a special filesystem. */
export function assertNotProtected(disk: BlockDevice, guard: boolean): void {
  if (!guard) return;
  const hit = findProtected(disk);
  if (hit) throw errors.protectedDevice(hit.device, hit.what);
}
