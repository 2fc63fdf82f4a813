# The guest kernel's own view of every PCI device, next to `resetlab list --json` over the same /sys.
# tests/guest.rs compares them: reset_method vs kernel_reset_methods, iommu_group, driver, ids.
. /lib/vm/lib.sh

hex() { v=$(cat "$1"); echo "${v#0x}"; }
devs=""
for d in /sys/bus/pci/devices/*; do
    b=${d##*/}
    if [ -e "$d/reset_method" ]; then
        rm=""
        for m in $(cat "$d/reset_method"); do rm="$rm${rm:+,}$(jstr "$m")"; done
        rm="[$rm]"
    else
        rm=null
    fi
    g=$(group_of "$b")
    dev="{\"bdf\":$(jstr "$b"),\"vendor\":$(jstr "$(hex "$d/vendor")"),\"device\":$(jstr "$(hex "$d/device")")"
    dev="$dev,\"class\":$(jstr "$(hex "$d/class")"),\"driver\":$(jnull "$(driver_of "$b")")"
    dev="$dev,\"iommu_group\":${g:-null},\"reset_method\":$rm,\"power_state\":$(attr "$b" power_state)}"
    devs="$devs${devs:+,}$dev"
done
emit kernel_view "[$devs]"

run list resetlab --sysfs /sys list --json
exit 0
