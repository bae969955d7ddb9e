#!/bin/bash
# Capture everything Ferrum's hardware inventory reads from a machine, so tests can replay it
# through test/helpers/fixture-host.ts.
#
# Usage (as root, on the machine to capture):  scripts/capture-machine.sh OUTDIR
#
# OUTDIR receives
#   fs/        the /sys, /proc, /dev and /run files the inventory reads, at their real paths.
#              Symlinks stay symlinks with relative targets (absolute ones are made relative), and
#              the targets are captured too, so links resolve inside fs/. Only small regular files
#              that could be read are copied: write-only or unreadable attributes are left out, and
#              no directory is ever copied whole. Device nodes (/dev/ipmi0, /dev/sda, ...) become
#              empty files that only record that the node existed. Empty directories hold a ".keep"
#              marker so that they survive git.
#   commands/  one JSON file per command: {"cmd", "args", "exitCode", "stdout", "stderr"}, run
#              with LC_ALL=C as the agent runs them. Missing tools are recorded with exit code 127.
#   lsblk.txt  plain `lsblk` output, for humans.
#   capture.json  when, on what kernel and with which script version the capture was made.
#
# Works with bash and either GNU coreutils/findutils or busybox. Nothing on the machine is changed.
# The capture holds serial numbers, MAC and IP addresses, the kernel command line and the
# hostname: review it before publishing it.
set -u
VERSION=1
OUT="${1:-}"
[ -n "$OUT" ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || echo "warning: not root: some attributes (DMI serials, ipmitool) will be missing" >&2
mkdir -p "$OUT" || exit 1
OUT="$(cd "$OUT" && pwd)"
FS="$OUT/fs"
CMDS="$OUT/commands"
mkdir -p "$FS" "$CMDS"
export LC_ALL=C
MAX_BYTES=1048576      # largest file copied (the DMI table and /proc/cpuinfo of big machines)
HAVE_TIMEOUT=0; command -v timeout >/dev/null 2>&1 && HAVE_TIMEOUT=1

# ---------------------------------------------------------------------------------------------
# paths and symlinks

# Lexically normalises an absolute path (resolves "." and "..", no symlinks).
normpath() {
  local part out=""
  local -a stack=() parts=()
  IFS=/ read -r -a parts <<< "$1"
  for part in "${parts[@]}"; do
    case "$part" in
      ''|.) ;;
      ..) [ ${#stack[@]} -gt 0 ] && unset 'stack[${#stack[@]}-1]' ;;
      *) stack+=("$part") ;;
    esac
  done
  for part in "${stack[@]}"; do out="$out/$part"; done
  printf '%s\n' "${out:-/}"
}

# Relative path from directory $1 to absolute path $2 (both normalised).
relpath() {
  local from="$1" to="$2" up=""
  while [ "$from" != / ] && [ "${to#"$from"/}" = "$to" ]; do
    from="$(dirname "$from")"; up="../$up"
  done
  if [ "$from" = / ]; then printf '%s%s\n' "$up" "${to#/}"; else printf '%s%s\n' "$up" "${to#"$from"/}"; fi
}

# Reproduces every symlink on the way to absolute path $1 inside $FS (recursively, so the link
# targets exist too) and prints the real path the walk ends at. Prints nothing if a component
# does not exist.
MIRROR_DEPTH=0
mirror() {
  local path="$1" cur="" comp next target dest
  local -a comps
  IFS=/ read -r -a comps <<< "${path#/}"
  MIRROR_DEPTH=$((MIRROR_DEPTH + 1))
  if [ "$MIRROR_DEPTH" -gt 40 ]; then MIRROR_DEPTH=$((MIRROR_DEPTH - 1)); return 1; fi
  for comp in "${comps[@]}"; do
    [ -z "$comp" ] && continue
    next="$cur/$comp"
    if [ -L "$next" ]; then
      target="$(readlink "$next")" || { MIRROR_DEPTH=$((MIRROR_DEPTH - 1)); return 1; }
      case "$target" in
        /*) dest="$(normpath "$target")"; target="$(relpath "${cur:-/}" "$dest")" ;; # stay inside fs/
        *) dest="$(normpath "$cur/$target")" ;;
      esac
      mkdir -p "$FS$cur"
      [ -L "$FS$next" ] || [ -e "$FS$next" ] || ln -s "$target" "$FS$next"
      next="$(mirror "$dest")" || { MIRROR_DEPTH=$((MIRROR_DEPTH - 1)); return 1; }
      [ -n "$next" ] || { MIRROR_DEPTH=$((MIRROR_DEPTH - 1)); return 1; }
    elif [ ! -e "$next" ]; then
      MIRROR_DEPTH=$((MIRROR_DEPTH - 1)); return 1
    fi
    cur="$next"
  done
  MIRROR_DEPTH=$((MIRROR_DEPTH - 1))
  printf '%s\n' "${cur:-/}"
}

# Copies one regular file (after mirroring the links on its path) when it can be read and is
# small; directories are only created, never copied. Device nodes become empty marker files.
grab() {
  local p real tmp
  for p in "$@"; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    real="$(mirror "$p")" || continue
    [ -n "$real" ] || continue
    if [ -d "$real" ]; then
      mkdir -p "$FS$real"
    elif [ -f "$real" ]; then
      [ -e "$FS$real" ] && continue
      mkdir -p "$FS$(dirname "$real")"
      tmp="$FS$real.tmp.$$"
      # sysfs reports 4096 bytes for everything: read it to know. Write-only, EINVAL (carrier of a
      # down link) and EIO attributes fail here and are skipped, as the agent would see them fail.
      if head -c "$((MAX_BYTES + 1))" "$real" > "$tmp" 2>/dev/null \
        && [ "$(wc -c < "$tmp")" -le "$MAX_BYTES" ]; then
        mv "$tmp" "$FS$real"
      else
        rm -f "$tmp"
      fi
    elif [ -b "$real" ] || [ -c "$real" ]; then
      mkdir -p "$FS$(dirname "$real")"
      : > "$FS$real"
    fi
  done
}

# Mirrors a directory entry (and its links) without copying anything inside it.
grabdir() {
  local p real
  for p in "$@"; do
    real="$(mirror "$p")" || continue
    [ -d "$real" ] && mkdir -p "$FS$real"
  done
}

# The regular files directly inside directory $1 (no recursion).
grabfiles() {
  local d="$1" f
  [ -d "$d" ] || return 0
  grabdir "$d"
  for f in "$d"/*; do
    [ -f "$f" ] && [ ! -L "$f" ] && grab "$f"
  done
}

# Names (not contents) of the entries of directory $1: links mirrored, subdirectories created.
grabnames() {
  local d="$1" f
  [ -d "$d" ] || return 0
  grabdir "$d"
  for f in "$d"/*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    if [ -L "$f" ]; then mirror "$f" >/dev/null || true
    elif [ -d "$f" ]; then mkdir -p "$FS$f"
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# commands

json_string() { # stdin -> a JSON string literal
  # Character by character (only on lines that need it): gsub's handling of backslashes in the
  # replacement differs between mawk, gawk and busybox awk.
  awk 'BEGIN { ORS = ""; print "\""; for (i = 1; i < 32; i++) code[sprintf("%c", i)] = i }
       {
         if (NR > 1) print "\\n"
         s = $0
         if (s !~ /[\\"\001-\037]/) { print s; next }
         out = ""
         for (i = 1; i <= length(s); i++) {
           c = substr(s, i, 1)
           if (c == "\\") out = out "\\\\"
           else if (c == "\"") out = out "\\\""
           else if (c == "\t") out = out "\\t"
           else if (c in code) out = out sprintf("\\u%04x", code[c])
           else out = out c
         }
         print out
       }
       END { print "\"" }'
}

# record FILE CMD ARGS...: runs the command and stores it as JSON. The final newline of stdout
# is kept exactly (awk sees lines; a trailing "\n" is restored from the byte count).
record() {
  local file="$CMDS/$1.json"; shift
  local cmd="$1"; shift
  local o="$OUT/.stdout.$$" e="$OUT/.stderr.$$" rc a first=1 args=""
  local path
  if path="$(command -v "$cmd" 2>/dev/null)" && [ -n "$path" ]; then
    # The full path: busybox's timeout would otherwise run its own applet of the same name (ip).
    if [ "$HAVE_TIMEOUT" = 1 ]; then timeout 60 "$path" "$@" > "$o" 2> "$e" < /dev/null; rc=$?
    else "$path" "$@" > "$o" 2> "$e" < /dev/null; rc=$?; fi
  else
    : > "$o"; printf '%s: command not found\n' "$cmd" > "$e"; rc=127
  fi
  for a in "$@"; do
    [ "$first" = 1 ] || args="$args, "
    first=0
    args="$args$(printf '%s' "$a" | json_string)"
  done
  {
    printf '{\n  "cmd": %s,\n  "args": [%s],\n  "exitCode": %d,\n' "$(printf '%s' "$cmd" | json_string)" "$args" "$rc"
    printf '  "stdout": %s,\n' "$(text_json "$o")"
    printf '  "stderr": %s\n}\n' "$(text_json "$e")"
  } > "$file"
  rm -f "$o" "$e"
}

text_json() { # FILE -> JSON string of its exact contents (final newline preserved)
  local f="$1" s
  if [ ! -s "$f" ]; then printf '""'; return; fi
  s="$(json_string < "$f")"
  if [ "$(tail -c 1 "$f" | wc -l)" -eq 1 ]; then
    printf '%s' "${s%\"}\\n\""
  else
    printf '%s' "$s"
  fi
}

# ---------------------------------------------------------------------------------------------
# /proc

grab /proc/cpuinfo /proc/meminfo /proc/mdstat /proc/cmdline /proc/partitions /proc/version \
  /proc/sys/kernel/arch /proc/sys/kernel/hostname /proc/sys/kernel/osrelease
# /proc/mounts is a link into /proc/self, i.e. to a PID of this script: store its contents.
mkdir -p "$FS/proc"
head -c "$MAX_BYTES" /proc/self/mounts > "$FS/proc/mounts" 2>/dev/null || rm -f "$FS/proc/mounts"

# ---------------------------------------------------------------------------------------------
# CPUs, NUMA, PCI, firmware

S=/sys/devices/system/cpu
grab $S/present $S/possible $S/online $S/offline $S/kernel_max
for c in $S/cpu[0-9]*; do
  [ -d "$c" ] || continue
  grab "$c/online"
  grabfiles "$c/topology"
done
grab $S/cpu0/cpufreq/cpuinfo_max_freq $S/cpu0/cpufreq/cpuinfo_min_freq $S/cpu0/cpufreq/scaling_driver
for n in /sys/devices/system/node/node[0-9]*; do
  [ -d "$n" ] || continue
  grab "$n/cpulist" "$n/cpumap" "$n/meminfo"
done
grab /sys/devices/system/node/online /sys/devices/system/node/possible /sys/devices/system/node/has_cpu

grabdir /sys/bus/pci/devices
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  grab "$d"/vendor "$d"/device "$d"/class "$d"/revision "$d"/numa_node "$d"/subsystem_vendor \
    "$d"/subsystem_device "$d"/local_cpulist "$d"/driver
done

grab /sys/firmware/dmi/tables/DMI /sys/firmware/dmi/tables/smbios_entry_point
grabfiles /sys/class/dmi/id
if [ -d /sys/firmware/efi ]; then
  grabdir /sys/firmware/efi
  grab /sys/firmware/efi/fw_platform_size /sys/firmware/efi/runtime /sys/firmware/efi/systab
fi

# ---------------------------------------------------------------------------------------------
# network interfaces

grabdir /sys/class/net
for n in /sys/class/net/*; do
  [ -e "$n" ] || continue
  grab "$n"/address "$n"/addr_assign_type "$n"/broadcast "$n"/carrier "$n"/dev_id "$n"/dev_port \
    "$n"/duplex "$n"/flags "$n"/ifindex "$n"/iflink "$n"/mtu "$n"/operstate "$n"/speed "$n"/type \
    "$n"/uevent "$n"/phys_port_name "$n"/phys_switch_id
  if [ -e "$n/device" ]; then
    grab "$n"/device "$n"/device/vendor "$n"/device/device "$n"/device/subsystem_vendor \
      "$n"/device/subsystem_device "$n"/device/class "$n"/device/revision "$n"/device/numa_node \
      "$n"/device/driver "$n"/device/uevent
  fi
  [ -e "$n/master" ] && grab "$n/master"
  [ -d "$n/bonding" ] && grabfiles "$n/bonding"
  [ -d "$n/bonding_slave" ] && grabfiles "$n/bonding_slave"
  [ -d "$n/bridge" ] && grab "$n"/bridge/bridge_id "$n"/bridge/stp_state
  [ -d "$n/brif" ] && grabnames "$n/brif"
done

# ---------------------------------------------------------------------------------------------
# block devices

grabdir /sys/class/block /sys/block
grab_block() {
  local b="$1" q
  grab "$b"/dev "$b"/size "$b"/ro "$b"/removable "$b"/partition "$b"/start "$b"/ext_range \
    "$b"/capability "$b"/uevent "$b"/wwid "$b"/nsid "$b"/eui "$b"/nguid "$b"/uuid
  for q in rotational logical_block_size physical_block_size hw_sector_size minimum_io_size \
    optimal_io_size discard_granularity nr_requests scheduler; do grab "$b/queue/$q"; done
  if [ -e "$b/device" ]; then
    grab "$b"/device "$b"/device/vendor "$b"/device/model "$b"/device/rev "$b"/device/serial \
      "$b"/device/firmware_rev "$b"/device/wwid "$b"/device/type "$b"/device/state \
      "$b"/device/transport "$b"/device/uevent "$b"/device/driver
    [ -d "$b/device/scsi_device" ] && grabnames "$b/device/scsi_device"
  fi
  [ -d "$b/holders" ] && grabnames "$b/holders"
  [ -d "$b/slaves" ] && grabnames "$b/slaves"
  [ -d "$b/md" ] && grab "$b"/md/level "$b"/md/raid_disks "$b"/md/array_state "$b"/md/metadata_version \
    "$b"/md/uuid "$b"/md/chunk_size "$b"/md/sync_action
  [ -d "$b/dm" ] && grab "$b"/dm/name "$b"/dm/uuid
  return 0
}
for b in /sys/class/block/* /sys/block/*; do
  [ -e "$b" ] || continue
  grab_block "$b"
done

# ---------------------------------------------------------------------------------------------
# /dev and /run/udev

for b in /sys/class/block/*; do
  [ -e "$b" ] || continue
  k="${b##*/}"
  { [ -b "/dev/$k" ] || [ -e "/dev/$k" ]; } && grab "/dev/$k"
done
for l in /dev/disk/by-path /dev/disk/by-id /dev/disk/by-uuid /dev/disk/by-partuuid /dev/md /dev/mapper; do
  [ -d "$l" ] || continue
  grabdir "$l"
  for f in "$l"/*; do
    [ -L "$f" ] || [ -b "$f" ] || continue
    mirror "$f" >/dev/null || true
    [ -b "$f" ] && grab "$f"
  done
done
for f in /dev/ipmi0 /dev/ipmi/0 /dev/ipmidev/0; do [ -e "$f" ] && grab "$f"; done

if [ -d /run/udev/data ]; then
  grabdir /run/udev/data
  for f in /run/udev/data/b*; do [ -f "$f" ] && grab "$f"; done
  for n in /sys/class/net/*; do
    i="$(cat "$n/ifindex" 2>/dev/null)" || continue
    [ -f "/run/udev/data/n$i" ] && grab "/run/udev/data/n$i"
  done
fi

# ---------------------------------------------------------------------------------------------
# commands (the exact argument lists the agent uses)

record lsblk-json lsblk -bia --json -o KNAME,NAME,MODEL,SIZE,ROTA,TYPE,UUID,PARTUUID,SERIAL,LOG-SEC,PHY-SEC,TRAN,FSTYPE,PARTTYPE,RO,HCTL,WWN,VENDOR
record ip-addr ip -j addr show
record ip-link ip -j link
bmc_channels=""
for ch in 1 2 3 4 5 6 7 8 9 10 11; do
  record "ipmitool-lan-print-$ch" ipmitool lan print "$ch"
  grep -q '"exitCode": 0,' "$CMDS/ipmitool-lan-print-$ch.json" && bmc_channels="$bmc_channels $ch"
done
# IPA asks lan6 on the channel the IPv4 address was found on (1 when none was).
for ch in 1 $bmc_channels; do
  [ -f "$CMDS/ipmitool-lan6-print-$ch.json" ] || record "ipmitool-lan6-print-$ch" ipmitool lan6 print "$ch"
done
record dmidecode dmidecode -t bios -t processor -t memory
record lscpu lscpu
record lscpu-json lscpu -J
if command -v biosdevname >/dev/null 2>&1; then
  for n in /sys/class/net/*; do
    [ -e "$n/device" ] || continue
    record "biosdevname-${n##*/}" biosdevname -i "${n##*/}"
  done
fi
lsblk > "$OUT/lsblk.txt" 2>&1 || true

{
  printf '{\n  "captureVersion": %d,\n' "$VERSION"
  printf '  "capturedAt": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "uname": %s\n}\n' "$(uname -a | tr -d '\n' | json_string)"
} > "$OUT/capture.json"

rm -f "$OUT"/.stdout.* "$OUT"/.stderr.*
# git keeps no empty directories, and their existence matters (/sys/firmware/efi, scsi_device/H:C:T:L):
# mark them. The fixture host hides these markers.
find "$FS" -type d -empty -exec touch {}/.keep \;
echo "captured into $OUT ($(du -sk "$OUT" | cut -f1) KiB)"
