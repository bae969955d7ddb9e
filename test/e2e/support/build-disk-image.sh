#!/bin/bash
# Builds the Debian disk image the end-to-end test deploys: a raw GPT disk with an EFI system
# partition (systemd-boot at the fallback path EFI/BOOT/BOOTX64.EFI, so firmware boots it even
# without an NVRAM entry; kernel + initramfs-tools initrd) and an ext4 root. On boot a systemd
# unit prints "$MARKER <kernel> root=<device> uptime=<s>" on the serial console and powers off.
# No loop devices and no mounts: the root is an mmdebstrap directory turned into ext4 with
# `mkfs.ext4 -d`, the ESP is filled with mtools, both are copied into the disk file with dd.
#
# Usage: build-disk-image.sh OUT.raw MARKER
# Environment: FERRUM_DEBIAN_MIRROR (default: the mirror apt is configured with).
# Needs root, mmdebstrap, mkfs.ext4 (e2fsprogs), mkfs.vfat (dosfstools), mtools, sfdisk, apt-get.
set -euo pipefail
OUT="${1:?usage: build-disk-image.sh OUT.raw MARKER}"
MARKER="${2:?usage: build-disk-image.sh OUT.raw MARKER}"
SUITE=bookworm
[ "$(id -u)" = 0 ] || { echo "build-disk-image: needs root" >&2; exit 1; }
for t in mmdebstrap mkfs.ext4 mkfs.vfat mcopy mmd sfdisk apt-get dpkg-deb; do
  command -v "$t" >/dev/null || { echo "build-disk-image: missing tool $t (scripts/install-deps.sh --with-vm)" >&2; exit 1; }
done

SOURCES=()
if [ -n "${FERRUM_DEBIAN_MIRROR:-}" ]; then
  m="${FERRUM_DEBIAN_MIRROR%/}"
  SOURCES=("deb $m $SUITE main" "deb $m $SUITE-updates main" "deb ${m%/debian}/debian-security $SUITE-security main")
else
  while IFS='|' read -r uri rel; do SOURCES+=("deb ${uri%/} $rel main"); done < <(
    apt-get indextargets --no-release-info --format '$(REPO_URI)|$(RELEASE)' 'Identifier: Packages' 2>/dev/null |
    grep -E "\|$SUITE(-updates|-security)?$" | sort -u)
fi
[ ${#SOURCES[@]} -gt 0 ] || { echo "build-disk-image: apt has no $SUITE sources (apt-get update, or FERRUM_DEBIAN_MIRROR)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/ferrum-disk-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
R="$WORK/root"
ROOT_PARTUUID="$(cat /proc/sys/kernel/random/uuid)"
echo "build-disk-image: mmdebstrap $SUITE (systemd, linux-image-cloud-amd64, initramfs-tools)"
set -f
EXCL=()
for p in /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian/*; do EXCL+=("--dpkgopt=path-exclude=$p"); done
set +f
mmdebstrap --variant=essential --mode=root --format=directory \
  --include=systemd,systemd-sysv,udev,kmod,iproute2,mount,initramfs-tools,zstd,linux-image-cloud-amd64 \
  "${EXCL[@]}" --aptopt='Acquire::Languages "none"' \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo COMPRESS=zstd > "$1/etc/initramfs-tools/conf.d/compress"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  "$SUITE" "$R" "${SOURCES[@]}" < /dev/null > "$WORK/mmdebstrap.log" 2>&1 || true
KVER="$(ls "$R/lib/modules" 2>/dev/null | head -n 1)"
if [ -z "$KVER" ] || [ ! -f "$R/boot/vmlinuz-$KVER" ] || [ ! -f "$R/boot/initrd.img-$KVER" ]; then
  grep -vE '^(I: |Selecting|Preparing|Unpacking|Setting up|\(Reading|Processing)' "$WORK/mmdebstrap.log" | tail -n 30 >&2
  echo "build-disk-image: mmdebstrap failed, or the kernel/initrd is missing in the chroot (log above)" >&2
  exit 1
fi

# systemd-boot from its .deb (not installed: its package hooks want a mounted ESP).
(cd "$WORK" && apt-get download -q systemd-boot-efi 2>&1 | grep -v unsandboxed >/dev/null || true)
ls "$WORK"/systemd-boot-efi_*.deb >/dev/null 2>&1 || { echo "build-disk-image: apt-get download systemd-boot-efi failed" >&2; exit 1; }
dpkg-deb -x "$WORK"/systemd-boot-efi_*.deb "$WORK/sdboot"

echo "PARTUUID=$ROOT_PARTUUID / ext4 rw,relatime 0 1" > "$R/etc/fstab"
echo ferrum-deployed > "$R/etc/hostname"
: > "$R/etc/machine-id"
cat > "$R/etc/systemd/system/ferrum-e2e-marker.service" <<UNIT
[Unit]
Description=Ferrum e2e: report a boot of the deployed OS on the serial console, then power off
After=local-fs.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "$MARKER \$(uname -r) root=\$(findmnt -n -o SOURCE /) uptime=\$(cut -d" " -f1 /proc/uptime)" > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
UNIT
chroot "$R" systemctl enable ferrum-e2e-marker.service >/dev/null 2>&1
for u in getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$R/etc/systemd/system/$u"
done

# GPT: 1 MiB | ESP | root | backup GPT
ROOT_MIB=$(( $(du -s -m -x "$R" | cut -f1) * 12 / 10 + 64 ))
KMIB=$(( ( $(stat -c %s "$R/boot/vmlinuz-$KVER") + $(stat -c %s "$R/boot/initrd.img-$KVER") ) / 1048576 ))
ESP_MIB=$(( KMIB + 16 )); [ "$ESP_MIB" -lt 64 ] && ESP_MIB=64
mkfs.ext4 -q -F -L root -d "$R" "$WORK/root.img" "${ROOT_MIB}M"
truncate -s "${ESP_MIB}M" "$WORK/esp.img"
mkfs.vfat -n ESP "$WORK/esp.img" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$WORK/esp.img" "$WORK/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$WORK/esp.img" "$R/boot/vmlinuz-$KVER" ::/vmlinuz
mcopy -i "$WORK/esp.img" "$R/boot/initrd.img-$KVER" ::/initrd.img
printf 'default debian.conf\ntimeout 0\n' > "$WORK/loader.conf"
printf 'title Debian (Ferrum e2e)\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=PARTUUID=%s rw console=ttyS0,115200 panic=-1\n' "$ROOT_PARTUUID" > "$WORK/debian.conf"
mcopy -i "$WORK/esp.img" "$WORK/loader.conf" ::/loader/loader.conf
mcopy -i "$WORK/esp.img" "$WORK/debian.conf" ::/loader/entries/debian.conf

DISK="$WORK/disk.raw"
truncate -s "$(( 1 + ESP_MIB + ROOT_MIB + 1 ))M" "$DISK"
sfdisk -q "$DISK" <<SFD
label: gpt
start=1MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$(( 1 + ESP_MIB ))MiB, size=${ROOT_MIB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_PARTUUID, name=root
SFD
dd if="$WORK/esp.img" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$DISK" bs=1M seek=$(( 1 + ESP_MIB )) conv=notrunc,sparse status=none
mv -f "$DISK" "$OUT"
echo "build-disk-image: $OUT: $(( 2 + ESP_MIB + ROOT_MIB )) MiB, kernel $KVER, root PARTUUID=$ROOT_PARTUUID"
