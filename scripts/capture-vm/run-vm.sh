#!/bin/bash
# Boots the capture ramdisk in QEMU (TCG) with the given hardware and unpacks the capture it sends
# back over a virtio-serial port into DEST (a test/fixtures/machines/<name> directory).
#
# Usage: run-vm.sh DEST [QEMU ARGS...]
# Environment:
#   KERNEL, INITRD   default $BUILD/vmlinuz, $BUILD/initrd.img (from build-initrd.sh; BUILD=/tmp/ferrum-capture-vm)
#   FIRMWARE=bios    bios (SeaBIOS) | uefi (OVMF; kernel still loaded with -kernel, through the EFI stub)
#   KARGS            extra kernel parameters (see init: capture.hostname=, capture.raid=, ...)
#   MACHINE=q35 MEM=1024 SMP=2 ACCEL=tcg TIMEOUT=900
# The exact QEMU command line is written to DEST/qemu-cmdline.txt and the serial log to
# $BUILD/<name>.serial.log.
set -euo pipefail
DEST="${1:?usage: run-vm.sh DEST [QEMU ARGS...]}"; shift
BUILD="${BUILD:-/tmp/ferrum-capture-vm}"
KERNEL="${KERNEL:-$BUILD/vmlinuz}"; INITRD="${INITRD:-$BUILD/initrd.img}"
FIRMWARE="${FIRMWARE:-bios}"; MACHINE="${MACHINE:-q35}"; MEM="${MEM:-1024}"; SMP="${SMP:-2}"
ACCEL="${ACCEL:-tcg}"; TIMEOUT="${TIMEOUT:-900}"
NAME="$(basename "$DEST")"
mkdir -p "$BUILD"
TAR="$BUILD/$NAME.capture.tar"; LOG="$BUILD/$NAME.serial.log"
rm -f "$TAR" "$LOG"

args=(-name "$NAME" -machine "$MACHINE" -accel "$ACCEL" -m "$MEM" -smp "$SMP"
  -nographic -no-reboot -no-user-config -nodefaults -serial "file:$LOG" -monitor none
  -kernel "$KERNEL" -initrd "$INITRD"
  -append "console=ttyS0,115200 panic=-1 quiet ${KARGS:-}"
  -device virtio-serial-pci,id=vser0
  -chardev "file,id=capout,path=$TAR" -device virtserialport,bus=vser0.0,chardev=capout,name=capture)
if [ "$FIRMWARE" = uefi ]; then
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$BUILD/$NAME.OVMF_VARS.fd"
  args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
         -drive "if=pflash,format=raw,unit=1,file=$BUILD/$NAME.OVMF_VARS.fd")
fi
args+=("$@")

echo "[$NAME] booting ($FIRMWARE, $ACCEL), serial log $LOG"
start=$(date +%s)
timeout "$TIMEOUT" qemu-system-x86_64 "${args[@]}" < /dev/null || echo "[$NAME] qemu exited with $?" >&2
echo "[$NAME] qemu done after $(( $(date +%s) - start )) s"
grep -q CAPTURE-DONE "$LOG" || { echo "[$NAME] no capture; last serial lines:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
rm -rf "$DEST"; mkdir -p "$DEST"
tar -C "$DEST" -xf "$TAR"
# The QEMU command line, with build paths shortened, to reproduce the capture.
quote() { case "$1" in *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;; *) printf '%s' "$1" ;; esac; }
{
  printf 'qemu-system-x86_64'
  for a in "${args[@]}"; do
    case "$a" in -*) printf ' \\\n  ' ;; *) printf ' ' ;; esac
    quote "$a"
  done
  echo
} | sed "s#$BUILD/#\$BUILD/#g" > "$DEST/qemu-cmdline.txt"
echo "[$NAME] captured into $DEST ($(find "$DEST" -type f -printf '%s\n' | awk '{s+=$1} END {print s}') bytes in files)"
