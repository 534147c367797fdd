"""Doubles read back bit for bit through the retrieval service, whatever the server's decimal
rendering of them: packed pages carry each double as two integers (``m * 2**e``,
``data_retrieval.queries.exact_double``) instead of the server's text of it.

Edge values (tiny, huge, subnormal, not exactly decimal) are written into a real database,
then read through the packed pages, plain rows and GetDickeyFuller; and the SQL encoding is
checked on 20,000 random bit patterns on the server itself.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator

import grpc
import pytest

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.queries import exact_double, read_double
from data_storage.samples import analysed, ref
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.mysql import close_quietly, connect
from tests.integration.retrievalutil import ServerThread, TempDatabase
from tests.integration.stackutil import Stack

END = 1_767_225_600
METRIC = "doubles_gauge"
EDGE = [
    0.1,
    1e-300,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    -0.0,
    123456789.123456789,
    5e-324,
    -5e-324,
    3 * 5e-324,
    2.225073858507201e-308,  # the largest subnormal
    2.2250738585072014e-308,  # the smallest normal
    -1.2345678901234567e-300,
    0.30000000000000004,
    4503599627370496.5,
    9007199254740993.0,
    1e22,
    2.0**1023,
    1.0,
    1 / 3,
]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def stored(x: float) -> float:
    """What a DOUBLE column holds for ``x``: MariaDB stores -0.0 as 0.0 (the sign is lost
    in the column, before any read)."""
    return 0.0 if x == 0 else x


@pytest.fixture(scope="module")
def db(stack: Stack) -> Iterator[TempDatabase]:
    base = stack.mysql_settings()
    msg = analysed(ref(METRIC), END, points=61, step_s=60, config=AnalysisConfig(season_s=600))
    with TempDatabase(base, prefix="sla_dbl") as database:
        database.store([msg])
        conn = connect(database.settings, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT ts FROM hp_points ORDER BY ts")
                stamps = [int(r[0]) for r in cur.fetchall()]
                assert len(stamps) >= len(EDGE)
                for ts, x in zip(stamps, EDGE, strict=False):
                    cur.execute(
                        "UPDATE hp_points SET trend = %s, cycle = %s WHERE ts = %s", (x, -x, ts)
                    )
                cur.execute(
                    "UPDATE adf SET statistic = %s, pvalue = %s, crit_1pct = %s, crit_5pct = %s, "
                    "crit_10pct = %s",
                    (1e-300, 5e-324, -1.7976931348623157e308, 0.1, 123456789.123456789),
                )
        finally:
            close_quietly(conn)
        yield database


def test_the_sql_encoding_is_exact_on_the_server(db: TempDatabase) -> None:
    rng = random.Random(20261201)
    values = list(EDGE)
    while len(values) < 20_000:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(x):
            values.append(x)
    conn = connect(db.settings, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE doubles (id INT NOT NULL PRIMARY KEY, x DOUBLE NOT NULL)")
            for i in range(0, len(values), 2000):
                cur.executemany(
                    "INSERT INTO doubles VALUES (%s, %s)",
                    [(i + j, x) for j, x in enumerate(values[i : i + 2000])],
                )
            cur.execute(f"SELECT id, {exact_double('x')} FROM doubles ORDER BY id")  # noqa: S608
            back = {int(i): read_double(*str(text).split(",")) for i, text in cur.fetchall()}
    finally:
        close_quietly(conn)
    wrong = [(x, back[i]) for i, x in enumerate(values) if bits(back[i]) != bits(stored(x))]
    assert not wrong, wrong[:5]


def hp_points(settings_stub: pb_grpc.RetrievalServiceStub) -> list[pb.HodrickPrescottPoint]:
    sel = pb.SeriesSelector(metric=METRIC)
    return [
        p
        for page in settings_stub.ListHodrickPrescott(pb.ListHodrickPrescottRequest(selector=sel))
        for p in page.points
    ]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
def test_points_read_back_bit_for_bit(db: TempDatabase, packed: bool) -> None:
    settings = db.retrieval_settings(retrieval_page_size=7, retrieval_packed_pages=packed)
    with ServerThread(settings) as srv, grpc.insecure_channel(srv.target) as ch:
        points = hp_points(pb_grpc.RetrievalServiceStub(ch))
    got = [(bits(p.trend), bits(p.cycle)) for p in points[: len(EDGE)]]
    assert got == [(bits(stored(x)), bits(stored(-x))) for x in EDGE]


def test_dickey_fuller_reads_back_bit_for_bit(db: TempDatabase) -> None:
    with ServerThread(db.retrieval_settings()) as srv, grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.RetrievalServiceStub(ch)
        adf = stub.GetDickeyFuller(
            pb.GetDickeyFullerRequest(selector=pb.SeriesSelector(metric=METRIC))
        )
    cv = adf.critical_values
    got = [adf.statistic, adf.p_value, cv.pct1, cv.pct5, cv.pct10]
    want = [1e-300, 5e-324, -1.7976931348623157e308, 0.1, 123456789.123456789]
    assert list(map(bits, got)) == list(map(bits, want))
