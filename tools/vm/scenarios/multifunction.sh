# The multi-function slot (mf0 = pci-testdev fn0, mf1 = e1000e fn1), like the 780M's bus c5: the kernel
# probes reset methods at enumeration, before fn1 joins the bus, so fn0 gets `bus`, which then fails
# with ENOTTY (pci_parent_bus_reset refuses a bus with other devices). Raw kernel facts, with errnos,
# before and after remove + rescan; plus `resetlab list --json` for its verdict.
. /lib/vm/lib.sh

f0=$(bdf mf0) && f1=$(bdf mf1) && port=$(bdf rp4) || exit 1
sys=/sys/bus/pci/devices

facts() { # PREFIX
    emit "$1.fn0.reset_method" "$(attr "$f0" reset_method)"
    emit "$1.fn1.reset_method" "$(attr "$f1" reset_method)"
    emit "$1.fn0.reset" "$(sysfs_write "$sys/$f0/reset" 1)"
    emit "$1.fn1.reset" "$(sysfs_write "$sys/$f1/reset" 1)"
    # Asking for `bus` explicitly: re-probed now that fn1 exists, so refused.
    emit "$1.fn0.write_bus" "$(sysfs_write "$sys/$f0/reset_method" bus)"
    emit "$1.fn0.reset_method_after_write" "$(attr "$f0" reset_method)"
}

facts before
run list resetlab --sysfs /sys list --json

# Remove the whole slot and rescan below the root port: enumeration (and so the outcome) repeats.
bus=$(ls "$sys/$port/pci_bus")
emit remove.fn1 "$(sysfs_write "$sys/$f1/remove" 1)"
emit remove.fn0 "$(sysfs_write "$sys/$f0/remove" 1)"
emit removed "$(if [ -e "$sys/$f0" ] || [ -e "$sys/$f1" ]; then echo false; else echo true; fi)"
dmesg -c >/dev/null
emit rescan "$(sysfs_write "$sys/$port/pci_bus/$bus/rescan" 1)"
# The order the kernel enumerated the functions in ("pci 0000:04:00.0: [1b36:0005] type 00 ...").
order=$(dmesg | sed -n 's/.*pci \([0-9a-f:.]*\): \[[0-9a-f]*:[0-9a-f]*\] type.*/\1/p' | tr '\n' ' ')
emit rescan.order "$(jstr "${order% }")"
facts after
exit 0
