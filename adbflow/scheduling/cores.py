"""How many threads a CPU program should use on a phone: its performance cores, not all of them.

Why: llama.cpp's decode waits for its slowest thread every token. On a phone a thread that
lands on a little core (Cortex-A5x) makes every step as slow as that core: threads beyond
the big + mid cores cost 30-40 % of decode (../shared/notes/device-profiles.md), and past
the big cores llama.cpp can collapse outright (llama.cpp issue 21763: a Dimensity 9500s
went from 28 tok/s at 3 threads to 0.26 tok/s at 5; issue 7176: an RK3588, 4 big + 4
little, ran 2x slower at 8 threads than at 4). A profile's `threads = 4` is right on a
1+3+4 flagship and wrong on a 2+6 Snapdragon 720G. Apps do the same (llama.rn picks the
cores with the highest cpuinfo_max_freq).

Which cores are performance cores, from what the probe reads (pure functions):
- `cpu_capacity` (the kernel's relative core performance, 1024 = fastest, from the device
  tree's capacity-dmips-mhz times each cluster's max frequency) when every core has one:
  a core at half the fastest's capacity or more. A little core sits at ~0.25-0.35 (sm8250:
  Cortex-A55 448 DMIPS/MHz against 1024 for its A77s, at a lower clock); a mid core at
  ~0.7-0.9.
- Else cpuinfo_max_freq clusters: with three or more, the slowest cluster is the little
  one; with two, the slower is little only when it tops out at 80 % of the faster or less
  (SD720G 1.8/2.3 GHz = 0.78 is little; SD 8 Elite 3.53/4.32 GHz = 0.82 is two clusters of
  the same big core). One cluster, or nothing readable: every core counts (no guess).
"""

from __future__ import annotations

from collections.abc import Mapping

from adbflow.parsers.sysfs import CpuFreq

#: a performance core has at least this share of the fastest core's cpu_capacity
CAPACITY_SHARE = 0.5
#: of two frequency clusters, the slower is the little one at or below this share
LITTLE_FREQ_SHARE = 0.8


def performance_cores(freqs: Mapping[int, CpuFreq]) -> int | None:
    """The number of big + mid cores, or None when the probe read no topology."""
    caps = [f.capacity for f in freqs.values()]
    if caps and all(c is not None and c > 0 for c in caps):
        top = max(c for c in caps if c is not None)
        return sum(1 for c in caps if c is not None and c >= CAPACITY_SHARE * top)
    maxes = [f.max_khz for f in freqs.values() if f.max_khz]
    if not maxes:
        return None
    clusters = sorted(set(maxes))
    if len(clusters) >= 3 or (len(clusters) == 2
                              and clusters[0] <= LITTLE_FREQ_SHARE * clusters[1]):
        return sum(1 for m in maxes if m > clusters[0])
    return len(maxes)


def program_threads(configured: int, perf_cores: int | None) -> int:
    """The `-t` a CPU program gets on a phone: the profile's threads, at most the phone's
    performance cores (unknown topology: the profile's number)."""
    want = max(1, int(configured))
    return want if not perf_cores else max(1, min(want, perf_cores))
