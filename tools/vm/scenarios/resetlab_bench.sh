# `resetlab bench` on a real kernel: rng0 (virtio-rng behind its own downstream port, bound to vfio-pci;
# the kernel offers `flr pm bus`) through flr, kernel:flr, pm, bus and remove_rescan, interleaved, for
# BENCH_CYCLES cycles in one boot. The trials and the run's meta go to the host as blobs; the host
# re-makes the reports (tests/guest.rs, docs/bench.md).
. /lib/vm/lib.sh

d=$(bdf rng0) || exit 1
emit device "$(jstr "$d")"
emit driver.before "$(jnull "$(driver_of "$d")")"
run bench resetlab --sysfs /sys bench "$d" --methods flr,kernel:flr,pm,bus,remove_rescan \
    --cycles "${BENCH_CYCLES:-20}" --out /tmp/bench --json
emit driver.after "$(jnull "$(driver_of "$d")")"
blob trials /tmp/bench/trials.jsonl || exit 1
blob meta /tmp/bench/meta.json || exit 1
exit 0
