"""How fast the CLI answers the verbs that run no job, against ``python -c "import dagster"``.

    .venv/bin/python bench/cli.py [--runs 7] [--database-url postgresql://...]

Each command is a fresh process (the installed ``integrations`` console script, or the same Python for
the baseline), on a temporary SQLite database holding one integration (``integrations_app`` definitions,
the default), all in the same run so the machine's load affects every row alike. Prints a table of the
median and the fastest wall time per command and its ratio to the baseline's median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "integrations"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median reported)")
    parser.add_argument("--database-url", default=None,
                        help="an empty integrations database to use (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "INTEGRATIONS_DATABASE_URL": args.database_url or f"sqlite:///{tmp}/integrations.sqlite",
               "DAGSTER_HOME": tmp, "DAGSTER_DISABLE_TELEMETRY": "yes"}
        env.pop("INTEGRATIONS_TENANT", None)
        add = subprocess.run([str(SCRIPT), "add", "synthetic", "--name", "bench", "--meta", "items=10"], env=env,
                             cwd=ROOT, capture_output=True, text=True, check=True)
        iid = add.stdout.strip()
        commands = [
            ('python -c "import dagster"', [sys.executable, "-c", "import dagster"]),
            ('python -c "pass"', [sys.executable, "-c", "pass"]),
            ("integrations --help", [str(SCRIPT), "--help"]),
            ("integrations status", [str(SCRIPT), "status"]),
            (f"integrations status {iid}", [str(SCRIPT), "status", iid]),
            ("integrations status --json", [str(SCRIPT), "status", "--json"]),
            (f"integrations show {iid}", [str(SCRIPT), "show", iid]),
            (f"integrations timeline {iid}", [str(SCRIPT), "timeline", iid]),
            ("integrations list", [str(SCRIPT), "list"]),
            ("integrations list-failed-items", [str(SCRIPT), "list-failed-items"]),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in commands}
        for name, cmd in commands:  # warm the file cache and bytecode once
            timed(cmd, env)
        for _ in range(args.runs):  # interleaved: a burst of load hits every command alike
            for name, cmd in commands:
                times[name].append(timed(cmd, env))
    base = statistics.median(times[commands[0][0]])
    print(f"{'command':<34} {'median s':>9} {'min s':>7} {'vs import dagster':>18}")
    for name, _ in commands:
        med = statistics.median(times[name])
        print(f"{name:<34} {med:>9.3f} {min(times[name]):>7.3f} {med / base:>17.2f}x")
    print(f"\n{args.runs} runs each, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"database {'PostgreSQL' if args.database_url else 'SQLite'}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
