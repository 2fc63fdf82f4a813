#!/usr/bin/env python3
"""Wall time of the hook as Proxmox runs it (one process per phase) on the twin with its fake
QEMU: pre-stop with a guest that releases after T ms, post-stop and pre-start of released
functions. Usage: tools/hook_speed.py [RESETLAB] [TWIN_DIR] (docs/proxmox.md, "Release speed").
The twin dir should be on a tmpfs, as /run is on a Proxmox host (state records are fsync'd)."""
import subprocess, time, statistics, sys, shutil
B=sys.argv[1] if len(sys.argv) > 1 else 'target/release/resetlab'
D=sys.argv[2] if len(sys.argv) > 2 else '/dev/shm/resetlab-hook-speed'
shutil.rmtree(D, ignore_errors=True)
def r(*a, check=True):
    return subprocess.run([B,*a], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check)
r('sim','up',D)
H=['--sysfs',D+'/sys','hook','100']
try:
    for T in (0, 100, 1000):
        pre, post, start = [], [], []
        for i in range(10):
            r('sim','vm',D,'100','start','--guest',f'release:{T}')
            r(*H,'post-start')
            t=time.perf_counter(); r(*H,'pre-stop'); pre.append((time.perf_counter()-t)*1e3)
            r('sim','vm',D,'100','stop')
            t=time.perf_counter(); r(*H,'post-stop'); post.append((time.perf_counter()-t)*1e3)
            t=time.perf_counter(); r(*H,'pre-start'); start.append((time.perf_counter()-t)*1e3)
        m=statistics.median
        print(f"T={T} ms: pre-stop median {m(pre):.1f} ms (max {max(pre):.1f}), post-stop {m(post):.1f} ms (max {max(post):.1f}), pre-start {m(start):.1f} ms (max {max(start):.1f})")
finally:
    r('sim','down',D, check=False)
