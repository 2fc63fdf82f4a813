#!/bin/sh
# resetlab hookscript shim (installed by `resetlab hook install VMID`; docs/proxmox.md).
#
# Proxmox runs a VM's hookscript as `<script> <vmid> <phase>` (pre-start, post-start, pre-stop,
# post-stop); resetlab does the work. Proxmox's PATH does not include /usr/local/bin, so look
# there too. PVE_MIGRATED_FROM and the rest of the environment pass through exec.
for bin in "$(command -v resetlab 2>/dev/null)" /usr/local/bin/resetlab /usr/bin/resetlab; do
    if [ -n "$bin" ] && [ -x "$bin" ]; then
        exec "$bin" hook "$1" "$2"
    fi
done
msg="resetlab: VM $1 $2: resetlab not found in PATH or /usr/local/bin; nothing done"
echo "$msg" >&2
# Beside the kernel's lines, where the hook's own lines would have been.
[ -w /dev/kmsg ] && echo "<3>$msg" >/dev/kmsg
# Only a failing pre-start stops a VM start; a missing binary should not.
exit 0
