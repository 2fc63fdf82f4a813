# The experiment runner through the guest kernel's real mmap: tools/experiments/e1000e-ctrl-rst.rlx
# sets CTRL.RST in BAR 0 of the multi-function slot's e1000e (mf1) and polls until the device clears
# it (the driver resets the NIC this way itself: e1000_reset_hw_82571 → ew32(CTRL, ctrl | E1000_CTRL_RST)).
#
# While e1000e is bound, the guards refuse (exit 3), and with --force the kernel refuses the mmap:
# Debian's kernel has CONFIG_IO_STRICT_DEVMEM, and the driver holds the region (EINVAL, explained).
# Unbound, the run goes through. The driver is bound back at the end (multifunction runs later).
. /lib/vm/lib.sh

d=$(bdf mf1) || exit 1
emit driver "$(jnull "$(driver_of "$d")")"
x=/lib/vm/experiments/e1000e-ctrl-rst.rlx
run dry resetlab --json run "$x" --dev "$d" --bar 0
run refused resetlab --json run "$x" --dev "$d" --bar 0 --commit
run strict_devmem resetlab run "$x" --dev "$d" --bar 0 --commit --force
echo "$d" >/sys/bus/pci/drivers/e1000e/unbind
emit unbound_driver "$(jnull "$(driver_of "$d")")"
run commit resetlab --json run "$x" --dev "$d" --bar 0 --commit --trace /tmp/e1000e.jsonl
run diff resetlab --json run diff /tmp/e1000e.jsonl before after
echo "$d" >/sys/bus/pci/drivers/e1000e/bind
emit rebound_driver "$(jnull "$(driver_of "$d")")"
exit 0
