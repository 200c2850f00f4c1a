"""pgtasq side by side with its peers and a raw-SQL floor, on one PostgreSQL, rounds interleaved.

    python bench/compare.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
        [--workloads enqueue1,enqueueB,drain,drainH,latency] [--rounds 3]
        [--only pgtasq,floor,pgqueuer,pgqueuer_tuned,procrastinate] [-n N]
        [--history 1000000] [--cache-dir DIR] [--json-out FILE]

Runners (each a script in this folder that prints one JSON line, see run.py):
  pgtasq          bench/run.py, run with this Python (the checkout's pgtasq)
  floor           peers/floor_run.py: a bare SKIP LOCKED table in SQL, no library
  pgqueuer        peers/pgqueuer_run.py, its default batch (10) and concurrency
  pgqueuer_tuned  the same with batch 250 and 1000 tasks at once (drain only)
  procrastinate   peers/procrastinate_run.py (its drain takes at most 5 000 tasks: it runs
                  one job per round trip, and 50 000 would take minutes)
The peers are installed once, at the versions in PEERS, into a venv of their own under the
cache folder (--cache-dir, PGTASQ_BENCH_CACHE, default ~/.cache/pgtasq-bench). Every runner
gets a database of its own on the server (``pgtasq_bench_<runner>``, created if missing), so
none sees another's tables. Every round runs every runner once, in the same order, so slow
and fast moments of a shared machine fall on all of them.

drainH is the drain after H finished tasks in each system's own representation and a
VACUUM ANALYZE (runners get ``--workload drain --history H``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
PEERS = (
    "pgqueuer==1.6.0",
    "procrastinate==3.10.0",
    "asyncpg==0.32.0",
    "psycopg[binary]==3.3.9",
    "psycopg-pool==3.3.3",
)
N_DEFAULT = {
    "enqueue1": 3000,
    "enqueueB": 100_000,
    "drain": 50_000,
    "drainH": 50_000,
    "latency": 400,
}
PROCRASTINATE_DRAIN_MAX = 5000
RUN_TIMEOUT = 900  # seconds for one runner's run

Runner = Callable[[str], list[str] | None]  # workload -> command, or None: does not take part


def cache_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    if env := os.environ.get("PGTASQ_BENCH_CACHE"):
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pgtasq-bench"


def peers_python(cache: Path) -> str:
    """The venv with the peers installed (created, or re-created when PEERS changed)."""
    env = cache / "peers-venv"
    python = env / "bin" / "python"
    stamp = env / "installed.txt"
    wanted = "\n".join(PEERS)
    if not stamp.is_file() or stamp.read_text() != wanted:
        print(f"# installing {', '.join(PEERS)} into {env}", file=sys.stderr)
        venv.create(env, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.write_text(wanted)
    return str(python)


def database_dsn(dsn: str, name: str) -> str:
    """The DSN of database ``name`` on the server of ``dsn``, created if missing."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
    if "://" not in dsn:
        return f"{dsn} dbname={name}"
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def run_one(command: list[str]) -> dict[str, Any]:
    """Run a runner; its last JSON line, or {"error": ...}."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {RUN_TIMEOUT} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except ValueError:
                break
            return result
    return {"error": (out.stderr or out.stdout).strip()[-300:] or f"exit {out.returncode}"}


def runners(ours: str, peers: str) -> dict[str, Runner]:
    peer = HERE / "peers"

    def pgtasq(workload: str) -> list[str]:
        return [ours, str(HERE / "run.py")]

    def floor(workload: str) -> list[str] | None:
        if workload == "latency":
            return None  # a bare table has no worker to wake
        extra = ["--batch", "100", "--conns", "2"] if workload == "drain" else []
        return [peers, str(peer / "floor_run.py"), *extra]

    def pgqueuer(workload: str) -> list[str]:
        extra = ["--batch", "10", "--concurrency", "0"] if workload == "drain" else []
        return [peers, str(peer / "pgqueuer_run.py"), *extra]

    def pgqueuer_tuned(workload: str) -> list[str] | None:
        if workload != "drain":
            return None  # the same as pgqueuer outside the drain
        return [peers, str(peer / "pgqueuer_run.py"), "--batch", "250", "--concurrency", "1000"]

    def procrastinate(workload: str) -> list[str]:
        return [peers, str(peer / "procrastinate_run.py")]

    return {
        "floor": floor,
        "pgqueuer": pgqueuer,
        "pgqueuer_tuned": pgqueuer_tuned,
        "procrastinate": procrastinate,
        "pgtasq": pgtasq,
    }


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def measured_failures(result: dict[str, Any]) -> int:
    """Tasks of the measured work that ended failed (the history has failed ones of its own)."""
    before = result.get("table_before") or {}
    after = result.get("table_after") or {}
    return int(after.get("failed", 0)) - int(before.get("failed", 0))


def summary_lines(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = [f"{'workload':10} {'runner':16} {'median':>10} {'min':>10} {'max':>10}  unit"]
    medians: dict[str, dict[str, float]] = {}
    for workload, by_runner in results.items():
        key = "p50_ms" if workload == "latency" else "jobs_per_s"
        unit = "ms p50" if workload == "latency" else "jobs/s"
        for name, rs in by_runner.items():
            values = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
            if not values:
                error = next((r["error"] for r in rs if "error" in r), "no result")
                lines.append(f"{workload:10} {name:16} {'failed':>10}  {error[:70]!r}")
                continue
            med = statistics.median(values)
            medians.setdefault(workload, {})[name] = med
            extra = ""
            if workload == "latency":
                extra = f" (p99 median {median_of(rs, 'p99_ms') or 0:.2f} ms)"
            failed = sum(measured_failures(r) for r in rs)
            if failed:
                extra += f" ({failed} measured tasks failed)"
            lines.append(
                f"{workload:10} {name:16} {med:10.1f} {min(values):10.1f} {max(values):10.1f}  "
                f"{unit}{extra}"
            )
    lines.append("")
    for workload, m in medians.items():
        if "pgtasq" not in m:
            continue
        ours = m["pgtasq"]
        if workload == "latency":
            others = ", ".join(f"{k} {v:.2f} ms" for k, v in m.items() if k != "pgtasq")
            lines.append(f"{workload}: pgtasq p50 {ours:.2f} ms vs {others}")
            continue
        parts = []
        best = max(m.get("pgqueuer", 0.0), m.get("pgqueuer_tuned", 0.0))
        if best:
            parts.append(f"{ours / best:.2f}x best pgqueuer")
        if m.get("procrastinate"):
            parts.append(f"{ours / m['procrastinate']:.1f}x procrastinate")
        if m.get("floor"):
            parts.append(f"{100 * ours / m['floor']:.0f}% of the raw-SQL floor")
        if parts:
            lines.append(f"{workload}: pgtasq {ours:.0f} jobs/s = " + ", ".join(parts))
    for name, with_history in medians.get("drainH", {}).items():
        empty = medians.get("drain", {}).get(name)
        if empty:
            lines.append(f"history penalty {name:16} drainH/drain = {with_history / empty:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--dsn",
        default=os.environ.get("PGTASQ_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a server where the runners may create databases (PGTASQ_BENCH_DSN)",
    )
    ap.add_argument("--workloads", default="enqueue1,enqueueB,drain,drainH,latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated runners (default: all)")
    ap.add_argument("-n", type=int, default=0, help="N for every workload (default: per workload)")
    ap.add_argument("--history", type=int, default=1_000_000, help="finished tasks for drainH")
    ap.add_argument("--cache-dir", default=None, help="where the peers' venv lives")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs bench/run.py")
    ap.add_argument("--json-out", default="", help="also write every result to this file")
    a = ap.parse_args(argv)

    workloads = [w for w in a.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in N_DEFAULT]
    if unknown or a.rounds < 1 or a.n < 0 or a.history < 0:
        ap.error(
            f"unknown workloads {unknown}" if unknown else "--rounds >= 1, -n and --history >= 0"
        )
    known = list(runners("", ""))
    keep = set(a.only.split(",")) if a.only else set(known)
    if keep - set(known):
        ap.error(f"unknown runners {sorted(keep - set(known))}; known: {', '.join(known)}")
    peers = peers_python(cache_dir(a.cache_dir)) if keep - {"pgtasq"} else ""
    table = {k: v for k, v in runners(a.python, peers).items() if k in keep}
    dsns = {name: database_dsn(a.dsn, f"pgtasq_bench_{name}") for name in table}

    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for workload in workloads:
        base = "drain" if workload == "drainH" else workload
        history = ["--history", str(a.history)] if workload == "drainH" else []
        for round_ in range(1, a.rounds + 1):
            for name, runner in table.items():
                command = runner(base)
                if command is None:
                    continue
                n = a.n or N_DEFAULT[workload]
                if name == "procrastinate" and base == "drain":
                    n = min(n, PROCRASTINATE_DRAIN_MAX)
                command += ["--dsn", dsns[name], "--workload", base, "-n", str(n), *history]
                result = run_one(command)
                results.setdefault(workload, {}).setdefault(name, []).append(result)
                shown = json.dumps(result)
                print(f"# {workload} round {round_} {name}: {shown[:180]}", file=sys.stderr)

    print("\n".join(summary_lines(results)))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"peers": PEERS, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
