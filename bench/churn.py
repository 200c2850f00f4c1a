"""Churn: what draining N tasks leaves in the tasks table, and what it does to the claim.

    python bench/churn.py --dsn DSN -n 100000 [--history H] [--schema S]
                          [--wait-autovacuum SECONDS] [--vacuum]

Steps, on a schema of its own (dropped and re-migrated):
1. H finished rows of history (default 100 000; see realtable.py), VACUUM ANALYZE.
2. N no-op tasks enqueued; the claim probed (below): "before".
3. One worker process with default settings drains them (as run.py's drain). With --rounds R,
   steps 2-4 run R times on the same table (the dead rows of one round stay for the next).
4. The claim probed on the now-empty queue ("after drain"), twice: the first probe meets the
   dead index entries the drain left, and marks those it can as dead for the next one.
5. With --wait-autovacuum S: wait up to S seconds for autovacuum to vacuum the table, then
   probe again ("after autovacuum"). With --vacuum: a manual VACUUM, then probe again.
With --server-defaults the table runs without pgtasq's autovacuum settings (pgtasq_0002).

A probe is the claim's row search, ``SELECT id … WHERE status = 'pending' AND queue = … AND
run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED``, under
EXPLAIN (ANALYZE, BUFFERS) in a transaction that is rolled back: its time and the buffers it
touched. Each stage also reports pg_stat_user_tables (dead and live rows, updates, HOT
updates, autovacuum runs; estimates), the dead rows pgstattuple counts (exact; the script
creates the extension where it may) and the size of tasks_claim_idx.

Prints one JSON line on stdout and a table on stderr. Keep N at 100 000 or less on a shared
machine (the drain takes seconds; the history build a few more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import realtable  # beside this script
import run

from pgtasq.tables import TASKS_STORAGE_PARAMETERS as TASKS_SETTINGS

PROBE = """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
SELECT id FROM {s}.tasks
WHERE status = 'pending' AND queue = 'default' AND run_at <= now()
ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED"""

TABLE_STATS = """SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count,
       vacuum_count, pg_relation_size(%(claim)s::regclass) AS claim_idx_bytes,
       pg_relation_size(%(table)s::regclass) AS table_bytes
FROM pg_stat_user_tables WHERE relid = %(table)s::regclass"""


def probe(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    """One claim search, rolled back: milliseconds, buffers touched, rows found."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(PROBE.format(s=schema).encode()).fetchone()
    assert row is not None
    plan = row[0][0]
    top = plan["Plan"]
    return {
        "ms": round(plan["Execution Time"], 3),
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "rows": top.get("Actual Rows", 0),
    }


def table_stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    # Counters reach pg_stat_user_tables when a backend flushes them (at most once a second,
    # and at exit): ask ours to flush, and give the others a moment.
    conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.1)
    names = {"claim": f"{schema}.tasks_claim_idx", "table": f"{schema}.tasks"}
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(TABLE_STATS, names).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


def exact_dead(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """Dead row versions in the table, counted by pgstattuple (None where it is missing)."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    except psycopg.Error:
        return None
    row = conn.execute(
        "SELECT dead_tuple_count FROM pgstattuple(%s::regclass)", (f"{schema}.tasks",)
    ).fetchone()
    return int(row[0]) if row else None


def stage(conn: psycopg.Connection[Any], schema: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"stage": name, **table_stats(conn, schema)}
    out["dead_exact"] = exact_dead(conn, schema)
    out["probe"] = probe(conn, schema)
    out["probe_again"] = probe(conn, schema)
    return out


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("-n", type=int, default=100_000, help="tasks drained")
    ap.add_argument("--history", type=int, default=100_000, help="finished rows before")
    ap.add_argument("--schema", default="pgtasq_churn", help="dropped and re-created")
    ap.add_argument("--wait-autovacuum", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--vacuum", action="store_true", help="then VACUUM and probe again")
    ap.add_argument("--rounds", type=int, default=1, help="enqueue and drain N this many times")
    ap.add_argument(
        "--plan-cache-mode",
        choices=tuple(run.PLAN_CACHE_MODES),
        default="auto",
        help="plan_cache_mode of the drain's worker (as run.py)",
    )
    ap.add_argument(
        "--server-defaults",
        action="store_true",
        help="RESET the tasks table's autovacuum settings (migration pgtasq_0002) first",
    )
    a = ap.parse_args(argv)
    if a.n < 1 or a.history < 0 or a.rounds < 1:
        ap.error("-n and --rounds must be >= 1, --history >= 0")

    run.reset_schema(a.dsn, a.schema)
    if a.server_defaults:
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            reset = f"ALTER TABLE {a.schema}.tasks RESET ({', '.join(TASKS_SETTINGS)})"
            conn.execute(reset.encode())
    realtable.prepare(a.dsn, a.schema, history=a.history, backlog=0)
    result: dict[str, Any] = {"n": a.n, "history": a.history, "stages": []}
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        settings = conn.execute(
            "SELECT current_setting('autovacuum'), current_setting('autovacuum_naptime'), "
            "(SELECT reloptions FROM pg_class WHERE oid = %s::regclass)",
            (f"{a.schema}.tasks",),
        ).fetchone()
        assert settings is not None
        result["server"] = {
            "autovacuum": settings[0],
            "naptime": settings[1],
            "reloptions": settings[2],
        }
        if a.plan_cache_mode != "auto":
            mode = run.PLAN_CACHE_MODES[a.plan_cache_mode]
            os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c plan_cache_mode={mode}"
        result["plan_cache_mode"] = a.plan_cache_mode
        result["drains"] = []
        for round_ in range(1, a.rounds + 1):
            with run.Producer(a.dsn, schema=a.schema) as producer:
                for first in range(0, a.n, 5000):
                    batch = [run.Task("noop", {}) for _ in range(min(5000, a.n - first))]
                    producer.enqueue_many(batch)
            if round_ == 1:
                result["stages"].append(stage(conn, a.schema, "before"))
            drained = run.drain(a.dsn, a.schema, 0, processes=1)
            result["drains"].append({k: drained[k] for k in ("done", "seconds", "jobs_per_s")})
            suffix = f" {round_}" if a.rounds > 1 else ""
            result["stages"].append(stage(conn, a.schema, f"after drain{suffix}"))
        if a.wait_autovacuum > 0:
            before = result["stages"][-1]["autovacuum_count"]
            began = time.monotonic()
            while time.monotonic() - began < a.wait_autovacuum:
                if table_stats(conn, a.schema)["autovacuum_count"] > before:
                    break
            waited = round(time.monotonic() - began, 1)
            result["stages"].append(stage(conn, a.schema, f"after autovacuum wait ({waited} s)"))
        if a.vacuum:
            began = time.perf_counter()
            conn.execute(f"VACUUM {a.schema}.tasks".encode())
            took = time.perf_counter() - began
            result["stages"].append(stage(conn, a.schema, f"after VACUUM ({took:.2f} s)"))
    print(json.dumps(result))
    head = (
        f"{'stage':34} {'dead':>8} {'pgstattuple':>11} {'live':>8} {'upd':>8} {'hot':>5} "
        f"{'autovac':>7} "
        f"{'claim idx':>10} {'probe ms':>9} {'bufs':>6} {'again ms':>9} {'bufs':>6}"
    )
    print(head, file=sys.stderr)
    for s in result["stages"]:
        print(
            f"{s['stage']:34} {s['n_dead_tup']:8} {_cell(s['dead_exact']):>11} "
            f"{s['n_live_tup']:8} {s['n_tup_upd']:8} "
            f"{s['n_tup_hot_upd']:5} {s['autovacuum_count']:7} "
            f"{s['claim_idx_bytes'] / 1024:8.0f} kB {s['probe']['ms']:9.3f} "
            f"{s['probe']['buffers']:6} {s['probe_again']['ms']:9.3f} "
            f"{s['probe_again']['buffers']:6}",
            file=sys.stderr,
        )
    rates = ", ".join(f"{d['jobs_per_s']:.0f}" for d in result["drains"])
    print(f"drain: {rates} tasks/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
