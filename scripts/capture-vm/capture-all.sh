#!/bin/bash
# Re-creates the QEMU captures in test/fixtures/machines/ (all under TCG; see README.md).
#
# Usage: capture-all.sh [NAME...]     NAME: qemu-nvme-virtio | qemu-nics-bmc-sata | qemu-raid1-uefi
# Environment: BUILD (default /tmp/ferrum-capture-vm) holds the kernel, initrd, disk images, logs.
# Needs: qemu-system-x86 ovmf seabios openipmi (ipmi_sim) fdisk e2fsprogs, plus build-initrd.sh's tools.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export BUILD="${BUILD:-/tmp/ferrum-capture-vm}"
MACHINES="$REPO/test/fixtures/machines"
D="$BUILD/disks"
mkdir -p "$D"
[ -f "$BUILD/vmlinuz" ] && [ -f "$BUILD/initrd.img" ] && [ -z "${REBUILD:-}" ] || "$HERE/build-initrd.sh" "$BUILD"

disk() { rm -f "$D/$1"; truncate -s "$2" "$D/$1"; }

# A disk with a GPT (a small "boot" and a "root" partition, both ext4) made without loop devices.
gpt_disk() {
  local img="$D/$1"
  disk "$1" "$2"
  printf 'label: gpt\nstart=2048, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot\nstart=133120, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' \
    | sfdisk -q "$img"
  mkfs.ext4 -q -F -L boot -E offset=$((2048 * 512)) "$img" 64M
  local bytes; bytes=$(stat -c %s "$img")
  mkfs.ext4 -q -F -L root -E offset=$((133120 * 512)) "$img" "$(( (bytes - 133120 * 512 - 1048576) / 1024 ))k"
}

nvme_virtio() {
  gpt_disk vda.img 2G; disk nvme0.img 1G; disk nvme1.img 3G
  KARGS="capture.hostname=ferrum-nvme" SMP=2 MEM=1024 "$HERE/run-vm.sh" "$MACHINES/qemu-nvme-virtio" \
    -smbios type=1,manufacturer=FerrumLab,product=NVMe-Virtio-1,serial=FL-NVME-0001 \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,mac=52:54:00:fe:01:01 \
    -drive if=none,id=v0,format=raw,file="$D/vda.img" -device virtio-blk-pci,drive=v0,serial=FERRUM-VIRTIO-ROOT \
    -drive if=none,id=nv0,format=raw,file="$D/nvme0.img" -device nvme,drive=nv0,serial=FERRUMNVME0001 \
    -drive if=none,id=nv1,format=raw,file="$D/nvme1.img" -device nvme,drive=nv1,serial=FERRUMNVME0002
}

# An external BMC (OpenIPMI's ipmi_sim) so that `ipmitool lan print` answers with an address:
# QEMU's built-in ipmi-bmc-sim has no LAN channel. ipmi_sim listens on loopback only.
start_ipmi_sim() {
  local dir="$BUILD/ipmi_sim"
  rm -rf "$dir"; mkdir -p "$dir/state"
  cat > "$dir/lancontrol.sh" <<'S'
#!/bin/sh
# Answers ipmi_sim's LAN configuration queries: a BMC with a static address.
dev="$1"; op="$2"; shift 2
[ "$op" = get ] || exit 0
for p in "$@"; do
  case "$p" in
    ip_addr_src) echo "ip_addr_src: static" ;;
    ip_addr) echo "ip_addr: 192.0.2.100" ;;
    mac_addr) echo "mac_addr: 52:54:00:be:ef:01" ;;
    subnet_mask) echo "subnet_mask: 255.255.255.0" ;;
    default_gw_ip_addr) echo "default_gw_ip_addr: 192.0.2.1" ;;
    default_gw_mac_addr) echo "default_gw_mac_addr: 52:54:00:be:ef:fe" ;;
    backup_gw_ip_addr) echo "backup_gw_ip_addr: 0.0.0.0" ;;
    backup_gw_mac_addr) echo "backup_gw_mac_addr: 00:00:00:00:00:00" ;;
  esac
done
S
  chmod 755 "$dir/lancontrol.sh"
  cat > "$dir/lan.conf" <<S
name "ferrum-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 ${IPMI_LAN_PORT:-19623}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "$dir/lancontrol.sh eth0"
  endlan
  serial kcs 127.0.0.1 ${IPMI_VM_PORT:-19002} codec VM
  user 1 true  ""        "test" user     10       none md2 md5 straight
  user 2 true  "ipmiusr" "test" admin    10       none md2 md5 straight
S
  printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n' > "$dir/sim.emu"
  ipmi_sim -c "$dir/lan.conf" -f "$dir/sim.emu" -s "$dir/state" -n > "$dir/sim.log" 2>&1 &
  IPMI_SIM_PID=$!
  sleep 1
}

nics_bmc_sata() {
  disk sata0.img 4G; disk sata1.img 8G
  start_ipmi_sim
  trap 'kill "$IPMI_SIM_PID" 2>/dev/null || true' RETURN
  KARGS="capture.hostname=ferrum-bmc capture.static=52:54:00:fe:02:02=192.0.2.21/24 capture.down=52:54:00:fe:02:03" \
  SMP=4,sockets=2,cores=2,threads=1 MEM=2048 "$HERE/run-vm.sh" "$MACHINES/qemu-nics-bmc-sata" \
    -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G \
    -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1 \
    -smbios type=1,manufacturer=FerrumLab,product=NICs-BMC-SATA-1,serial=FL-BMC-0001 \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,mac=52:54:00:fe:02:01 \
    -netdev user,id=n1,restrict=on -device e1000,netdev=n1,mac=52:54:00:fe:02:02 \
    -netdev user,id=n2,restrict=on -device e1000e,netdev=n2,mac=52:54:00:fe:02:03 \
    -chardev socket,id=ipmi0,host=127.0.0.1,port="${IPMI_VM_PORT:-19002}",reconnect=10 \
    -device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0 \
    -drive if=none,id=s0,format=raw,file="$D/sata0.img" \
    -device ide-hd,drive=s0,bus=ide.0,serial=FERRUMSATA0,model=FERRUM-SSD-4G,wwn=0x5000c500a1b2c3d4,rotation_rate=1 \
    -drive if=none,id=s1,format=raw,file="$D/sata1.img" \
    -device ide-hd,drive=s1,bus=ide.1,serial=FERRUMSATA1,model=FERRUM-HDD-8G,wwn=0x5000c500a1b2c3d5,rotation_rate=7200
}

raid1_uefi() {
  disk sys.img 3G; disk raida.img 1G; disk raidb.img 1G
  KARGS="capture.hostname=ferrum-raid capture.raid=serial:FERRUM-RAID-A,serial:FERRUM-RAID-B" \
  FIRMWARE=uefi SMP=2 MEM=1536 "$HERE/run-vm.sh" "$MACHINES/qemu-raid1-uefi" \
    -smbios type=1,manufacturer=FerrumLab,product=RAID1-UEFI-1,serial=FL-RAID-0001 \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,mac=52:54:00:fe:03:01 \
    -device ipmi-bmc-sim,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0 \
    -device virtio-scsi-pci,id=scsi0 \
    -drive if=none,id=sd0,format=raw,file="$D/sys.img" -device scsi-hd,drive=sd0,bus=scsi0.0,serial=FERRUMSCSI0,wwn=0x6001405abcdef001 \
    -drive if=none,id=r0,format=raw,file="$D/raida.img" -device virtio-blk-pci,drive=r0,serial=FERRUM-RAID-A \
    -drive if=none,id=r1,format=raw,file="$D/raidb.img" -device virtio-blk-pci,drive=r1,serial=FERRUM-RAID-B
}

for name in "${@:-qemu-nvme-virtio qemu-nics-bmc-sata qemu-raid1-uefi}"; do
  for n in $name; do
    case "$n" in
      qemu-nvme-virtio) nvme_virtio ;;
      qemu-nics-bmc-sata) nics_bmc_sata ;;
      qemu-raid1-uefi) raid1_uefi ;;
      *) echo "unknown machine $n" >&2; exit 2 ;;
    esac
  done
done
