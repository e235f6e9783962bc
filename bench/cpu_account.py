"""CPU accounting of one GitHub bench child (docs/BENCHMARKS.md, GitHub): wall time, and CPU seconds of
this process (rusage), the fake API (a child: rusage of children) and every PostgreSQL backend of the
scratch database (sampled from /proc every 0.1 s). Run from the worktree being measured:

    PYTHONPATH=$PWD .venv/bin/python bench/cpu_account.py framework|loop postgresql://.../DB 100000
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.getcwd())

import bench.github as g  # noqa: E402


def main() -> None:
    kind, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = url.rsplit("/", 1)[1].encode()
    tck = os.sysconf("SC_CLK_TCK")
    seen: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmd = fh.read()
                    if not cmd.startswith(b"postgres:") or db not in cmd:
                        continue
                    with open(f"/proc/{pid}/stat") as fh:
                        f = fh.read().rsplit(")", 1)[1].split()
                    seen[pid] = (int(f[11]) + int(f[12])) / tck
                except OSError:
                    pass
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = g.child_framework(url, n) if kind == "framework" else g.child_loop(url, n)
    done.set()
    t.join()
    r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    me = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    srv = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    pg = sum(seen.values())
    print(json.dumps({"seconds": round(out["seconds"], 2), "cpu_self": round(me, 2), "cpu_server": round(srv, 2),
                      "cpu_pg": round(pg, 2), "cpu_total": round(me + srv + pg, 2)}))


if __name__ == "__main__":
    main()
