# Breaks the guest on purpose: a sysrq crash, to prove the harness ends a broken guest at once and names
# the scenario (tests/guest.rs oops_*). Not in run.sh's default set (fault_*); run it alone:
#   tools/vm/run.sh fault_oops      -> exit 4, the panic quoted on stderr
. /lib/vm/lib.sh

emit about_to_crash true
echo "fault_oops: echo c >/proc/sysrq-trigger"
echo c >/proc/sysrq-trigger
# Not reached: the kernel panics (oops=panic panic=-1) and QEMU (-no-reboot) exits.
sleep 60
exit 0
