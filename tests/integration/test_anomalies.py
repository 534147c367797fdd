"""Anomaly records (topic ``anomaly``) against the real broker and MariaDB: stored once by
``python -m data_storage`` (redelivery -> the same rows), bad ones dead-lettered with their
reason, then served by sla_manager's ``GET /anomalies`` and data_retrieval's
``ListAnomalies`` with their filters and paging."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.client.__main__ import main as client_main
from data_retrieval.settings import RetrievalSettings
from data_storage.anomalies import AnomalyWriter
from data_storage.settings import StorageSettings
from sla_common import demo
from sla_common.anomalies import AnomalyRecord
from sla_common.mysql import drop_database, series_key_hash
from sla_common.mysql_startup import wait_and_migrate
from sla_common.series import series_key
from tests.integration.retrievalutil import ServerThread as RetrievalServerThread
from tests.integration.slautil import ServerThread, sla_settings, stack_database
from tests.integration.stackutil import Stack, wait_until
from tests.integration.test_storage import (
    Service,
    consume_all,
    count,
    new_topic,
    produce,
    settings_for,
    sql,
)

DETECTORS = ("sigma", "iforest")
TOKEN = "anomaly-test-token-8d1e"


@pytest.fixture
def db(stack: Stack) -> Iterator[StorageSettings]:
    s = settings_for(stack, f"anomaly_test_{uuid.uuid4().hex[:10]}")
    wait_and_migrate(s, deadline_s=30)
    yield s
    drop_database(s)


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path)
    yield svc
    for s in svc.started:
        s.stop()


STATUSES = ("SAFE", "WARN", "ERROR", "LEARNING")


def make_record(
    metric: str, labels: dict[str, str], start: float, detector: str, status: str, **over: Any
) -> AnomalyRecord:
    learning = status == "LEARNING"
    doc: dict[str, Any] = {
        "detector": {"name": detector, "version": "1"},
        "series": {"key": series_key(metric, labels), "metric": metric, "labels": labels},
        "window": {"start": start, "end": start + 15},
        "count": 3,
        "mean": 12.0,
        "std": 1.5,
        "normal": {
            "mean": 0.0 if learning else 10.0,
            "std": 0.0 if learning else 1.0,
            "source": "none" if learning else "learned",
        },
        "deviation": 0.0 if learning else {"SAFE": 0.5, "WARN": 1.5, "ERROR": 2.5}[status],
        "status": status,
    }
    doc.update(over)
    return AnomalyRecord.model_validate(doc)


def sample_records(t0: float) -> list[AnomalyRecord]:
    """2 series × 2 detectors × 6 windows of 15 s, statuses cycling."""
    out = []
    for host in ("a", "b"):
        for d, detector in enumerate(DETECTORS):
            for i in range(6):
                status = STATUSES[(i + d) % len(STATUSES)]
                out.append(make_record("cpu_usage", {"host": host}, t0 + 15 * i, detector, status))
    return out


def anomaly_service(service: Service, db: StorageSettings, topic: str, **extra: str) -> Any:
    return service(
        db,
        f"{topic}-analyses",
        KAFKA_ANOMALY_TOPIC=topic,
        KAFKA_ANOMALY_DLQ_TOPIC=f"{topic}.dlq",
        STORAGE_STREAMS="anomaly",
        **extra,
    )


def wait_anomalies_stored(svc: Any, n: int) -> None:
    wait_until(
        lambda: svc.metric("sla_storage_anomaly_messages_stored_total") >= n or not svc.alive(),
        timeout=90,
        what=f"{n} anomaly records stored; log:\n{svc.output()[-3000:]}",
    )
    assert svc.alive(), svc.output()[-3000:]


def stored(db: StorageSettings) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    rows = sql(
        db,
        "SELECT series_key, detector, window_start_ms, window_end_ms, status, deviation, "
        "sample_count, normal_source, JSON_EXTRACT(labels, '$.host'), normal_period_s "
        "FROM anomalies",
    )
    return {(str(r[0]), str(r[1]), int(r[2])): r[3:] for r in rows}


@pytest.mark.timeout(180)
def test_records_are_stored_once_and_bad_ones_dead_lettered(
    stack: Stack,
    db: StorageSettings,
    service: Service,
) -> None:
    t0 = float(int(time.time()) // 60 * 60 - 3600)
    good = sample_records(t0)
    # which normal judged (schema version 2): the plain one, a daily cycle; and a version 1
    # record, which does not say (NULL)
    good[1] = good[1].model_copy(
        update={"normal": good[1].normal.model_copy(update={"period_s": 0})}
    )
    good[2] = good[2].model_copy(
        update={"normal": good[2].normal.model_copy(update={"period_s": 86_400})}
    )
    good[3] = good[3].model_copy(update={"schema_version": 1})
    rec = good[0]
    key = rec.kafka_key()
    doc = json.loads(rec.to_bytes())
    bad: list[tuple[str, bytes | None, bytes | None]] = [
        ("invalid_json", key, b"{not json"),
        ("empty", key, b""),
        ("unknown_schema_version", key, json.dumps({**doc, "schema_version": 7}).encode()),
        ("invalid", key, json.dumps({**doc, "status": "OK"}).encode()),
        ("key_mismatch", b"another key", rec.to_bytes()),
        (
            "future_timestamp",
            key,
            make_record("cpu_usage", {"host": "a"}, time.time() + 3600, "sigma", "SAFE").to_bytes(),
        ),
    ]
    records: list[tuple[bytes | None, bytes | None]] = [(r.kafka_key(), r.to_bytes()) for r in good]
    records += [(k, v) for _, k, v in bad]
    topic = new_topic(stack.kafka_bootstrap, "anomaly")
    produce(stack.kafka_bootstrap, topic, records)

    svc = anomaly_service(service, db, topic)
    wait_anomalies_stored(svc, len(good))
    rows = stored(db)
    assert len(rows) == len(good) == count(db, "anomalies")
    for r in good:
        k = (r.series.key, r.detector.name, round(r.window.start * 1000))
        end_ms, status, deviation, n, source, host, period_s = rows[k]
        assert (end_ms, status, deviation, n, source, period_s) == (
            round(r.window.end * 1000),
            r.status,
            r.deviation,
            r.count,
            r.normal.source,
            r.normal.period_s,
        )
        assert json.loads(host) == r.series.labels["host"]

    letters = consume_all(stack.kafka_bootstrap, f"{topic}.dlq", expect=len(bad), timeout=60)
    reasons = sorted(dict(x.headers)["dlq.reason"].decode() for x in letters)
    assert reasons == sorted(b[0] for b in bad)

    # Redelivery (the same records again) and one window judged again: no row added, the
    # re-judged window holds its new status.
    rejudged = make_record("cpu_usage", {"host": "a"}, t0, "sigma", "ERROR", deviation=3.0)
    produce(stack.kafka_bootstrap, topic, [*records[: len(good)], (key, rejudged.to_bytes())])
    wait_anomalies_stored(svc, 2 * len(good) + 1)
    again = stored(db)
    assert len(again) == len(good) == count(db, "anomalies")
    assert again[(rec.series.key, "sigma", round(t0 * 1000))][1:3] == ("ERROR", 3.0)


# --------------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def served(stack: Stack) -> Iterator[tuple[str, list[AnomalyRecord]]]:
    """A database holding sample records (written by data_storage's sink) and their list:
    2 series × 2 detectors × 6 windows, and 2 windows of a demo host series."""
    t0 = 1_700_000_000.0
    records = sample_records(t0)
    fd = make_record(demo.FILEFD, dict(demo.BASE_LABELS), t0, "sigma", "WARN")
    fd = fd.model_copy(update={"normal": fd.normal.model_copy(update={"period_s": 86_400})})
    records += [fd, make_record(demo.FILEFD, dict(demo.BASE_LABELS), t0 + 15, "sigma", "ERROR")]
    records.append(make_record(demo.FILEFD, dict(demo.BASE_LABELS), t0, "iforest", "SAFE"))
    with stack_database(stack) as name:
        writer = AnomalyWriter(stack.mysql_settings(name))
        try:
            writer.write(records)
        finally:
            writer.close()
        yield name, records


@pytest.fixture(scope="module")
def client(stack: Stack, served: tuple[str, list[AnomalyRecord]]) -> Iterator[httpx.Client]:
    settings = sla_settings(stack, served[0], TOKEN)
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        yield c


def _expected(
    records: list[AnomalyRecord], keep: Callable[[AnomalyRecord], bool]
) -> list[tuple[str, str, float]]:
    """(series key, detector, window start) of the kept records, newest window first (ties:
    the newest row id first; one batch inserts its rows in key order)."""
    kept = [r for r in records if keep(r)]
    kept.sort(
        key=lambda r: (r.window.start, series_key_hash(r.series.key), r.detector.name),
        reverse=True,
    )
    return [(r.series.key, r.detector.name, r.window.start) for r in kept]


def _pages(client: httpx.Client, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        query = {**params, "limit": limit, **({"after": after} if after else {})}
        r = client.get("/anomalies", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page) <= limit
        items += page
        if len(page) < limit:
            return items
        after = page[-1]["cursor"]
    raise AssertionError("more than 100 pages")


def _ids(items: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(i["series_key"], i["detector"], i["window_start"]) for i in items]


def test_rest_lists_anomalies_with_filters_and_paging(
    client: httpx.Client, served: tuple[str, list[AnomalyRecord]]
) -> None:
    _, records = served
    t0 = 1_700_000_000.0
    everything = _pages(client, 5)
    assert _ids(everything) == _expected(records, lambda r: True)
    first = everything[-1]
    assert first["status"] in STATUSES and first["labels"] and first["metric"]
    # which normal judged: as the record said (a daily cycle for one), null where it did not
    periods = {
        (i["series_key"], i["detector"], i["window_start"]): i["normal_period_s"]
        for i in everything
    }
    assert periods == {
        (r.series.key, r.detector.name, r.window.start): r.normal.period_s for r in records
    }
    assert sorted(p for p in periods.values() if p is not None) == [86_400]

    host_a = 'cpu_usage{host="a"}'
    cases: list[tuple[dict[str, Any], Callable[[AnomalyRecord], bool]]] = [
        ({"selector": host_a}, lambda r: r.series.labels.get("host") == "a"),
        ({"selector": "cpu_usage"}, lambda r: r.series.metric == "cpu_usage"),
        (  # labels that are a part of the series' own: matched by containment
            {"selector": f'{demo.FILEFD}{{job="{demo.JOB}"}}'},
            lambda r: r.series.metric == demo.FILEFD,
        ),
        (
            {"series_key": series_key("cpu_usage", {"host": "b"})},
            lambda r: r.series.labels.get("host") == "b",
        ),
        ({"detector": "iforest"}, lambda r: r.detector.name == "iforest"),
        ({"status": ["WARN", "ERROR"]}, lambda r: r.status in ("WARN", "ERROR")),
        (
            {"start": t0 + 15, "end": t0 + 60, "detector": "sigma", "selector": host_a},
            lambda r: (
                t0 + 15 <= r.window.start < t0 + 60
                and r.detector.name == "sigma"
                and r.series.labels.get("host") == "a"
            ),
        ),
    ]
    for params, keep in cases:
        want = _expected(records, keep)
        assert want, params
        assert _ids(_pages(client, 3, **params)) == want, params


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"selector": 'cpu_usage{host=~"a.*"}'}, "selector"),
        ({"selector": "rate(cpu_usage[5m])"}, "selector"),
        ({"status": "OK"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": "nonsense"}, "after"),
        ({"detector": "no spaces"}, "detector"),
        ({"start": 10, "end": 5}, None),
        ({"selector": "up", "series_key": "up"}, None),
    ],
)
def test_rest_refuses_bad_filters_with_422(
    client: httpx.Client, params: dict[str, Any], field: str | None
) -> None:
    r = client.get("/anomalies", params=params)
    assert r.status_code == 422, r.text
    if field is not None:
        assert field in r.text


def test_an_sli_status_shows_its_series_latest_anomaly_per_detector(
    stack: Stack, client: httpx.Client
) -> None:
    if stack.demo_end is None:
        pytest.skip("the stack has no demo history")
    body = {"name": "fd-anomalies", "selector": f'{demo.FILEFD}{{job="host"}}', "max": 1e12}
    r = client.post("/slis", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    status = client.get("/slis/fd-anomalies/status", params={"time": stack.demo_end})
    assert status.status_code == 200, status.text
    (series,) = status.json()["series"]
    t0 = 1_700_000_000.0
    assert series["anomalies"] == {
        "iforest": {"status": "SAFE", "deviation": 0.5, "window_start": t0, "window_end": t0 + 15},
        "sigma": {
            "status": "ERROR",
            "deviation": 2.5,
            "window_start": t0 + 15,
            "window_end": t0 + 30,
        },
    }


# --------------------------------------------------------------------------- gRPC

GRPC_TOKEN = "anomaly-grpc-token-51c2"
BEARER = (("authorization", f"Bearer {GRPC_TOKEN}"),)


@pytest.fixture(scope="module")
def stub_server(stack: Stack, served: tuple[str, list[AnomalyRecord]]) -> Iterator[str]:
    """data_retrieval on a free port over the served database (pages of 4); its target."""
    base = stack.mysql_settings(served[0])
    fields = {k: v for k, v in base.model_dump().items() if k in RetrievalSettings.model_fields}
    fields.update(grpc_host="127.0.0.1", grpc_port=0, http_port=0, grpc_api_token=GRPC_TOKEN)
    fields.update(grpc_tls_cert_file=None, grpc_tls_key_file=None, retrieval_page_size=4)
    with RetrievalServerThread(RetrievalSettings(**fields)) as srv:
        yield srv.target


@pytest.fixture(scope="module")
def stub(stub_server: str) -> Iterator[pb_grpc.RetrievalServiceStub]:
    with grpc.insecure_channel(stub_server) as ch:
        yield pb_grpc.RetrievalServiceStub(ch)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(round(seconds * 1000))
    return ts


def _grpc_all(
    stub: pb_grpc.RetrievalServiceStub, limit: int, **fields: Any
) -> tuple[list[pb.Anomaly], int]:
    """Every anomaly of the request, ``limit`` per call, following next_page_token; and the
    number of calls it took."""
    out: list[pb.Anomaly] = []
    token, calls = "", 0
    while True:
        request = pb.ListAnomaliesRequest(limit=limit, page_token=token, **fields)
        calls += 1
        pages = list(stub.ListAnomalies(request, metadata=BEARER, timeout=30))
        for page in pages:
            out += page.anomalies
        token = pages[-1].next_page_token if pages else ""
        if not token:
            return out, calls


def _grpc_ids(items: list[pb.Anomaly]) -> list[tuple[str, str, float]]:
    return [(a.series.key, a.detector, a.window_start.ToMilliseconds() / 1000) for a in items]


def test_grpc_streams_anomalies_with_filters_and_paging(
    stub: pb_grpc.RetrievalServiceStub, served: tuple[str, list[AnomalyRecord]]
) -> None:
    _, records = served
    t0 = 1_700_000_000.0
    everything, calls = _grpc_all(stub, 0)  # the server's cap: one call, pages of 4
    assert calls == 1
    assert _grpc_ids(everything) == _expected(records, lambda r: True)
    a = everything[0]
    assert a.status != pb.ANOMALY_STATUS_UNSPECIFIED and a.series.labels and a.normal_source
    assert a.window_end.ToMilliseconds() - a.window_start.ToMilliseconds() == 15_000
    periods = [
        (x.series.key, x.normal_period_seconds)
        for x in everything
        if x.HasField("normal_period_seconds")
    ]
    assert periods == [(series_key(demo.FILEFD, dict(demo.BASE_LABELS)), 86_400)]

    paged, calls = _grpc_all(stub, 5)
    assert _grpc_ids(paged) == _grpc_ids(everything)
    assert calls == -(-len(everything) // 5)  # the last page ends the stream: no empty call

    cases: list[tuple[dict[str, Any], Callable[[AnomalyRecord], bool]]] = [
        (
            {"selector": pb.SeriesSelector(metric="cpu_usage", labels={"host": "a"})},
            lambda r: r.series.labels.get("host") == "a",
        ),
        (
            {"selector": pb.SeriesSelector(series_key=series_key("cpu_usage", {"host": "b"}))},
            lambda r: r.series.labels.get("host") == "b",
        ),
        ({"detectors": ["iforest"]}, lambda r: r.detector.name == "iforest"),
        (
            {"statuses": [pb.ANOMALY_STATUS_ERROR, pb.ANOMALY_STATUS_LEARNING]},
            lambda r: r.status in ("ERROR", "LEARNING"),
        ),
        (
            {"time_range": pb.TimeRange(start=_ts(t0 + 15), end=_ts(t0 + 60))},
            lambda r: t0 + 15 <= r.window.start < t0 + 60,
        ),
    ]
    for fields, keep in cases:
        want = _expected(records, keep)
        assert want, fields
        got, _ = _grpc_all(stub, 3, **fields)
        assert _grpc_ids(got) == want, fields


@pytest.mark.parametrize(
    "fields",
    [
        {"detectors": ["has space"]},
        {"statuses": [pb.ANOMALY_STATUS_UNSPECIFIED]},
        {"statuses": [99]},
        {"limit": -1},
        {"page_token": "forged"},
        {"time_range": pb.TimeRange(start=_ts(10), end=_ts(5))},
        {"selector": pb.SeriesSelector(labels={"host": "a"})},
    ],
)
def test_grpc_refuses_bad_requests_with_invalid_argument(
    stub: pb_grpc.RetrievalServiceStub, fields: dict[str, Any]
) -> None:
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ListAnomalies(pb.ListAnomaliesRequest(**fields), metadata=BEARER, timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()


def test_grpc_needs_the_token(stub: pb_grpc.RetrievalServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ListAnomalies(pb.ListAnomaliesRequest(), timeout=30))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_page_token_of_another_request_is_refused(stub: pb_grpc.RetrievalServiceStub) -> None:
    pages = list(stub.ListAnomalies(pb.ListAnomaliesRequest(limit=2), metadata=BEARER, timeout=30))
    token = pages[-1].next_page_token
    assert token
    other = pb.ListAnomaliesRequest(limit=2, page_token=token, detectors=["sigma"])
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ListAnomalies(other, metadata=BEARER, timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_retention_purge_deletes_old_windows_only(db: StorageSettings) -> None:
    t0 = 1_700_000_000.0
    records = [
        make_record("cpu_usage", {"host": "p"}, t0 + 15 * i, "sigma", "SAFE") for i in range(7)
    ]
    writer = AnomalyWriter(db)
    try:
        writer.write(records)
        # Cut-off at t0 + 45: the windows starting at t0, +15, +30 go, in batches of 2.
        assert writer.purge(int(t0) + 45, batch_rows=2, budget_s=10) == {"anomalies": 3}
        assert writer.purge(int(t0) + 45, batch_rows=2, budget_s=10) == {}
    finally:
        writer.close()
    starts = sorted(int(r[0]) for r in sql(db, "SELECT window_start_ms FROM anomalies"))
    assert starts == [round((t0 + 15 * i) * 1000) for i in range(3, 7)]


def test_the_client_lists_anomalies(
    stub_server: str, served: tuple[str, list[AnomalyRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRPC_API_TOKEN", GRPC_TOKEN)
    monkeypatch.setenv("GRPC_TLS", "false")
    monkeypatch.delenv("GRPC_TLS_CA_FILE", raising=False)
    out: list[str] = []
    argv = ["--target", stub_server, "anomalies", "--metric", "cpu_usage", "--label", "host=a"]
    assert (
        client_main([*argv, "--status", "ERROR", "--detector", "sigma", "--json"], out.append) == 0
    )
    docs = json.loads("".join(out))
    want = _expected(
        served[1],
        lambda r: (
            r.series.labels.get("host") == "a"
            and r.status == "ERROR"
            and r.detector.name == "sigma"
        ),
    )
    assert [(d["series"]["key"], d["detector"]) for d in docs] == [(k, d) for k, d, _ in want]
    assert all(d["status"] == "ANOMALY_STATUS_ERROR" for d in docs)
    out.clear()
    assert client_main([*argv, "--limit", "2"], out.append) == 0
    table = "".join(out).splitlines()
    assert table[0].split()[:5] == ["window", "start", "(UTC)", "status", "deviation"]
    assert len(table) == 2 + 2
