# `resetlab reset` against the real kernel: each method on a device that has it, the refusals, the
# kernel's errnos explained, the per-device lock, --dry-run. Every step reports resetlab's JSON (`run`)
# and the kernel's own view of the device after it (`kview`); tests/guest.rs asserts on both.
. /lib/vm/lib.sh

nvme=$(bdf nvme0) && rng0=$(bdf rng0) && rng1=$(bdf rng1) && nic=$(bdf nic0) &&
    f0=$(bdf mf0) && f1=$(bdf mf1) && shm=$(bdf shm0) || exit 1
sys=/sys/bus/pci/devices

# rl KEY ARGS...: resetlab reset --json ARGS, then the kernel's view of the device (the first ARG).
rl() {
    key=$1
    shift
    emit "$key.before" "$(kview "$1")"
    run "$key" resetlab reset --json "$@"
    emit "$key.after" "$(kview "$1")"
}

# A device its live host driver uses is refused (exit 3), and nothing was written.
rl live "$nic" -m pm

# --dry-run changes nothing: config bytes identical, device still there, same driver.
cat "$sys/$rng0/config" >/tmp/dry.before
rl dry "$rng0" -m flr,pm,bus,remove_rescan --dry-run
cat "$sys/$rng0/config" >/tmp/dry.after
emit dry.config_same "$(if cmp -s /tmp/dry.before /tmp/dry.after; then echo true; else echo false; fi)"

# Devices parked for passthrough, as Proxmox does: nvme0 and nic0 to vfio-pci; mf0 back to vfio-pci
# (the multifunction scenario's rescan left it without a driver).
for d in "$nvme" "$nic" "$f0"; do
    bind "$d" vfio-pci || { echo "cannot bind $d to vfio-pci"; exit 1; }
done

rl flr.nvme "$nvme" -m flr
rl flr.virtio "$rng0" -m flr
rl kernel_flr.nvme "$nvme" -m kernel:flr
rl pm.e1000e "$nic" -m pm
rl bus.downstream "$rng0" -m bus
# Behind a root port: rp6 links at 5 GT/s, so no wait for LNKSTA.DLLLA (as in the kernel).
rl bus.root "$shm" -m bus
# rp1 links at 16 GT/s and sets LNKCAP.DLLLARC, but QEMU 7.2 never sets LNKSTA.DLLLA: the kernel
# gives up after 1 s with ENOTTY ("Data Link Layer Link Active not set"), and so does resetlab.
dmesg -c >/dev/null
rl bus.root_dllla "$nvme" -m bus
emit bus.root_dllla.dmesg "$(jstr "$(dmesg -c)")"
rl kernel_bus.root_dllla "$nvme" -m kernel:bus
emit kernel_bus.root_dllla.dmesg "$(jstr "$(dmesg -c)")"

# The multi-function slot: fn0's only kernel method is `bus`, which the kernel refuses with siblings.
rl mf.kernel "$f0" -m kernel
rl mf.kernel_forced "$f0" -m kernel --force
rl mf.kernel_bus_forced "$f0" -m kernel:bus --force
emit mf.reset_method_after "$(attr "$f0" reset_method)"

# D3cold needs ACPI _PR3 power resources: does QEMU's q35 DSDT give any?
emit d3cold.firmware_node "$(if [ -e "$sys/$rng1/firmware_node" ]; then jstr "$(readlink "$sys/$rng1/firmware_node")"; else echo null; fi)"
emit d3cold.pr3 "$(if [ -e "$sys/$rng1/firmware_node/power_resources_D3hot" ]; then echo true; else echo false; fi)"
emit d3cold.d3cold_allowed "$(attr "$rng1" d3cold_allowed)"
rl d3cold "$rng1" -m d3cold
rl d3cold.forced "$rng1" -m d3cold --force --wait-timeout 2000

# Two resets of one device at once: the per-device lock serialises them; their traces must not overlap.
rm -f /tmp/c1.trace /tmp/c2.trace
resetlab reset --json "$rng0" -m flr --trace /tmp/c1.trace >/tmp/c1.out 2>/tmp/c1.err &
p1=$!
resetlab reset --json "$rng0" -m flr --trace /tmp/c2.trace >/tmp/c2.out 2>/tmp/c2.err &
p2=$!
wait $p1
rc1=$?
wait $p2
rc2=$?
for i in 1 2; do
    eval rc=\$rc$i
    emit "concurrent.$i" "{\"rc\":$rc,\"stdout\":$(jstr "$(cat /tmp/c$i.out)"),\"stderr\":$(jstr "$(cat /tmp/c$i.err)"),\"trace\":[$(paste -sd, /tmp/c$i.trace)]}"
done
emit concurrent.after "$(kview "$rng0")"

# remove + rescan of the whole slot: refused while fn1 has a live driver, then forced.
rl rr.slot "$f0" -m remove_rescan --slot
emit rr.slot.before.fn1 "$(kview "$f1")"
rl rr.slot_forced "$f0" -m remove_rescan --slot --force
emit rr.slot_forced.after.fn1 "$(kview "$f1")"
exit 0
