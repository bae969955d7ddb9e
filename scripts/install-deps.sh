#!/usr/bin/env bash
# Installs the Debian packages Ferrum's tests and demo use: the real Ironic 2023.1 conductor and
# API (never started as services), and the disk tools the agent calls. Idempotent and quiet when
# everything is present. Needs root. Usage: scripts/install-deps.sh [--with-vm] [--with-bench]
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: must run as root (the tests use loop devices and network namespaces)" >&2
  exit 1
fi

PKGS=(
  # the real conductor the conformance tests drive us with
  ironic-api ironic-conductor python3-ironicclient ironic-inspector
  # what the agent runs (a ramdisk image needs these too; tcpdump: passive LLDP, ipa-collect-lldp)
  util-linux fdisk gdisk parted e2fsprogs dosfstools xfsprogs mdadm kmod udev
  iproute2 dmidecode ipmitool lshw pciutils coreutils procps qemu-utils zstd xz-utils tcpdump
  # what the tests use to look at disks and networks
  mtools curl genisoimage file
  # install_bootloader: efibootmgr for UEFI NVRAM entries (mtools reads ESPs without mounting);
  # its tests build a bootable Debian image (mmdebstrap; the image brings its own GRUB) and boot it
  # under QEMU with SeaBIOS; debugfs (e2fsprogs) reads the result without mounting
  efibootmgr mmdebstrap qemu-system-x86 seabios
)
WITH_VM=0
for arg in "$@"; do
  case "$arg" in
    --with-vm) WITH_VM=1 ;;
    # npm run bench: nginx serves the images with sendfile, as Ironic deployments serve them
    --with-bench) PKGS+=(nginx-light) ;;
    *) echo "install-deps: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [[ $WITH_VM -eq 1 ]]; then
  PKGS+=(qemu-system-x86 ipxe-qemu ovmf seabios dnsmasq-base busybox-static mmdebstrap cpio binutils
         grub-pc-bin grub-efi-amd64-bin grub2-common efibootmgr
         # image-build/build.sh (ramdisk) and the e2e test's disk image: unpacking .debs, depmod,
         # module info, strip, zstd, mtools/sfdisk/mkfs for the image; the e2e VM: OVMF + iPXE ROM
         kmod fdisk mtools dosfstools e2fsprogs zstd coreutils iproute2 debian-archive-keyring
         # the e2e test's iSCSI initiator (user space: this host's kernel has no iscsi_tcp): libiscsi's
         # tools and qemu-io/qemu-img with qemu's iSCSI block driver
         libiscsi-bin qemu-block-extra qemu-utils
         # the rescue e2e test logs in to the ramdisk's sshd with a password
         openssh-client sshpass)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true APT_LISTCHANGES_FRONTEND=none
cand=$(apt-cache policy ironic-conductor 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -z "$cand" || "$cand" == "(none)" ]]; then apt-get update -q; fi

# Package scripts must not start services (no systemd as PID 1 here, and we run our own).
created_policy=0
if ! { [[ -x /usr/sbin/policy-rc.d ]] && grep -q 'exit 101' /usr/sbin/policy-rc.d; }; then
  [[ -e /usr/sbin/policy-rc.d ]] && cp -p /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.ferrum.bak
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created_policy=1
fi
restore_policy() {
  if [[ $created_policy -eq 1 ]]; then
    if [[ -e /usr/sbin/policy-rc.d.ferrum.bak ]]; then mv -f /usr/sbin/policy-rc.d.ferrum.bak /usr/sbin/policy-rc.d
    else rm -f /usr/sbin/policy-rc.d; fi
  fi
}
trap restore_policy EXIT

# No database, message queue, Keystone or endpoint registration from the packages' debconf.
command -v debconf-set-selections >/dev/null || apt-get install -y -q debconf
debconf-set-selections <<'SEL'
ironic-common ironic/configure_db boolean false
ironic-common ironic/configure_rabbit boolean false
ironic-common ironic/configure_ksat boolean false
ironic-common ironic/enabled_drivers string
ironic-api ironic/configure_api-endpoint boolean false
ironic-inspector ironic-inspector/configure_db boolean false
ironic-inspector ironic-inspector/configure_ksat boolean false
ironic-inspector ironic-inspector/configure_api-endpoint boolean false
dbconfig-common dbconfig-common/dbconfig-install boolean false
SEL

apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PKGS[@]}"

case "$(dpkg-query -W -f='${Version}' ironic-conductor)" in
  1:21.4.*) ;;
  *) echo "install-deps: WARNING: ironic-conductor is not the 2023.1 (21.4.x) series the tests target" >&2 ;;
esac
