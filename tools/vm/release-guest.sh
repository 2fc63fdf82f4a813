#!/bin/bash
# The tiny initramfs of the real-QEMU release test (tests/guest_release.rs; docs/cli.md, "release").
#
#   tools/vm/release-guest.sh MODULES_DIR OUT.cpio [MODULE...]     default modules: e1000e
#
# busybox (static), the modules named with their modules.dep dependencies (decompressed: busybox insmod
# takes plain .ko), and an init that loads them, prints `@@UP <pci functions>` on the console, then
# idles and reports on the kernel's own clock (through /dev/kmsg, so its lines carry the same printk
# timestamps as the kernel's) every PCI function that disappears, `release-guest: gone <bdf>`, and
# every one that appears with a driver bound, `release-guest: added <bdf>`. It answers nothing
# else: the host drives the test through QMP alone.
set -euo pipefail

die() { echo "release-guest.sh: error: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: $0 MODULES_DIR OUT.cpio [MODULE...]"
mods=$1 out=$2
shift 2
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(e1000e)
[ -f "$mods/modules.dep" ] || die "no modules.dep in $mods"
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing (tools/vm/setup.sh installs busybox-static)"
! readelf -lW "$busybox" | grep -q 'program interpreter' || die "$busybox is not static"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,lib/modules}
cp "$busybox" "$root/bin/busybox"

# Modules in load order: modules.dep lists each module's full dependency closure.
declare -A seen=()
order=()
add() {
    local ko=$1 d deps
    [ -z "${seen[$ko]:-}" ] || return 0
    seen[$ko]=1
    deps=$(awk -v m="$ko" -F': *' '$1 == m { print $2; f = 1 } END { exit !f }' "$mods/modules.dep") \
        || die "$ko is not in modules.dep"
    for d in $deps; do add "$d"; done
    order+=("$ko")
}
for m in "${want[@]}"; do
    pat=${m//[-_]/[-_]}
    ko=$(grep -Eo "^[^:]*/$pat\.ko(\.xz|\.zst|\.gz)?:" "$mods/modules.dep" | head -n1 | tr -d :) || true
    if [ -z "$ko" ]; then
        grep -Eq "/$pat\.ko$" "$mods/modules.builtin" 2>/dev/null && continue
        die "module $m: neither in modules.dep nor builtin ($mods)"
    fi
    add "$ko"
done
: >"$root/etc/modules"
for ko in "${order[@]}"; do
    base=$(basename "$ko")
    case $ko in
    *.xz) xz -dc "$mods/$ko" >"$root/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.zst) zstd -qdc "$mods/$ko" >"$root/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *.gz) gzip -dc "$mods/$ko" >"$root/lib/modules/${base%.gz}"; base=${base%.gz} ;;
    *) cp "$mods/$ko" "$root/lib/modules/$base" ;;
    esac
    echo "$base" >>"$root/etc/modules"
done

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m" || echo "release-guest: insmod $m failed"
done
say() { echo "release-guest: $*" >/dev/kmsg; }
list=$(ls /sys/bus/pci/devices | tr '\n' ' ')
echo "@@UP $list"
say "up: $list"
# A sleep without a fork per round: read from a FIFO nobody writes, with a timeout.
mkfifo /tmp/tick
exec 3<>/tmp/tick
while :; do
    left="" changed=0
    for d in $list; do
        if [ -e "/sys/bus/pci/devices/$d" ]; then left="$left $d"; else say "gone $d"; changed=1; fi
    done
    # A function plugged in (device_add) counts once its driver is bound.
    for p in /sys/bus/pci/devices/*; do
        d=${p##*/}
        case " $left " in *" $d "*) continue ;; esac
        [ -e "$p/driver" ] || continue
        left="$left $d" changed=1
        say "added $d"
    done
    list=$left
    [ $changed = 0 ] || echo "@@LEFT$list"
    read -t 0.005 -u 3 _ || true
done
EOF
chmod 755 "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out"
