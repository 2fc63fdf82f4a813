# The Proxmox hook against the real kernel. A fake /etc/pve whose VM 100 passes the multi-function slot
# (mf0 + mf1 behind rp4, like the 780M's c5:00) as one whole-slot hostpci entry; the four phases in
# Proxmox's order, several times, with Proxmox's own part played here (after pre-start qemu-server binds
# every function to vfio-pci). Then a benchmark: each hook phase's wall time next to the bare kernel
# operation it makes. Facts only; tests/guest.rs asserts.
. /lib/vm/lib.sh

f0=$(bdf mf0) && f1=$(bdf mf1) && port=$(bdf rp4) || exit 1
sys=/sys/bus/pci/devices
slot=${f0%.*}
bus=$(ls "$sys/$port/pci_bus")
rescan=$sys/$port/pci_bus/$bus/rescan
dir=/tmp/hook
pve=$dir/pve
mkdir -p "$pve/qemu-server" "$dir/state"
printf 'bios: ovmf\nhostpci0: %s,pcie=1\nvga: none\n' "$slot" >"$pve/qemu-server/100.conf"
: >"$dir/default.toml"
printf '[phase.pre-stop]\nactions = ["remove"]\n' >"$dir/seed.toml"
# Benchmark policies: one kernel operation per phase.
printf '[phase.pre-stop]\nactions = ["remove"]\n[phase.post-stop]\nactions = ["ensure_present"]\n' >"$dir/bench-rescan.toml"
printf '[vm.100]\ndevices = ["%s"]\n[chain]\nother = ["kernel"]\n[phase.post-stop]\nactions = ["reset"]\n' "$f1" >"$dir/bench-reset.toml"
emit setup "{\"slot\":$(jstr "$slot"),\"fn0\":$(jstr "$f0"),\"fn1\":$(jstr "$f1"),\"rescan\":$(jstr "$rescan")}"

hook() { # KEY POLICY PHASE
    run "$1" resetlab --json hook 100 "$3" --pve-config "$pve" --policy "$dir/$2.toml" --state-dir "$dir/state"
}

# qemu-server's prepare_pci_device after pre-start: every function to vfio-pci.
proxmox_binds() {
    for f in $f0 $f1; do
        echo vfio-pci >"$sys/$f/driver_override"
        [ -e "$sys/$f/driver" ] && [ "$(driver_of "$f")" != vfio-pci ] && echo "$f" >"$sys/$f/driver/unbind"
        [ -e "$sys/$f/driver" ] || echo "$f" >/sys/bus/pci/drivers_probe
    done
}

cycle() { # N POLICY
    hook "c$1.pre-start" "$2" pre-start
    proxmox_binds
    hook "c$1.post-start" "$2" post-start
    hook "c$1.pre-stop" "$2" pre-stop
    hook "c$1.post-stop" "$2" post-stop
}

cycle 1 default
cycle 2 default
# The field report's recipe (remove in pre-stop, back in post-stop). Its host blacklists the GPU's
# host drivers (amdgpu, snd_hda_intel), so nothing but vfio-pci claims a function that a rescan
# brings back; here e1000e (mf1's host driver) is unloaded for that. drivers_autoprobe=0 would not
# do: a rescan attaches drivers itself (drivers/pci/bus.c pci_bus_add_device -> device_attach).
e1000e=$(grep '/e1000e\.ko' /etc/vm/modules) || exit 1
rmmod e1000e || exit 1
cycle 3 seed

# Benchmark, still without e1000e, so that only the kernel's own work is timed (no driver probe).
i=1
while [ $i -le 5 ]; do
    emit "bench.$i.bare.remove" "$(guest-helper time-cmd sh -c "echo 1 >$sys/$f0/remove && echo 1 >$sys/$f1/remove")"
    emit "bench.$i.bare.rescan" "$(guest-helper time-cmd sh -c "echo 1 >$rescan")"
    proxmox_binds
    emit "bench.$i.hook.remove" "$(guest-helper time-cmd resetlab hook 100 pre-stop --pve-config "$pve" --policy "$dir/bench-rescan.toml" --state-dir "$dir/state")"
    emit "bench.$i.hook.rescan" "$(guest-helper time-cmd resetlab hook 100 post-stop --pve-config "$pve" --policy "$dir/bench-rescan.toml" --state-dir "$dir/state")"
    proxmox_binds
    emit "bench.$i.bare.reset" "$(guest-helper time-cmd sh -c "echo 1 >$sys/$f1/reset")"
    emit "bench.$i.hook.reset" "$(guest-helper time-cmd resetlab hook 100 post-stop --pve-config "$pve" --policy "$dir/bench-reset.toml" --state-dir "$dir/state")"
    emit "bench.$i.hook.nothing" "$(guest-helper time-cmd resetlab hook 100 pre-stop --pve-config "$pve" --policy "$dir/default.toml" --state-dir "$dir/state")"
    emit "bench.$i.bare.nothing" "$(guest-helper time-cmd sh -c true)"
    emit "bench.$i.exec.version" "$(guest-helper time-cmd resetlab --version)"
    i=$((i + 1))
done
# The in-process view of one of each (kernel_ms per action).
hook bench.report.rescan-remove bench-rescan pre-stop
hook bench.report.rescan bench-rescan post-stop
proxmox_binds
hook bench.report.reset bench-reset post-stop
insmod "/lib/modules/$e1000e" || exit 1

# A last default cycle: the end state is what Proxmox leaves between runs.
cycle 4 default

for f in $f0 $f1; do
    emit "final.$f" "{\"present\":$([ -e "$sys/$f/vendor" ] && echo true || echo false),\"driver\":$(jnull "$(driver_of "$f")"),\"vendor\":$(attr "$f" vendor),\"power_state\":$(attr "$f" power_state)}"
done
run final.list resetlab --sysfs /sys list --json -s "${slot#*:}"
emit dmesg "$(jstr "$(dmesg | grep 'resetlab: VM 100')")"
exit 0
