#!/bin/bash
# Idempotent setup of the QEMU guest bench (docs/testing.md, tier 3).
#
# Installs qemu-system-x86, busybox-static and cpio from Debian when a tool is missing, and fetches a
# Debian kernel image into target/vm/kernel/ (apt-get download + dpkg -x: it is unpacked, never installed
# as this machine's kernel). `apt-get update` runs only when apt does not know a package or a download
# fails. A second run finds everything in place and downloads nothing.
#
# On success prints KEY=VALUE lines (VM_KERNEL, VM_MODULES, VM_KVER, VM_BUSYBOX, VM_QEMU) that
# tools/vm/run.sh sources; they are also written to target/vm/env.
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
# busybox-static ships /bin/busybox statically linked; a dynamic busybox cannot run in the initramfs.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing after installing busybox-static"
if readelf -lW "$busybox" | grep -q 'program interpreter'; then die "$busybox is not static"; fi
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing after install"

# --- kernel image -----------------------------------------------------------------------------------
# The current image package is the dependency of the linux-image-amd64 metapackage
# (e.g. linux-image-6.1.0-41-amd64). Unknown to apt -> update once and ask again.
resolve_kernel() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(resolve_kernel || true)
if [ -z "$kpkg" ]; then apt_update; kpkg=$(resolve_kernel || true); fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64's kernel package (apt-cache depends linux-image-amd64)"

kdir=$vm/kernel/$kpkg
if [ ! -e "$kdir/.done" ]; then
    log "fetching $kpkg"
    rm -rf "$kdir" "$vm/deb"
    mkdir -p "$vm/deb" "$kdir"
    # apt-get download writes into the current directory; _apt cannot write here, hence the warning off.
    if ! (cd "$vm/deb" && apt-get download -q "$kpkg" >&2 2>/dev/null); then
        apt_update
        (cd "$vm/deb" && apt-get download -q "$kpkg" >&2) || die "apt-get download $kpkg failed"
    fi
    deb=$(ls "$vm"/deb/"$kpkg"_*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || die "apt-get download left no $kpkg .deb in $vm/deb"
    dpkg -x "$deb" "$kdir"
    rm -f "$deb"
    kv=$(ls "$kdir/lib/modules")
    PATH=$PATH:/sbin:/usr/sbin depmod -b "$kdir" "$kv" || die "depmod -b $kdir $kv failed"
    touch "$kdir/.done"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $kdir"
kver=${vmlinuz##*/vmlinuz-}
mods=$kdir/lib/modules/$kver
[ -f "$mods/modules.dep" ] || die "no modules.dep in $mods"

{
    echo "VM_KERNEL=$vmlinuz"
    echo "VM_MODULES=$mods"
    echo "VM_KVER=$kver"
    echo "VM_BUSYBOX=$busybox"
    echo "VM_QEMU=$qemu"
} | tee "$vm/env"
