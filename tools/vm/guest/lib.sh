# Helpers for guest scenarios (. /lib/vm/lib.sh). Results are JSON lines on fd 3 (the result port):
#   @@RESULT {"scenario":"<name>","key":"<key>","value":<json>}
#   @@BLOB <scenario> <key> <bytes> gzip   followed by base64 lines of the gzipped file, then @@ENDBLOB
# The host (tests/guest.rs) collects them by scenario and key.

# A JSON string literal of $1 (control characters other than tab/newline/CR dropped).
jstr() {
    printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037' | awk '
        BEGIN { ORS = ""; printf "\"" }
        { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
          if (NR > 1) printf "\\n"; printf "%s", $0 }
        END { printf "\"" }'
}

# $1 as a JSON string, or null when empty.
jnull() {
    if [ -n "$1" ]; then jstr "$1"; else printf null; fi
}

# emit KEY JSON: one result line.
emit() {
    printf '@@RESULT {"scenario":%s,"key":%s,"value":%s}\n' "$(jstr "$SCENARIO")" "$(jstr "$1")" "$2" >&3
}

# blob KEY FILE: a file sent to the host, gzipped (the serial port is the slow part) and in base64.
blob() {
    [ -f "$2" ] || { echo "blob $1: no file $2" >&2; return 1; }
    echo "@@BLOB $SCENARIO $1 $(wc -c <"$2") gzip" >&3
    gzip -c "$2" | base64 >&3
    echo "@@ENDBLOB" >&3
}

# run KEY CMD...: run a command, emit {"argv":[...],"rc":N,"stdout":"...","stderr":"..."}.
run() {
    key=$1
    shift
    argv=""
    for a in "$@"; do argv="$argv${argv:+,}$(jstr "$a")"; done
    "$@" >/tmp/run.out 2>/tmp/run.err
    rc=$?
    emit "$key" "{\"argv\":[$argv],\"rc\":$rc,\"stdout\":$(jstr "$(cat /tmp/run.out)"),\"stderr\":$(jstr "$(cat /tmp/run.err)")}"
    return $rc
}

# bdf NAME: the BDF of a device named in tools/vm/topology.
bdf() {
    awk -v n="$1" '$1 == n { print $2; found = 1 } END { exit !found }' /run/vm/names
}

# driver_of BDF: the bound driver's name, or nothing.
driver_of() {
    l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) && echo "${l##*/}"
}

# group_of BDF: the IOMMU group number, or nothing.
group_of() {
    l=$(readlink "/sys/bus/pci/devices/$1/iommu_group" 2>/dev/null) && echo "${l##*/}"
}

# attr BDF FILE: a sysfs attribute as a JSON string, or null when it does not exist.
attr() {
    f=/sys/bus/pci/devices/$1/$2
    if [ -e "$f" ]; then jstr "$(cat "$f" 2>&1)"; else printf null; fi
}

# sysfs_write PATH VALUE: write with the exact errno as JSON ({"ok":true} or
# {"ok":false,"errno":"ENOTTY","code":25,"message":"..."}), by the guest-helper binary.
sysfs_write() {
    guest-helper write "$1" "$2"
}

# bind BDF DRIVER: (re)bind a device to DRIVER as a Proxmox host does for vfio-pci (driver_override,
# unbind, drivers_probe); prints nothing, fails if it did not end up bound to DRIVER.
bind() {
    local dir=/sys/bus/pci/devices/$1
    echo "$2" >"$dir/driver_override"
    [ -e "$dir/driver" ] && [ "$(driver_of "$1")" != "$2" ] && echo "$1" >"$dir/driver/unbind"
    [ -e "$dir/driver" ] || echo "$1" >/sys/bus/pci/drivers_probe
    [ "$(driver_of "$1")" = "$2" ]
}

# kview BDF: the kernel's view of a device as JSON: present, driver, power_state, runtime_status,
# the `resource` file (BAR addresses) and the first 64 bytes of config as hex.
kview() {
    local dir=/sys/bus/pci/devices/$1
    if [ ! -e "$dir" ]; then
        printf '{"present":false}'
        return
    fi
    printf '{"present":true,"driver":%s,"power_state":%s,"runtime_status":%s,"resource":%s,"config":%s}' \
        "$(jnull "$(driver_of "$1")")" "$(attr "$1" power_state)" "$(attr "$1" power/runtime_status)" \
        "$(attr "$1" resource)" "$(jstr "$(od -An -v -tx1 -N64 "$dir/config" | tr -d ' \n')")"
}
