#!/bin/sh
# resetlab hookscript shim, revision 2 (installed by `resetlab hook install VMID`; docs/install.md).
#
# Proxmox runs a VM's hookscript as `<script> <vmid> <phase>` (pre-start, post-start, pre-stop,
# post-stop) with PATH=/sbin:/bin:/usr/sbin:/usr/bin; resetlab does the work, and then runs the
# VM's previous hookscript if `hook install VMID --chain` recorded one. The package installs
# /usr/sbin/resetlab; a binary copied by hand to /usr/local/sbin or /usr/local/bin is found too.
# RESETLAB=PATH names the binary to use instead. The environment (PVE_MIGRATED_FROM, ...) passes
# through exec.
if [ -n "${RESETLAB:-}" ]; then
    candidates=$RESETLAB
else
    candidates="/usr/sbin/resetlab /usr/local/sbin/resetlab /usr/local/bin/resetlab"
fi
for bin in $candidates; do
    if [ -x "$bin" ]; then
        exec "$bin" hook "$1" "$2"
    fi
done
# Never silently off: without resetlab nothing handles the VM's GPU, so say so where Proxmox
# shows it (the task log gets stderr) and in the kernel log, at error level.
msg="resetlab: VM $1 $2: resetlab not found at $(echo $candidates | sed 's/ /, /g'); install it or remove the hookscript"
echo "$msg" >&2
kmsg=${RESETLAB_KMSG:-/dev/kmsg}
if [ -w "$kmsg" ]; then echo "<3>$msg" >>"$kmsg"; fi
# Only a failing pre-start stops a start (qemu-server); the other phases cannot stop anything.
if [ "$2" = pre-start ]; then exit 1; fi
exit 0
