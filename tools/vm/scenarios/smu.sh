# The SMU mailbox client and the smu_mode2 method through the guest kernel's real mmap of a BAR: shm0 is
# ivshmem-plain, its BAR 2 the host file $VM_OUT/shm0.shm, which tests/guest.rs serves with the twin's
# SMU model (src/sim/smu.rs) laid out as phoenix's register BAR (`--asic phoenix --bar 2`). shm0 has no
# driver, so resetlab's guards let it through without --force.
. /lib/vm/lib.sh

d=$(bdf shm0) || exit 1
cfg=/sys/bus/pci/devices/$d/config
command() { od -An -tx2 -j4 -N2 "$cfg" | tr -d ' \n'; }
emit driver "$(jnull "$(driver_of "$d")")"
emit command.before "$(jstr "$(command)")"
run smu_test resetlab --json smu "$d" test --asic phoenix --bar 2 --commit --timeout 10000
run smu_version resetlab --json smu "$d" version --asic phoenix --bar 2 --timeout 10000
run smu_send_dry resetlab --json smu "$d" send GfxDeviceDriverReset 2 --asic phoenix --bar 2
run reset resetlab --json reset "$d" --method smu_mode2 --asic phoenix --bar 2
emit command.after "$(jstr "$(command)")"
exit 0
