# Smoke: the guest can report, and the helper gives errnos.
. /lib/vm/lib.sh
emit hello '"world"'
emit names "$(jstr "$(cat /run/vm/names)")"
for d in /sys/bus/pci/devices/*; do echo "${d##*/} $(cat $d/vendor) $(cat $d/device) rm=$(cat $d/reset_method 2>/dev/null) drv=$(driver_of ${d##*/}) grp=$(group_of ${d##*/})"; done
