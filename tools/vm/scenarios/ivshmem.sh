# A guest register access through the kernel's real resource2 mmap, answered by a host process:
# shm0 is ivshmem-plain, its BAR 2 the host file $VM_OUT/shm0.shm. The guest writes a request at 0x80000;
# the host (tests/guest.rs) writes the answer (the request's bitwise NOT) at 0x80004; the guest polls it.
# Past the first 512 KiB: the smu scenario's model lays phoenix's register BAR over those, and its
# MM_INDEX/MM_DATA (0x0/0x4) would answer in the responder's place.
. /lib/vm/lib.sh

d=$(bdf shm0) || exit 1
r=/sys/bus/pci/devices/$d/resource2
emit resource2.size "$(stat -c %s "$r")"
# Memory BARs are mmap-only: read(2) on resourceN fails.
run resource2.read dd if="$r" of=/dev/null bs=4 count=1
# The device has no driver; enabling it turns memory decoding on (pci_enable_device).
emit enable "$(sysfs_write "/sys/bus/pci/devices/$d/enable" 1)"
req=$(( 0x52530000 | $(od -An -N2 -tu2 /dev/urandom) ))
emit request "$req"
emit write "$(guest-helper mmio-write "$r" 0x80000 "$req")"
emit answer "$(guest-helper mmio-poll "$r" 0x80004 20000)"
exit 0
