#!/bin/bash
# Boot the bench guest once and run scenarios in it (docs/testing.md, tier 3).
#
#   tools/vm/run.sh [-v|-i] [-k KVER] [SCENARIO...]   default: every tools/vm/scenarios/*.sh, in name order,
#                                                      except fault_*.sh (they break the guest on purpose)
#     -k  boot kernel KVER (a first field of target/vm/kernels, or a unique prefix of one: -k 6.12);
#         default $VM_KVER, else the first kernel (bookworm's 6.1)
#     -v  stream the guest console while it runs
#     --build  only set up and build the static binaries, then exit (tools/test.sh's build tier)
#     -i  interactive: the console is this terminal, and after the scenarios the guest gives a shell
#         (`exit` powers it off)
#
# Steps: tools/vm/setup.sh (installs, kernel; idempotent) -> static resetlab + guest_helper (cargo, release,
# crt-static; checked to be static) -> initramfs (busybox, modules with their modules.dep dependencies,
# tools/vm/guest/, scenarios, the device names of tools/vm/topology) -> qemu-system-x86_64 -machine q35
# with the topology's devices, bounded by VM_TIMEOUT.
#
# Output in $VM_OUT (default target/vm/run): console.log (ttyS0: kernel + scenario output),
# results.log (ttyS1: @@RESULT/@@BLOB/@@BEGIN/@@END/@@EXIT lines), NAME.shm (ivshmem backing files),
# qemu.args, boot-seconds, kernel (the guest's `uname -r`), begun-times (each scenario's start, seconds
# after QEMU's, as the watcher saw it), oops and oops-seconds (when it oopsed: seconds from QEMU's start to
# the watcher seeing the oops, to QEMU's end, and to the running scenario's start; `?` when not seen).
#
# The guest boots with `oops=panic panic=-1` and QEMU with -no-reboot: an oops panics the kernel, and the
# panic ends QEMU at once. A watcher also ends QEMU OOPS_GRACE_S (5) seconds after the console shows an
# oops or a panic, should the kernel not get that far. Then `oops` (in $VM_OUT) holds the console from the
# first oops line on, and stderr names the scenario that was running (the last `@@BEGIN` without `@@END`).
#
# Exit status: 0 when the guest reached `@@EXIT 0`; 1 when it reported failures; 2 bad usage or setup;
# 3 when it never reported an exit (crash without an oops on the console); 4 when the guest kernel oopsed
# or panicked; 124 on timeout.
#
# Environment: VM_OUT, VM_TIMEOUT (s, default 300), VM_ACCEL (tcg | kvm | auto; default tcg: KVM starts
# but hangs on the machines this was built on; auto probes KVM with a bounded boot and falls back),
# VM_BIN_DIR (use the static resetlab and guest_helper found there instead of building), VM_MEM (MiB).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
vm=$repo/target/vm
out=${VM_OUT:-$vm/run}
timeout_s=${VM_TIMEOUT:-300}
accel=${VM_ACCEL:-tcg}
verbose=0
interactive=0
build_only=0
want_kver=${VM_KVER:-}

die() { echo "run.sh: error: $*" >&2; exit 2; }
log() { echo "run.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
    -v) verbose=1; shift ;;
    -i) interactive=1; shift ;;
    --build) build_only=1; shift ;;
    -k) [ $# -ge 2 ] || die "-k needs a kernel version"; want_kver=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    for f in "$here"/scenarios/*.sh; do
        s=$(basename "$f" .sh)
        case $s in fault_*) ;; *) scenarios+=("$s") ;; esac
    done
fi
for s in "${scenarios[@]}"; do
    [ -f "$here/scenarios/$s.sh" ] || die "no scenario $s (tools/vm/scenarios/$s.sh)"
done

# --- 1. host tools and kernel -------------------------------------------------------------------------
eval "$("$here/setup.sh")"
if [ -n "$want_kver" ]; then
    # Exact match first, then a unique prefix.
    line=$(awk -v k="$want_kver" '$1 == k' "$VM_KERNELS")
    [ -n "$line" ] || line=$(awk -v k="$want_kver" 'index($1, k) == 1' "$VM_KERNELS")
    [ "$(printf '%s\n' "$line" | grep -c .)" = 1 ] \
        || die "kernel $want_kver: want exactly one of $(cut -d' ' -f1 "$VM_KERNELS" | tr '\n' ' ')(target/vm/kernels)"
    read -r VM_KVER VM_KERNEL VM_MODULES <<<"$line"
fi
log "kernel $VM_KVER ($VM_KERNEL)"

# --- 2. static binaries ---------------------------------------------------------------------------------
triple=x86_64-unknown-linux-gnu
if [ -n "${VM_BIN_DIR:-}" ]; then
    bindir=$VM_BIN_DIR
else
    log "building static resetlab and guest_helper (release, $triple)"
    # --target keeps build scripts and proc macros dynamic; crt-static applies to the target only.
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
        "${CARGO:-cargo}" build --quiet --release --target "$triple" --bin resetlab --example guest_helper) \
        || die "cargo build of the static binaries failed"
    bindir=${CARGO_TARGET_DIR:-$repo/target}/$triple/release
fi
resetlab=$bindir/resetlab
helper=$bindir/guest_helper
[ -x "$helper" ] || helper=$bindir/examples/guest_helper
for b in "$resetlab" "$helper"; do
    [ -x "$b" ] || die "missing $b"
    # A dynamic binary would fail in the initramfs with a bare "not found"; say it here instead.
    # Static (and static-pie) ELF files have no PT_INTERP.
    ! readelf -lW "$b" | grep -q 'program interpreter' || die "$b is dynamically linked, not static"
done

if [ "$build_only" = 1 ]; then
    log "static binaries in $bindir"
    exit 0
fi

# --- 3. topology -> QEMU arguments and the guest's device list ------------------------------------------
rm -rf "$out"
mkdir -p "$out"
machine=q35
append=""
modules=()
qargs=()
declare -A path=()
devices=""
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r -a f <<<"$line" || true
    [ ${#f[@]} -gt 0 ] || continue
    where="tools/vm/topology:$lineno"
    case ${f[0]} in
    %machine) machine=${f[1]:?$where: %machine needs options} ;;
    %append) append="$append ${f[*]:1}" ;;
    %module) modules+=("${f[@]:1}") ;;
    %*) die "$where: unknown directive ${f[0]}" ;;
    *)
        [ ${#f[@]} -ge 4 ] || die "$where: want NAME TYPE BUS ADDR [OPTS] [+FLAG...], got: $line"
        name=${f[0]} type=${f[1]} bus=${f[2]} addr=${f[3]} opts=- flags=""
        for x in "${f[@]:4}"; do
            case $x in
            +vfio) flags="$flags $x" ;;
            +*) die "$where: unknown flag $x" ;;
            *) [ "$opts" = - ] || die "$where: OPTS given twice"; opts=$x ;;
            esac
        done
        [[ $name =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "$where: bad name $name"
        [ -z "${path[$name]:-}" ] || die "$where: $name defined twice"
        dev="$type,id=$name"
        if [ "$bus" != - ]; then
            [[ $addr =~ ^([0-9a-fA-F]{1,2})\.([0-7])$ ]] || die "$where: ADDR must be SLOT.FN in hex, got $addr"
            slotfn=$(printf '%02x.%x' "0x${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
            if [ "$bus" = pcie.0 ]; then
                path[$name]="/sys/devices/pci0000:00/0000:00:$slotfn"
            else
                [ -n "${path[$bus]:-}" ] || die "$where: bus $bus is not defined above"
                path[$name]="${path[$bus]}/0000:??:$slotfn"
            fi
            dev="$dev,bus=$bus,addr=$slotfn"
        else
            path[$name]=-
        fi
        case $type in
        nvme)
            qargs+=(-blockdev "driver=null-co,node-name=$name-disk,size=1048576,read-zeroes=on")
            dev="$dev,drive=$name-disk" ;;
        ivshmem-plain)
            truncate -s 0 "$out/$name.shm"
            truncate -s 1M "$out/$name.shm"
            qargs+=(-object "memory-backend-file,id=$name-mem,share=on,mem-path=$out/$name.shm,size=1M")
            dev="$dev,memdev=$name-mem" ;;
        esac
        [ "$opts" = - ] || dev="$dev,$opts"
        qargs+=(-device "$dev")
        [ "${path[$name]}" = - ] || devices+="$name $type ${path[$name]}$flags"$'\n'
        ;;
    esac
done <"$here/topology"

# --- 4. initramfs -----------------------------------------------------------------------------------------
root=$out/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc/vm,lib/vm,scenarios,lib/modules}
cp "$VM_BUSYBOX" "$root/bin/busybox"
objcopy --strip-debug "$resetlab" "$root/bin/resetlab"
objcopy --strip-debug "$helper" "$root/bin/guest-helper"
install -m 755 "$here/guest/init" "$root/init"
cp "$here/guest/lib.sh" "$root/lib/vm/lib.sh"
for s in "${scenarios[@]}"; do cp "$here/scenarios/$s.sh" "$root/scenarios/"; done
# The example experiments, for scenarios that run them (/lib/vm/experiments/*.rlx).
mkdir -p "$root/lib/vm/experiments"
cp "$repo/tools/experiments/"*.rlx "$root/lib/vm/experiments/"
printf '%s\n' "${scenarios[@]}" >"$root/etc/vm/scenarios"
printf '%s' "$devices" >"$root/etc/vm/devices"

# Modules in load order: every dependency (modules.dep lists the full closure) before its user.
declare -A loaded=()
order=()
dep_of() { awk -v m="$1" -F': *' '$1 == m { print $2; found = 1 } END { exit !found }' "$VM_MODULES/modules.dep"; }
load() {
    local ko=$1 d deps
    [ -z "${loaded[$ko]:-}" ] || return 0
    loaded[$ko]=1
    deps=$(dep_of "$ko") || die "$ko is not in modules.dep"
    for d in $deps; do load "$d"; done
    order+=("$ko")
}
for m in "${modules[@]}"; do
    # Module names treat - and _ alike; builtin ones need nothing.
    pat=${m//[-_]/[-_]}
    ko=$(grep -Eo "^[^:]*/$pat\.ko(\.xz|\.zst|\.gz)?:" "$VM_MODULES/modules.dep" | head -n1 | tr -d :) || true
    if [ -z "$ko" ]; then
        grep -Eq "/$pat\.ko$" "$VM_MODULES/modules.builtin" && continue
        die "module $m: neither in modules.dep nor builtin ($VM_MODULES)"
    fi
    load "$ko"
done
: >"$root/etc/vm/modules"
for ko in "${order[@]}"; do
    mkdir -p "$root/lib/modules/$(dirname "$ko")"
    case $ko in # busybox insmod takes plain .ko: decompress here
    *.xz) xz -dc "$VM_MODULES/$ko" >"$root/lib/modules/${ko%.xz}"; ko=${ko%.xz} ;;
    *.zst) zstd -qdc "$VM_MODULES/$ko" >"$root/lib/modules/${ko%.zst}"; ko=${ko%.zst} ;;
    *.gz) gzip -dc "$VM_MODULES/$ko" >"$root/lib/modules/${ko%.gz}"; ko=${ko%.gz} ;;
    *) cp "$VM_MODULES/$ko" "$root/lib/modules/$ko" ;;
    esac
    echo "$ko" >>"$root/etc/vm/modules"
done
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out/initramfs.cpio"

# --- 5. boot ------------------------------------------------------------------------------------------------
boot() { # boot ACCEL TIMEOUT -> QEMU's exit status (124 on timeout)
    local a=$1 t=$2
    local con=(-chardev "file,id=con,path=$out/console.log") fg=() shell=""
    if [ "$interactive" = 1 ]; then
        con=(-chardev "stdio,id=con,signal=off,logfile=$out/console.log")
        fg=(--foreground) shell=" vm.shell"
    fi
    local args=(
        -machine "$machine" -accel "$a" -cpu max -m "${VM_MEM:-512}" -smp 1
        -nodefaults -no-reboot -display none -monitor none
        "${con[@]}" -serial chardev:con
        -chardev "file,id=res,path=$out/results.log" -serial chardev:res
        -kernel "$VM_KERNEL" -initrd "$out/initramfs.cpio"
        -append "console=ttyS0 oops=panic panic=-1 rdinit=/init$append$shell"
        "${qargs[@]}"
    )
    printf '%q ' "$VM_QEMU" "${args[@]}" >"$out/qemu.args"
    : >"$out/console.log"
    : >"$out/results.log"
    local tailpid=""
    if [ "$verbose" = 1 ] && [ "$interactive" = 0 ]; then tail -n +1 -f "$out/console.log" & tailpid=$!; fi
    local rc=0
    if [ "$interactive" = 1 ]; then
        # The terminal is the console: whoever types watches it.
        timeout "${fg[@]}" -k 5 "$t" "$VM_QEMU" "${args[@]}" 2>"$out/qemu.out" || rc=$?
    else
        # exec: the background job is `timeout` itself, which passes the watcher's SIGTERM on to QEMU.
        (exec timeout -k 5 "$t" "$VM_QEMU" "${args[@]}" </dev/null >"$out/qemu.out" 2>&1) &
        local qpid=$!
        watch_oops "$qpid" &
        local watcher=$!
        wait "$qpid" || rc=$?
        kill "$watcher" 2>/dev/null || true
        wait "$watcher" 2>/dev/null || true
    fi
    [ -z "$tailpid" ] || kill "$tailpid" 2>/dev/null || true
    return $rc
}

# The first console line of a kernel oops or panic (a WARNING alone does not stop the guest).
oops_re='(BUG: |Oops: |kernel BUG at |general protection fault|Kernel panic - not syncing)'

# watch_oops PID: poll the result port and the console. Note when each scenario begins (begun-times:
# "SCENARIO SECONDS" since QEMU's start); once the console shows an oops, note when (oops-seen) and end
# QEMU (the `timeout` process PID) if it is still running OOPS_GRACE_S later.
watch_oops() {
    local pid=$1 grace=${OOPS_GRACE_S:-5} t0 now begins=0 n
    t0=$(date +%s.%N)
    since() { echo "$t0 $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }'; }
    while kill -0 "$pid" 2>/dev/null; do
        n=$(grep -ac '^@@BEGIN' "$out/results.log" 2>/dev/null) || n=0
        if [ "$n" -gt "$begins" ]; then
            now=$(since)
            grep -a '^@@BEGIN' "$out/results.log" | tr -d '\r' | sed -n "$((begins + 1)),${n}p" \
                | while read -r _ s; do echo "$s $now"; done >>"$out/begun-times"
            begins=$n
        fi
        if grep -Eaq "$oops_re" "$out/console.log" 2>/dev/null; then
            since >"$out/oops-seen"
            local waited=0
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((grace * 10)) ]; do
                sleep 0.1
                waited=$((waited + 1))
            done
            kill -TERM "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.2
    done
}

if [ "$accel" = auto ]; then
    accel=tcg
    if [ -w /dev/kvm ]; then
        log "probing KVM with a bounded boot"
        if boot kvm 20 && grep -q '^@@EXIT' "$out/results.log"; then accel=kvm; else log "KVM did not boot in 20 s: using TCG"; fi
    fi
fi
log "booting ($accel, ${#scenarios[@]} scenario(s), bound ${timeout_s}s)"
start=$(date +%s.%N)
rc=0
boot "$accel" "$timeout_s" || rc=$?
end=$(date +%s.%N)
secs=$(echo "$start $end" | awk '{ printf "%.1f", $2 - $1 }')
echo "$secs" >"$out/boot-seconds"

# What the guest said about itself: its kernel (init's first result) and the scenario it was in.
gkver=$(sed -n 's/^@@RESULT {"scenario":"init","key":"kernel","value":"\([^"]*\)"}.*/\1/p' "$out/results.log" | head -n1)
echo "${gkver:-unknown}" >"$out/kernel"
log "guest kernel: ${gkver:-unknown (it reported none)}"
# The last scenario begun and not ended ("init" before the first one).
current=$(awk '$1 == "@@BEGIN" { s = $2 } $1 == "@@END" && $2 == s { s = "" } END { print s }' \
    "$out/results.log" | tr -d '\r')
if [ -z "$current" ] && ! grep -aq '^@@BEGIN' "$out/results.log"; then current=init; fi

if grep -Eaq "$oops_re" "$out/console.log"; then
    # From the first oops line on (the harness quotes the first 30 lines).
    grep -Ea -A 400 -m 1 "$oops_re" "$out/console.log" | tr -d '\r' >"$out/oops"
    seen=$(cat "$out/oops-seen" 2>/dev/null || echo "?")
    began=$(awk -v s="$current" '$1 == s { t = $2 } END { print (t == "" ? "?" : t) }' "$out/begun-times" 2>/dev/null || echo "?")
    echo "$seen $secs $began" >"$out/oops-seconds"
    log "guest kernel oopsed during scenario ${current:-(none: after the last one)} (begun ${began}s after QEMU's start; oops seen at ${seen}s); QEMU ended at ${secs}s (console: $out/console.log, oops: $out/oops)"
    head -n 30 "$out/oops" | sed 's/^/run.sh:   /' >&2
    exit 4
fi
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    log "guest timed out after ${timeout_s}s during scenario ${current:-(none)} (console: $out/console.log)"
    exit 124
fi
exit_line=$(grep -a '^@@EXIT' "$out/results.log" | tr -d '\r' | tail -n1) || true
if [ -z "$exit_line" ]; then
    log "guest ended (qemu status $rc, ${secs}s) during scenario ${current:-(none)} without reporting an exit (console: $out/console.log)"
    cat "$out/qemu.out" >&2
    exit 3
fi
status=${exit_line#@@EXIT }
log "guest exit status $status after ${secs}s (results: $out/results.log)"
[ "$status" = 0 ] || exit 1
