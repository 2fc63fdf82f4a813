#!/bin/bash
# Idempotent setup of the QEMU guest bench (docs/testing.md, tier 3).
#
# Installs qemu-system-x86, busybox-static, cpio, binutils, kmod and xz-utils from Debian when a tool is
# missing, and fetches two Debian kernel images into target/vm/kernel/ (bookworm's 6.1 and trixie's 6.12;
# apt-get download + dpkg -x: unpacked, never installed as this machine's kernel). `apt-get update` runs
# only when apt does not know a package or a download fails. A second run finds everything in place and
# downloads nothing.
#
# On success prints KEY=VALUE lines (VM_KERNEL, VM_MODULES, VM_KVER of the first kernel, VM_KERNELS,
# VM_BUSYBOX, VM_QEMU) that tools/vm/run.sh sources; they are also written to target/vm/env.
# target/vm/kernels lists every kernel, one line each, 6.1 first: `KVER VMLINUZ MODULES_DIR`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
vm=${VM_CACHE:-$repo/target/vm}
mkdir -p "$vm"

log() { echo "setup.sh: $*" >&2; }
die() { echo "setup.sh: error: $*" >&2; exit 1; }

updated=0
apt_update() {
    if [ "$updated" = 0 ]; then
        log "apt-get update"
        # A third-party source that cannot be reached only warns; what matters is the next step.
        apt-get update -q >"$vm/apt-update.log" 2>&1 || log "apt-get update reported errors (continuing)"
        updated=1
    fi
}

# apt_install PKG...: install, running `apt-get update` once first if apt does not know a package.
apt_install() {
    local p
    for p in "$@"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then apt_update; break; fi
    done
    [ "$(id -u)" = 0 ] || die "need root to install $* (or install them yourself)"
    log "apt-get install $* (log: $vm/apt.log)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@" \
        >"$vm/apt.log" 2>&1; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@" \
            >"$vm/apt.log" 2>&1 || { tail -n 30 "$vm/apt.log" >&2; die "apt-get install $* failed"; }
    fi
}

# --- host tools -------------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
# readelf (is a binary static?) and objcopy (strip debug info off the initramfs binaries).
{ command -v readelf && command -v objcopy; } >/dev/null || need+=(binutils)
# depmod writes the kernel's modules.dep (the .deb ships none; dpkg's postinst would make it).
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
# 6.12's modules are .ko.xz; run.sh decompresses the ones the guest loads.
command -v xz >/dev/null || need+=(xz-utils)
# busybox-static ships /bin/busybox statically linked; a dynamic busybox cannot run in the initramfs.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing after installing busybox-static"
if readelf -lW "$busybox" | grep -q 'program interpreter'; then die "$busybox is not static"; fi
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing after install"

# --- kernel images ----------------------------------------------------------------------------------
# Two Debian kernels, the guest tier runs every scenario on each (docs/testing.md, "Two kernels"):
#   1. bookworm's 6.1: the dependency of this machine's linux-image-amd64 (e.g. linux-image-6.1.0-48-amd64)
#   2. trixie's 6.12: the same metapackage's dependency in trixie, read from a private apt state under
#      target/vm/apt-trixie/ (its own sources.list, lists and cache; the machine's apt setup is untouched)
# Each is fetched with `apt-get download` and unpacked with `dpkg -x` (never installed), then depmod'ed.

# resolve_kernel [APT_OPTS...]: the linux-image-N package that linux-image-amd64 depends on.
resolve_kernel() {
    apt-cache "$@" depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Trixie's apt state: FACTS.md "Kernels for the guest tier". Signed-By the trixie key of
# debian-archive-keyring (bookworm's package ships it).
tx=$vm/apt-trixie
[ -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ] || apt_install debian-archive-keyring
[ -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ] \
    || die "no trixie archive key in /usr/share/keyrings (debian-archive-keyring too old?)"
mkdir -p "$tx/lists/partial" "$tx/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-trixie-stable.gpg,/usr/share/keyrings/debian-archive-trixie-automatic.gpg] http://deb.debian.org/debian trixie main" \
    >"$tx/sources.list"
tx_opts=(-o "Dir::Etc::SourceList=$tx/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tx/lists" -o "Dir::Cache=$tx/cache" -o Acquire::Languages=none
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o APT::Get::List-Cleanup=0)
tx_updated=0
tx_update() {
    if [ "$tx_updated" = 0 ]; then
        log "apt-get update (trixie, private state in $tx)"
        apt-get "${tx_opts[@]}" update -q >"$tx/update.log" 2>&1 \
            || { tail -n 20 "$tx/update.log" >&2; die "apt-get update of trixie's lists failed (log: $tx/update.log)"; }
        tx_updated=1
    fi
}

# fetch_kernel LABEL UPDATE_FN [APT_OPTS...]: resolve, download, unpack and depmod one kernel; sets
# k_vmlinuz, k_kver, k_mods.
fetch_kernel() {
    local label=$1 update=$2 kpkg kdir deb kv base
    shift 2
    kpkg=$(resolve_kernel "$@" || true)
    if [ -z "$kpkg" ]; then "$update"; kpkg=$(resolve_kernel "$@" || true); fi
    [ -n "$kpkg" ] || die "cannot resolve $label's kernel package (apt-cache depends linux-image-amd64)"
    kdir=$vm/kernel/$kpkg
    if [ ! -e "$kdir/.done" ]; then
        log "fetching $kpkg ($label)"
        rm -rf "$kdir" "$vm/deb"
        mkdir -p "$vm/deb" "$kdir"
        # apt-get download writes into the current directory; _apt cannot write here, hence stderr off.
        if ! (cd "$vm/deb" && apt-get "$@" download -q "$kpkg" >&2 2>/dev/null); then
            "$update"
            (cd "$vm/deb" && apt-get "$@" download -q "$kpkg" >&2) || die "apt-get download $kpkg failed"
        fi
        deb=$(ls "$vm"/deb/"$kpkg"_*.deb 2>/dev/null | head -n1)
        [ -n "$deb" ] || die "apt-get download left no $kpkg .deb in $vm/deb"
        dpkg -x "$deb" "$kdir"
        rm -rf "$vm/deb"
        # 6.1 keeps its modules in lib/modules, 6.12 (merged /usr) in usr/lib/modules.
        if [ -d "$kdir/usr/lib/modules" ]; then base=$kdir/usr; else base=$kdir; fi
        kv=$(ls "$base/lib/modules")
        PATH=$PATH:/sbin:/usr/sbin depmod -b "$base" "$kv" || die "depmod -b $base $kv failed"
        touch "$kdir/.done"
    fi
    k_vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -n1)
    [ -n "$k_vmlinuz" ] || die "no boot/vmlinuz-* in $kdir"
    k_kver=${k_vmlinuz##*/vmlinuz-}
    k_mods=$kdir/lib/modules/$k_kver
    [ -d "$k_mods" ] || k_mods=$kdir/usr/lib/modules/$k_kver
    [ -f "$k_mods/modules.dep" ] || die "no modules.dep in $k_mods"
}

fetch_kernel bookworm apt_update
vmlinuz=$k_vmlinuz kver=$k_kver mods=$k_mods
kernels="$k_kver $k_vmlinuz $k_mods"$'\n'
fetch_kernel trixie tx_update "${tx_opts[@]}"
kernels+="$k_kver $k_vmlinuz $k_mods"$'\n'
# One line per kernel, 6.1 first: KVER VMLINUZ MODULES_DIR (absolute paths). run.sh -k KVER picks one.
printf '%s' "$kernels" >"$vm/kernels.tmp"
mv "$vm/kernels.tmp" "$vm/kernels"

{
    echo "VM_KERNEL=$vmlinuz"
    echo "VM_MODULES=$mods"
    echo "VM_KVER=$kver"
    echo "VM_KERNELS=$vm/kernels"
    echo "VM_BUSYBOX=$busybox"
    echo "VM_QEMU=$qemu"
} | tee "$vm/env"
