"""Search bench: the incremental index (store/search.py) against DuckDB fts's full rebuild.

    .venv/bin/python bench/search.py                       # 1k and 10k snapshots
    nice -n 10 .venv/bin/python bench/search.py --sizes 100000 --baseline-max 10000

For each size N, in one run and on one machine:

- a fresh data folder with N sealed Snapshots, each with a synthetic `htmltotext.txt`
  (200–1,000 words, mean ≈ 600 ≈ 4 KB; a 48k-word vocabulary of made-up words with English
  suffixes, drawn with a Zipf-like law, plus English stopwords; a 5-word title), made by
  DuckDB so that 100k pages take seconds;
- **ours**: `index_snapshots(cur, data_dir, ids)` (the pipeline's entry point: reads the
  files, writes snapshot_text and the postings) in batches of `--batch` snapshots, one
  transaction each, as the crawl's indexer thread does; build time per 1k snapshots, and the
  cost of the first and last tenth of the batches (flat = work proportional to the batch);
- **time to first result** after the last batch: that batch's indexing, then the first
  `run_search` (a new read-only connection, as `archiveflow search` does);
- **query latency**: the median of a mixed query set (rare and common words, two words, a
  domain filter, an exact phrase) through `run_search`;
- **baseline** (the previous store/search.py, up to `--baseline-max` snapshots): the same
  snapshot_text, `PRAGMA create_fts_index` over it (what the first search after new snapshots
  ran), then the same queries with `match_bm25`; its time to first result is the rebuild plus
  the first search. The top-10 of both are compared for every query.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import duckdb

from archiveflow.store import search, search_index
from archiveflow.store.db import Store

QUERIES: Final[list[search.SearchQuery]] = [
    search.SearchQuery("kaloti"),                    # a frequent made-up word
    search.SearchQuery("sasamon"),                   # a rarer one
    search.SearchQuery("penmerdro belkati"),
    search.SearchQuery("running archives"),          # stemmed, stopword-ish mix
    search.SearchQuery("kaloti", domain="site3.example"),
    search.SearchQuery('"kaloti lomerka"'),
]
SYLLABLES: Final[list[str]] = ["ka", "lo", "mer", "ti", "san", "dro", "vel", "ash", "qui",
                               "pen", "tor", "bel", "ri", "no", "fa", "gu", "hel", "ix",
                               "mon", "sa"]
VOCAB: Final[int] = 48_000


def _generate(con: duckdb.DuckDBPyConnection, n: int, seed: float) -> None:
    """Table `gen(i, id, url, title, text)` of n synthetic pages."""
    con.execute("SELECT setseed(?)", [seed])
    con.execute("CREATE OR REPLACE TABLE syl AS SELECT unnest(?::VARCHAR[]) AS s, "
                "generate_subscripts(?::VARCHAR[], 1) - 1 AS i", [SYLLABLES, SYLLABLES])
    con.execute(f"""
        CREATE OR REPLACE TABLE vocab AS
        SELECT r.i AS wid, a.s || b.s || c.s
               || ['', 's', 'ing', 'ed', 'ly', 'er'][1 + (r.i // 8000) % 6] AS w
        FROM range({VOCAB}) r(i)
        JOIN syl a ON a.i = r.i % 20 JOIN syl b ON b.i = (r.i // 20) % 20
        JOIN syl c ON c.i = (r.i // 400) % 20
        UNION ALL
        SELECT {VOCAB} + row_number() OVER () - 1, w FROM (SELECT unnest(['the', 'and',
            'of', 'to', 'a', 'in', 'is', 'for', 'on', 'with', 'archive', 'archives',
            'running', 'page', 'web', 'Kaloti', 'Lomerka.']) AS w)
    """)
    # Word ranks log-uniform over the vocabulary (Zipf, s = 1): a few words are everywhere,
    # most are rare, as in real pages. 1 word in 8 comes from the short common list.
    con.execute(f"""
        CREATE OR REPLACE TABLE gen AS
        WITH docs AS (SELECT i, 200 + (random() * 800)::INTEGER AS words FROM range({n}) r(i)),
        toks AS (
            SELECT d.i, g.j,
                   CASE WHEN random() < 0.125
                        THEN {VOCAB} + (random() * 16.999)::INTEGER
                        ELSE least({VOCAB - 1}, floor(exp(random() * ln({VOCAB})))::INTEGER - 1)
                   END AS wid
            FROM docs d, generate_series(1, d.words) g(j))
        SELECT t.i, uuid()::VARCHAR AS id,
               'https://site' || (t.i % 50) || '.example/page/' || t.i AS url,
               string_agg(v.w, ' ' ORDER BY t.j) FILTER (WHERE t.j <= 5) AS title,
               string_agg(v.w, ' ' ORDER BY t.j) AS text
        FROM toks t JOIN vocab v USING (wid)
        GROUP BY t.i
    """)


def _make_data(root: Path, n: int) -> tuple[Path, list[str], duckdb.DuckDBPyConnection]:
    """A data folder with n sealed snapshots and their text files; returns (data, ids, gen)."""
    gen = duckdb.connect()
    _generate(gen, n, 0.42)
    rows = gen.execute("SELECT id, url, title, text FROM gen ORDER BY i").fetchall()
    data = root / "data"
    ids = []
    snaps = []
    for i, (sid, url, title, text) in enumerate(rows):
        out = f"users/default/snapshots/20261201/site{i % 50}.example/{sid}"
        (data / out / "htmltotext").mkdir(parents=True, exist_ok=True)
        (data / out / search.TEXT_FILE).write_text(text, encoding="utf-8")
        ids.append(sid)
        snaps.append((sid, "bench", url, "sealed", out, title))
    store = Store(data / "index.duckdb")
    try:
        with store.transaction() as cur:
            _bulk_snapshots(cur, snaps)
    finally:
        store.close()
    return data, ids, gen


def _bulk_snapshots(cur: duckdb.DuckDBPyConnection, snaps: list[tuple[Any, ...]]) -> None:
    import polars as pl

    frame = pl.DataFrame(snaps, schema=["id", "crawl_id", "url", "status", "output_dir",
                                        "title"], orient="row")
    cur.register("_bench_snaps", frame.to_arrow())
    cur.execute("INSERT INTO snapshot (id, crawl_id, url, status, output_dir, title) "
                "SELECT * FROM _bench_snaps")
    cur.unregister("_bench_snaps")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _ours(data: Path, ids: list[str], batch: int) -> dict[str, Any]:
    index = data / "index.duckdb"
    store = Store(index)
    times = []
    try:
        with store.transaction() as cur:
            search.ensure_tables(cur)
        batches = [ids[i:i + batch] for i in range(0, len(ids), batch)]
        for b in batches[:-1]:
            with store.transaction() as cur:
                times.append(_timed(lambda cur=cur, b=b: search.index_snapshots(
                    cur, data, b, ensure=False))[0])
        with store.transaction() as cur:
            last = _timed(lambda: search.index_snapshots(cur, data, batches[-1],
                                                         ensure=False))[0]
        times.append(last)
    finally:
        store.close()
    first, hits = _timed(lambda: search.run_search(index, QUERIES[0]))
    assert hits, "no hit for the first query"
    lat, tops = [], []
    for q in QUERIES:
        t, h = _timed(lambda q=q: search.run_search(index, q))
        lat.append(t)
        tops.append([x["snapshot_id"] for x in h[:10]])
    tenth = max(1, len(times) // 10)
    return {"build": sum(times), "per_1k": sum(times) / len(ids) * 1000,
            "early_batch": statistics.mean(times[:tenth]),
            "late_batch": statistics.mean(times[-tenth:]),
            "last_batch": last, "first_search": first, "ttfr": last + first,
            "query_median": statistics.median(lat), "query_max": max(lat),
            "slowest": QUERIES[lat.index(max(lat))].text, "tops": tops,
            "warm_median": _warm(lambda con, q: search.search(con, q), index),
            "size_mb": index.stat().st_size / 1e6}


def _baseline(data: Path) -> dict[str, Any]:
    """The previous design: snapshot_text as is, then PRAGMA create_fts_index, then
    match_bm25 (the same filters and order as the old search statement)."""
    src = data / "index.duckdb"
    copy = data.parent / "baseline.duckdb"
    con = duckdb.connect(str(copy))
    try:
        con.execute(f"ATTACH '{src}' AS src (READ_ONLY)")
        con.execute("CREATE TABLE snapshot_text AS SELECT * FROM src.snapshot_text")
        con.execute("DETACH src")
        search.load_fts(con)
        rebuild, _ = _timed(lambda: con.execute(
            "PRAGMA create_fts_index('snapshot_text', 'snapshot_id', 'title', 'text', "
            "overwrite = 1)"))
    finally:
        con.close()

    def query(q: search.SearchQuery, con: duckdb.DuckDBPyConnection | None = None
              ) -> list[str]:
        c = con or duckdb.connect(str(copy), read_only=True)
        try:
            if con is None:
                search.load_fts(c)
            return [r[0] for r in c.execute("""
                SELECT t.snapshot_id FROM (
                    SELECT snapshot_id, fts_main_snapshot_text.match_bm25(snapshot_id, $q) s
                    FROM snapshot_text) m JOIN snapshot_text t USING (snapshot_id)
                WHERE m.s IS NOT NULL
                  AND ($phrase IS NULL OR strpos(lower(coalesce(t.title, '') || ' ' || t.text),
                                                 lower($phrase)) > 0)
                  AND ($domain IS NULL OR t.domain = lower($domain)
                       OR t.domain LIKE '%.' || lower($domain))
                ORDER BY m.s DESC, t.captured_at DESC, t.snapshot_id LIMIT 20""",
                {"q": q.terms, "phrase": q.phrase, "domain": q.domain}).fetchall()]
        finally:
            if con is None:
                c.close()

    first, _ = _timed(lambda: query(QUERIES[0]))
    lat, tops = [], []
    for q in QUERIES:
        t, ids = _timed(lambda q=q: query(q))
        lat.append(t)
        tops.append(ids[:10])
    return {"rebuild": rebuild, "first_search": first, "ttfr": rebuild + first,
            "query_median": statistics.median(lat), "tops": tops,
            "warm_median": _warm(lambda con, q: query(q, con), copy)}


def _warm(run: Callable[[duckdb.DuckDBPyConnection, search.SearchQuery], Any],
          path: Path) -> float:
    """Median latency of the query set, 3 rounds, on one open read-only connection."""
    from archiveflow.store.readonly import read_only_connection

    with read_only_connection(path, preload=[search.load_sql()]) as con:
        return statistics.median(_timed(lambda q=q: run(con, q))[0]
                                 for _ in range(3) for q in QUERIES)


def _tokenisers(pages: int = 1000) -> None:
    """The postings of `pages` pages made two ways: one SQL statement (unnest, stem every
    token, GROUP BY) and store/search_index.postings (polars splits and counts, DuckDB
    stems each distinct word once). Best of 3 each; the outputs must be equal."""
    con = duckdb.connect()
    _generate(con, pages, 0.7)
    search.load_fts(con)
    search_index.ensure_index_tables(con)
    docs = con.execute("SELECT i AS doc, title, text FROM gen").pl()
    con.register("_bench_docs", docs.to_arrow())
    body = search_index.tokenize_sql("coalesce(title, '') || ' ' || coalesce(text, '')")
    sql = (f"SELECT doc, stem(w, '{search_index.STEMMER}') AS term, count(*)::INTEGER AS tf "
           f"FROM (SELECT doc, unnest({body}) AS w FROM _bench_docs) "
           "WHERE len(w) > 0 AND w NOT IN (SELECT sw FROM search_stopword) GROUP BY ALL")
    t_sql, ref = min((_timed(lambda: con.execute(sql).pl()) for _ in range(3)),
                     key=lambda x: x[0])
    t_pl, ours = min((_timed(lambda: search_index.postings(con, docs)) for _ in range(3)),
                     key=lambda x: x[0])
    same = ref.sort("doc", "term").equals(ours.select("doc", "term", "tf").sort("doc", "term"))
    print(f"\n## Tokenising {pages:,} pages ({ref.height:,} postings)\n")
    print("| figure | polars + stem distinct | one SQL statement | SQL / polars |\n"
          "|---|---|---|---|")
    print(f"| postings of {pages:,} pages | {t_pl:.3f} s | {t_sql:.3f} s | "
          f"{t_sql / t_pl:.1f}× |")
    print(f"| same postings | {'yes' if same else 'NO'} | | |")


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print one markdown table per size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated snapshot counts")
    ap.add_argument("--batch", type=int, default=100, help="snapshots per indexing batch")
    ap.add_argument("--baseline-max", type=int, default=10_000,
                    help="largest size at which the full rebuild is measured too")
    ap.add_argument("--no-tokenisers", action="store_true",
                    help="skip the SQL vs polars tokenising comparison")
    args = ap.parse_args(argv)
    print(f"duckdb {duckdb.__version__}, batch {args.batch}")
    if not args.no_tokenisers:
        _tokenisers()
    for n in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(prefix="af-bench-search-"))
        try:
            gen_t, (data, ids, gen) = _timed(lambda n=n, root=root: _make_data(root, n))
            words = gen.execute("SELECT avg(len(string_split(text, ' '))) FROM gen").fetchone()
            gen.close()
            print(f"\n## {n:,} snapshots (generated in {gen_t:.1f}s, "
                  f"{words[0] if words else 0:.0f} words/page)\n")
            ours = _ours(data, ids, args.batch)
            base = _baseline(data) if n <= args.baseline_max else None
            _report(n, ours, base)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _report(n: int, ours: dict[str, Any], base: dict[str, Any] | None) -> None:
    """One markdown table: ours, the baseline and their ratio."""
    def row(name: str, a: float, b: float | None, unit: str = "s") -> None:
        ratio = (f"{b / a:.0f}×" if b / a >= 10 else f"{b / a:.2g}×") if b and a else "-"
        bs = f"{b:.3f} {unit}" if b is not None else "not run"
        print(f"| {name} | {a:.3f} {unit} | {bs} | {ratio} |")

    print("| figure | incremental | full rebuild (fts) | baseline / ours |\n|---|---|---|---|")
    row("time to first result after the last batch", ours["ttfr"],
        base["ttfr"] if base else None)
    row("  of which indexing the last batch / the rebuild", ours["last_batch"],
        base["rebuild"] if base else None)
    row("  of which the first search", ours["first_search"],
        base["first_search"] if base else None)
    row("index build per 1k snapshots (all batches)", ours["per_1k"],
        base["rebuild"] * 1000 / n if base else None)
    row("query latency, median of the set (`run_search` / a new connection)",
        ours["query_median"], base["query_median"] if base else None)
    row("query latency on an open connection, median", ours["warm_median"],
        base["warm_median"] if base else None)
    print(f"| batch cost, first tenth → last tenth | {ours['early_batch']:.3f} s → "
          f"{ours['late_batch']:.3f} s | | |")
    print(f"| slowest query ({ours['slowest']}) | {ours['query_max']:.3f} s | | |")
    print(f"| index file | {ours['size_mb']:.0f} MB | | |")
    if base:
        same = sum(a == b for a, b in zip(ours["tops"], base["tops"], strict=True))
        print(f"| queries with the same top-10 | {same}/{len(QUERIES)} | | |")


if __name__ == "__main__":
    raise SystemExit(main())
