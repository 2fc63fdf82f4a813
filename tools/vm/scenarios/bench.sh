# The benchmark of docs/methods.md: each method on one device (rng0: virtio-rng behind the switch's
# downstream port dp0, alone on its bus, bound to vfio-pci) N times with resetlab, and the kernel's
# own reset with the same method (`reset_method` = M, then `reset` written and timed by guest-helper
# on the monotonic clock). For remove_rescan the kernel's counterpart is `remove` then the bridge's
# `rescan` with drivers_autoprobe off (as resetlab does), and vfio-pci is bound back untimed. Reports figures, never verdicts: the summary (min /
# median / max, every sample) and a Markdown table, also printed on the console.
. /lib/vm/lib.sh

N=20
d=$(bdf rng0) && port=$(bdf dp0) || exit 1
dev=/sys/bus/pci/devices/$d
rescan=/sys/bus/pci/devices/$port/pci_bus/$(ls "/sys/bus/pci/devices/$port/pci_bus")/rescan
out=/tmp/bench
rm -rf "$out"
mkdir -p "$out"
emit device "{\"name\":\"rng0\",\"bdf\":$(jstr "$d"),\"reset_method\":$(attr "$d" reset_method)}"

# Runtime PM out of the measurement: vfio-pci would suspend the idle device between runs, and both
# resetlab and the kernel's reset_store would pay for waking it.
echo on >"$dev/power/control"

for m in flr pm bus remove_rescan; do
    i=0
    while [ $i -lt $N ]; do
        # One report a line (a pretty JSON has no newline inside a string); a run that printed
        # none (refused, say) is recorded as a failure with its stderr.
        r=$(resetlab reset --json "$d" -m $m 2>/tmp/bench.err | tr -d '\n')
        [ -n "$r" ] || r="{\"success\":false,\"runs\":[{\"error\":$(jstr "$(cat /tmp/bench.err)")}]}"
        echo "$r" >>"$out/rl.$m.jsonl"
        i=$((i + 1))
    done
    if [ $m = remove_rescan ]; then
        i=0
        while [ $i -lt $N ]; do
            # As resetlab does: no autoprobe, so virtio-pci never binds to the new device.
            echo 0 >/sys/bus/pci/drivers_autoprobe
            guest-helper time 1 "$dev/remove=1" "$rescan=1" >>"$out/k.$m.jsonl" || break
            bind "$d" vfio-pci || { echo "bench: cannot bind $d back to vfio-pci"; exit 1; }
            echo 1 >/sys/bus/pci/drivers_autoprobe
            echo on >"$dev/power/control"
            i=$((i + 1))
        done
    else
        echo $m >"$dev/reset_method"
        guest-helper time $N "$dev/reset=1" >"$out/k.$m.jsonl"
        echo default >"$dev/reset_method"
    fi
done
echo auto >"$dev/power/control"

guest-helper bench-table "$out" >"$out/summary.json"
emit summary "$(cat "$out/summary.json")"
sed -n 's/.*"table":"\([^"]*\)".*/\1/p' "$out/summary.json" | sed 's/\\n/\n/g'
exit 0
