# `resetlab snapshot` in the guest, sent to the host; tests/guest.rs replays it there with
# `resetlab --sysfs snap.tar list --json` and compares with the guest's own `list --json`.
. /lib/vm/lib.sh

run list resetlab --sysfs /sys list --json
if run snapshot resetlab --sysfs /sys snapshot /tmp/snap.tar; then
    blob snapshot /tmp/snap.tar
    run replay_list resetlab --sysfs /tmp/snap.tar list --json
fi
exit 0
