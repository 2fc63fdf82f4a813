# vfio-pci runtime-suspends an idle bound device (rng1 sits in D3hot), yet the kernel's `reset` works on
# it: reset_store() (drivers/pci/pci-sysfs.c) takes pm_runtime_get_sync() around pci_reset_function(),
# so the device is woken to D0 first. Proven here for the `pm` method alone.
. /lib/vm/lib.sh

d=$(bdf rng1) || exit 1
sys=/sys/bus/pci/devices/$d
emit driver "$(jnull "$(driver_of "$d")")"
emit power_state.before "$(attr "$d" power_state)"
emit runtime_status.before "$(attr "$d" power/runtime_status)"
emit reset_method.before "$(attr "$d" reset_method)"
emit set_pm "$(sysfs_write "$sys/reset_method" pm)"
emit reset "$(sysfs_write "$sys/reset" 1)"
emit power_state.after "$(attr "$d" power_state)"
emit set_default "$(sysfs_write "$sys/reset_method" default)"
emit reset_method.after "$(attr "$d" reset_method)"
exit 0
