#!/bin/bash
# Builds the kernel + initramfs that capture-vm boots: Debian's generic kernel (linux-image-amd64,
# which has the e1000, ahci, nvme, ipmi_si and raid1 modules the cloud kernel lacks), busybox, the
# tools the inventory runs (copied from this Debian host with the libraries ldd names), udev with
# its rules (so /run/udev/data and /dev/disk/by-* exist), scripts/capture-machine.sh and init.
#
# Usage: build-initrd.sh OUTDIR        -> OUTDIR/vmlinuz, OUTDIR/initrd.img
# Needs (apt-get install): busybox-static util-linux iproute2 ipmitool dmidecode mdadm udev kmod cpio
#   zstd; the kernel .deb is fetched with `apt-get download` into $CACHE.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$(mkdir -p "${1:?usage: build-initrd.sh OUTDIR}" && cd "$1" && pwd)"
CACHE="${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrum-capture-vm}"
MODULES="virtio_pci virtio_blk virtio_net virtio_console virtio_rng virtio_scsi e1000 e1000e ahci sd_mod nvme
  ipmi_si ipmi_devintf raid1 md_mod"
TOOLS="bash lsblk lscpu ip ipmitool dmidecode mdadm udevadm"

for t in apt-get apt-cache dpkg-deb cpio depmod modinfo ldd zstd; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "install busybox-static" >&2; exit 1; }
for t in $TOOLS; do command -v "$t" >/dev/null || { echo "missing tool on this host: $t" >&2; exit 1; }; done
UDEVD=/lib/systemd/systemd-udevd
[ -x "$UDEVD" ] || { echo "missing $UDEVD (apt-get install udev)" >&2; exit 1; }

mkdir -p "$CACHE"
KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')"
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
DEB="$(ls "$CACHE/$KPKG"_*.deb 2>/dev/null | head -1 || true)"
if [ -z "$DEB" ]; then (cd "$CACHE" && apt-get download "$KPKG" >/dev/null); DEB="$(ls "$CACHE/$KPKG"_*.deb | head -1)"; fi
KVER="${KPKG#linux-image-}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/capture-vm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
X="$WORK/x"; R="$WORK/root"; mkdir -p "$X" "$R"
dpkg-deb -x "$DEB" "$X"

mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,usr/bin,usr/sbin,usr/lib,lib/x86_64-linux-gnu,lib64,lib/modules/"$KVER",lib/systemd}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done

# host binaries and the shared libraries they load
copy_with_libs() {
  local src="$1" dst="$2" lib
  mkdir -p "$(dirname "$R$dst")"; cp -L "$src" "$R$dst"
  for lib in $(ldd "$src" 2>/dev/null | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}'); do
    [ -f "$lib" ] || continue
    mkdir -p "$R$(dirname "$lib")"; [ -e "$R$lib" ] || cp -L "$lib" "$R$lib"
  done
}
for t in $TOOLS; do p="$(command -v "$t")"; rm -f "$R/bin/$t" "$R/sbin/$t" "$R/usr/bin/$t" "$R/usr/sbin/$t"; copy_with_libs "$p" "/usr/bin/$t"; done
copy_with_libs "$UDEVD" /lib/systemd/systemd-udevd
for h in ata_id scsi_id cdrom_id dmi_memory_id; do [ -x "/usr/lib/udev/$h" ] && copy_with_libs "/usr/lib/udev/$h" "/usr/lib/udev/$h"; done
mkdir -p "$R/usr/lib/udev/rules.d"
cp /usr/lib/udev/rules.d/*.rules "$R/usr/lib/udev/rules.d/"
ln -sfn ../usr/lib/udev "$R/lib/udev"
# predictable interface names (enp0s2, ...) as on an installed system
mkdir -p "$R/usr/lib/systemd/network"
cp /usr/lib/systemd/network/99-default.link "$R/usr/lib/systemd/network/" 2>/dev/null || true
[ -e "$R/lib64/ld-linux-x86-64.so.2" ] || ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\ndisk:x:6:\ntty:x:5:\nkmem:x:15:\ndialout:x:20:\ncdrom:x:24:\ntape:x:26:\naudio:x:29:\nvideo:x:44:\ninput:x:101:\nkvm:x:102:\nrender:x:103:\nsgx:x:104:\n' > "$R/etc/group"
cp "$REPO/scripts/capture-machine.sh" "$R/bin/capture-machine.sh"
cp "$HERE/init" "$R/init"; chmod 755 "$R/init" "$R/bin/capture-machine.sh"

# kernel and the module closure
cp "$X/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
MODROOT="$X/lib/modules/$KVER"
declare -A SEEN=()
add_mod() {
  local name="${1//-/_}" f dep
  [ -n "${SEEN[$name]:-}" ] && return 0
  f="$(find "$MODROOT/kernel" \( -name "$name.ko*" -o -name "${1//_/-}.ko*" \) | head -1)"
  if [ -z "$f" ]; then SEEN[$name]=builtin; return 0; fi
  SEEN[$name]=1
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_mod "$dep"; done
  mkdir -p "$R/lib/modules/$KVER/$(dirname "${f#$MODROOT/}")"; cp "$f" "$R/lib/modules/$KVER/${f#$MODROOT/}"
}
: > "$R/etc/modules"
for m in $MODULES; do add_mod "$m"; [ "${SEEN[${m//-/_}]}" = 1 ] && echo "$m" >> "$R/etc/modules"; done
cp "$MODROOT"/modules.builtin* "$MODROOT"/modules.order "$R/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$R" "$KVER"

(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | zstd -q -3 -T0 > "$OUT/initrd.img"
echo "kernel=$KPKG initrd=$(stat -c %s "$OUT/initrd.img") bytes modules=$(tr '\n' ' ' < "$R/etc/modules")"
