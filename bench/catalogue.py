"""The catalogue's read queries at 1,000,000 tracks (the target: under 10 ms each, median of 100, warm).

    bench/run catalogue [--tracks 1000000] [--queries 100] [--section all|queries|pipeline]

Starts a private PostgreSQL (tests/services.py), migrates it, fills the catalogue set-wise with ``--tracks`` tracks
over 50,000 folders (20 tracks a folder, an album a folder, 20 albums an artist, titles of three words drawn from
a 3,000-word vocabulary with a skew, so that some words are common; each album's tracks show its picture, and every
other folder has a folder image), then times each query of
``worker_app.db.catalogue_queries`` ``--queries`` times with random arguments after a warm-up pass, and prints the
median, the 95th percentile and the plan of each (EXPLAIN ANALYZE). Then the pipeline's own statements on that
catalogue (bench/catalogue_statements.py): the worker_app functions run, every statement they send EXPLAINed.
``--section`` runs only one of the two after the same fill. Results go to bench/results/catalogue.json (a single
section replaces its own part of the file and keeps the other's, when that is of the same ``--tracks``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRACKS_PER_FOLDER = 20
ALBUMS_PER_ARTIST = 20
VOCABULARY = 3000

FILL = """
CREATE TEMPORARY TABLE words AS SELECT i, substr(md5(i::text), 1, 7) AS word FROM generate_series(0, :vocabulary - 1) i;
INSERT INTO artists (id, name, name_key)
    SELECT a, 'artist ' || w.word || ' ' || a, 'artist ' || w.word || ' ' || a
    FROM generate_series(1, :artists) a JOIN words w ON w.i = a % :vocabulary;
INSERT INTO covers (id, sha256, mime, width, height, size_bytes, source, data)
    SELECT b, encode(sha256(b::text::bytea), 'hex'), 'image/jpeg', 500, 500, 1, 'embedded', '\xff'::bytea
    FROM generate_series(1, :albums) b;
INSERT INTO albums (id, title, title_key, album_artist_id, year, cover_id)
    SELECT b, 'album ' || b, 'album ' || b, 1 + (b - 1) / :albums_per_artist, 1960 + b % 60, b
    FROM generate_series(1, :albums) b;
INSERT INTO tracks (id, path, folder, title, artist_id, album_id, disc_number, track_number, format, size_bytes,
                    mtime, duration_seconds, added_at, search_vector, cover_id, folder_cover_id)
    SELECT t.id, t.folder || '/' || lpad(t.number::text, 2, '0') || '.mp3', t.folder, t.title, t.artist, t.album, 1,
           t.number, 'mp3', 4000000, 1700000000, 180, now() - make_interval(secs => :tracks - t.id),
           setweight(to_tsvector('simple', t.title), 'A')
           || setweight(to_tsvector('simple', (SELECT name FROM artists WHERE id = t.artist)), 'B')
           || setweight(to_tsvector('simple', 'album ' || t.album), 'C'),
           t.album, CASE WHEN t.album % 2 = 0 THEN t.album END
    FROM (
        SELECT g AS id, 1 + (g - 1) / :per_folder AS album, 1 + (g - 1) % :per_folder AS number,
               1 + (g - 1) / (:per_folder * :albums_per_artist) AS artist,
               :root || '/' || (1 + (g - 1) / (:per_folder * :albums_per_artist)) || '/' || (1 + (g - 1) / :per_folder)
                   AS folder,
               v.words[1 + floor(:vocabulary * random() ^ 3)::int]
                   || ' ' || v.words[1 + floor(:vocabulary * random())::int]
                   || ' ' || v.words[1 + floor(:vocabulary * random() ^ 2)::int] AS title
        FROM generate_series(1, :tracks) g, (SELECT array_agg(word ORDER BY i) AS words FROM words) v
    ) t;
INSERT INTO track_artists (track_id, position, artist_id) SELECT id, 0, artist_id FROM tracks;
SELECT setval(pg_get_serial_sequence('covers', 'id'), :albums);
SELECT setval(pg_get_serial_sequence('artists', 'id'), :artists);
SELECT setval(pg_get_serial_sequence('albums', 'id'), :albums);
SELECT setval(pg_get_serial_sequence('tracks', 'id'), :tracks);
"""


def _timed(function: Callable[[], Any], repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/run catalogue", description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--section", choices=("all", "queries", "pipeline"), default="all",
                        help="after the fill, time the read queries, EXPLAIN the pipeline's statements, or both")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "catalogue.json")
    options = parser.parse_args()

    from tests.services import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="soniquebay-bench-catalogue-"))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg").start()
    try:
        os.environ["SONIQUEBAY_DATABASE_URL"] = server.url
        os.environ["SONIQUEBAY_ENV_FILE"] = "/nonexistent"
        # The fill's folders, under a real library root: the pipeline's functions check paths against the roots,
        # and the disk, not the catalogue, has the last word on a file changed or gone (pipeline/unit_screen.py,
        # deferred.verify_gone). Only the files those functions look at are made (bench/catalogue_statements.py).
        root = str(base / "library")
        os.mkdir(root)
        os.environ["SONIQUEBAY_LIBRARY_ROOTS"] = root
        # No broker runs here: the messages the pipeline's functions send stay in this process.
        os.environ["SONIQUEBAY_BROKER_URL"] = "memory://"
        from sqlalchemy import create_engine, text

        from worker_app.db.migrate import upgrade
        from worker_app.db.session import transaction

        upgrade()
        albums = -(-options.tracks // TRACKS_PER_FOLDER)
        artists = -(-albums // ALBUMS_PER_ARTIST)
        started = time.monotonic()
        with transaction() as session:
            for statement in FILL.split(";\n"):
                if statement.strip():
                    session.execute(text(statement), {
                        "root": root, "tracks": options.tracks, "albums": albums, "artists": artists,
                        "per_folder": TRACKS_PER_FOLDER, "albums_per_artist": ALBUMS_PER_ARTIST,
                        "vocabulary": VOCABULARY})
        # What autovacuum does on a live catalogue: statistics, and the GIN index's pending list merged (every
        # search reads that list until then).
        autocommit = create_engine(server.url, isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
        autocommit.dispose()
        with transaction() as session:
            size = session.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
            common = session.execute(text(
                "SELECT word FROM ts_stat('SELECT search_vector FROM tracks') ORDER BY ndoc DESC LIMIT 1")).scalar()
            words = session.execute(text(
                "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM tracks') "
                "WHERE word NOT IN ('album', 'artist') AND word !~ '^[0-9]+$' ORDER BY ndoc DESC")).all()
        loaded = time.monotonic() - started
        print(f"{options.tracks} tracks, {albums} albums, {artists} artists loaded in {loaded:.0f} s; "
              f"database {size}; most common word {common!r}")
        # One section run alone keeps the other's figures only when they are of the same size of catalogue.
        report: dict[str, Any] = {}
        if options.section != "all" and options.output.exists():
            report = json.loads(options.output.read_text())
            if report.get("tracks") != options.tracks:
                report = {}
        report.update({"tracks": options.tracks, "albums": albums, "artists": artists,
                       "load_seconds": round(loaded, 1), "database_size": size})
        if options.section in ("all", "queries"):
            report.update(_time_queries(server.url, root, options.queries, albums, artists, words))
        if options.section in ("all", "pipeline"):
            from bench.catalogue_statements import explain_pipeline, print_table

            rows = explain_pipeline(server.url, root, albums, TRACKS_PER_FOLDER, ALBUMS_PER_ARTIST)
            print_table(rows)
            report["pipeline_statements"] = rows
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {options.output}")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _time_queries(url: str, root: str, repeat: int, albums: int, artists: int, words: list[Any]) -> dict[str, Any]:
    """Median and 95th percentile of each read query, with random arguments after a warm-up pass; their plans."""
    from worker_app.db import catalogue_queries as queries
    from worker_app.db.session import transaction

    rng = random.Random(0)
    frequent = [word for word, _ in words[:20]]
    rare = [word for word, _ in words[-200:]]
    cases: dict[str, Callable[[Any], Any]] = {
        "artist's albums": lambda s: queries.artist_albums(s, rng.randint(1, artists)),
        "album's tracks in order": lambda s: queries.album_tracks(s, rng.randint(1, albums)),
        "tracks of one folder": lambda s: queries.folder_tracks(
            s, f"{root}/{(n := rng.randint(1, albums) - 1) // ALBUMS_PER_ARTIST + 1}/{n + 1}"),
        "50 most recently added": lambda s: queries.recently_added(s, 50),
        "search: a common word": lambda s: queries.search(s, rng.choice(frequent)),
        "search: a rare word": lambda s: queries.search(s, rng.choice(rare)),
        "search: two words, the last a prefix": lambda s: queries.search(
            s, f"{rng.choice(frequent)} {rng.choice(rare)[:3]}*"),
        "search: an artist's name": lambda s: queries.search(s, f"artist {rng.randint(1, artists)}"),
    }
    results: dict[str, dict[str, float]] = {}
    with transaction() as session:
        for name, case in cases.items():
            def run(case=case):
                return case(session)

            _timed(run, repeat)  # warm-up
            timings = sorted(_timed(run, repeat))
            results[name] = {"median_ms": round(statistics.median(timings) * 1000, 2),
                             "p95_ms": round(timings[int(0.95 * (len(timings) - 1))] * 1000, 2)}
            print(f"{name:40s} median {results[name]['median_ms']:7.2f} ms  p95 {results[name]['p95_ms']:7.2f} ms")
    plans = _plans(url, root, frequent[0])
    for name, plan in plans.items():
        print(f"\n-- {name}\n{plan}")
    return {"queries": results, "plans": plans}


def _plans(url: str, root: str, word: str) -> dict[str, str]:
    """EXPLAIN ANALYZE of each query, compiled by SQLAlchemy exactly as the functions run them."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from worker_app.db import catalogue_queries as queries

    captured: dict[str, str] = {}
    engine = create_engine(url)
    with Session(engine) as session:
        for name, call in {
            "artist_albums": lambda: queries.artist_albums(session, 1),
            "album_tracks": lambda: queries.album_tracks(session, 1),
            "folder_tracks": lambda: queries.folder_tracks(session, f"{root}/1/1"),
            "recently_added": lambda: queries.recently_added(session, 50),
            "search": lambda: queries.search(session, word),
        }.items():
            statements: list[tuple[str, Any]] = []

            def capture(conn, cursor, statement, parameters, context, executemany, into=statements):
                into.append((statement, parameters))

            from sqlalchemy import event

            event.listen(engine, "before_cursor_execute", capture)
            call()
            event.remove(engine, "before_cursor_execute", capture)
            statement, parameters = statements[-1]
            raw = session.connection().connection.dbapi_connection
            with raw.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
                captured[name] = "\n".join(row[0] for row in cursor.fetchall())
        session.execute(text("SELECT 1"))
    engine.dispose()
    return captured


if __name__ == "__main__":
    main()
