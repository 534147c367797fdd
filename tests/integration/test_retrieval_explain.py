"""The gRPC ``Explain`` RPC against the real stack: a real data_retrieval server (port 0, its
own database on the stack's MariaDB) reading the stack's Prometheus, whose demo history
(``sla_common.demo``: the demo host's fd spike 50 to 30 min before ``stack.demo_end``) is
explained; the answer is the shared pipeline's (``sla_manager.explain.run``), field for field.
Bad requests are INVALID_ARGUMENT with one short line saying what to fix. The client's
``explain`` command and the menu's ``x`` call it too."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.explain import response_of
from data_retrieval.settings import RetrievalSettings
from sla_common import demo
from sla_common.mysql import MysqlSettings
from sla_common.series import series_key
from sla_manager.explain.run import run_explanation
from tests.integration.retrievalutil import ServerThread, TempDatabase, Terminal, demo_messages
from tests.integration.stackutil import Runner, Stack, wait_until

PY = sys.executable
MINUTE = 60
HOST = '{job="host"}'
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FD_KEY = series_key(demo.FILEFD, {"instance": demo.INSTANCE, "job": demo.JOB})


@pytest.fixture(scope="module")
def end(stack: Stack) -> int:
    if stack.demo_end is None:
        pytest.skip("the stack has no demo history")
    return stack.demo_end


@pytest.fixture(scope="module")
def db(stack: Stack, end: int) -> Iterator[TempDatabase]:
    base = MysqlSettings(
        mysql_host=stack.mysql_host,
        mysql_port=stack.mysql_port,
        mysql_user=stack.mysql_user,
        mysql_password=stack.mysql_password,
    )
    with TempDatabase(base) as database:
        # one stored series, so that the menu lists something (its instance: the default
        # candidates of the menu's explanation)
        database.store(
            demo_messages(seed=42, end=end, runs=(0,), window_s=3600, names=[demo.FILEFD])
        )
        yield database


def _settings(db: TempDatabase, stack: Stack, **overrides: object) -> RetrievalSettings:
    return db.retrieval_settings(**{"prometheus_url": stack.prometheus_url, **overrides})


@pytest.fixture(scope="module")
def server(db: TempDatabase, stack: Stack) -> Iterator[ServerThread]:
    with ServerThread(_settings(db, stack)) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.RetrievalServiceStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.RetrievalServiceStub(ch)


def interval(start: int, end: int) -> pb.Interval:
    return pb.Interval(start=Timestamp(seconds=start), end=Timestamp(seconds=end))


def spike(end: int) -> pb.Interval:
    return interval(end - 50 * MINUTE, end - 30 * MINUTE)


def refused(stub: pb_grpc.RetrievalServiceStub, request: pb.ExplainRequest) -> str:
    with pytest.raises(grpc.RpcError) as info:
        stub.Explain(request, timeout=60)
    err = info.value
    assert err.code() == INVALID, err.details()
    details: str = err.details() or ""
    assert "\n" not in details and 0 < len(details) <= 300, details
    return details


def test_the_fd_spike_is_explained_as_the_pipeline_explains_it(
    stub: pb_grpc.RetrievalServiceStub, server: ServerThread, end: int
) -> None:
    answer = stub.Explain(pb.ExplainRequest(selector=HOST, anomalous=[spike(end)]), timeout=60)
    assert answer.step_seconds == 15
    assert answer.candidates == len(demo.generate(end=end, hours=1))
    assert answer.reference.start.seconds == end - 50 * MINUTE - 7 * 3600
    assert answer.reference.end.seconds == end - 50 * MINUTE - 3600
    # as over REST: the fd series ranks first or second (user CPU moves with the spike),
    # separating perfectly, above its reference, with a predicate of the explanation
    keys = [s.series.key for s in answer.ranked]
    assert FD_KEY in keys[:2], keys[:3]
    fd = answer.ranked[keys.index(FD_KEY)]
    assert fd.distance == pytest.approx(1.0) and fd.direction == "above"
    assert fd.series.metric == demo.FILEFD
    assert dict(fd.series.labels) == {"instance": demo.INSTANCE, "job": demo.JOB}
    assert fd.anomalous.min > demo.FD_THRESHOLD > fd.reference.max
    assert 1 <= len(answer.explanation) <= 3
    assert [p.text for p in answer.predicates] == list(answer.explanation)
    assert {"fetch", "rank", "total"} <= set(answer.timings_ms)

    # the same code answered: the pipeline run here gives the same message, timings aside
    settings = server.settings
    with settings.prometheus_client() as prometheus:
        direct = run_explanation(
            prometheus,
            settings,
            selector=HOST,
            anomalous=[(end - 50 * MINUTE, end - 30 * MINUTE)],
            reference=None,
            step=None,
            max_ranked=20,
        ).answer
    expected = response_of(direct)
    for message in (expected, answer):
        message.ClearField("timings_ms")
    assert answer == expected
    wait_until(
        lambda: server.value("sla_retrieval_requests_total", method="Explain", code="OK") >= 1,
        timeout=10,
        what="the call counted",
    )


def test_bad_requests_are_invalid_argument_saying_what_to_fix(
    stub: pb_grpc.RetrievalServiceStub, server: ServerThread, end: int
) -> None:
    cases = [
        (pb.ExplainRequest(anomalous=[spike(end)]), "selector: give a PromQL selector"),
        (pb.ExplainRequest(selector=HOST), "anomalous: give at least one interval"),
        (
            pb.ExplainRequest(selector=HOST, anomalous=[interval(end, end - 60)]),
            "anomalous[0]: start must be before end",
        ),
        (
            pb.ExplainRequest(selector=HOST, anomalous=[pb.Interval(start=Timestamp(seconds=end))]),
            "anomalous[0]: set both start and end",
        ),
        (
            pb.ExplainRequest(
                selector=HOST,
                anomalous=[spike(end)],
                reference=interval(end - 40 * MINUTE, end - 20 * MINUTE),
            ),
            "the reference overlaps an anomalous interval",
        ),
        (
            pb.ExplainRequest(selector=HOST, anomalous=[spike(end)], step_seconds=0.5),
            "step_seconds: Input should be greater than or equal to 1",
        ),
        (
            pb.ExplainRequest(selector=HOST, anomalous=[spike(end)], max_ranked=201),
            "max_ranked: Input should be less than or equal to 200",
        ),
        (
            pb.ExplainRequest(selector=HOST, anomalous=[spike(end)], step_seconds=1),
            "step_seconds: ",  # too many points per series at 1 s
        ),
        (  # an interval where nothing was stored yet: no series there
            pb.ExplainRequest(selector=HOST, anomalous=[interval(1_000_000, 1_000_600)]),
            "selector: the selector matches no series at the end of the intervals",
        ),
        (
            pb.ExplainRequest(selector='{job="no-such-job"}', anomalous=[spike(end)]),
            "selector: the selector matches no series",
        ),
        (  # Prometheus' own words for a query it cannot parse
            pb.ExplainRequest(selector="{job=", anomalous=[spike(end)]),
            "selector: Prometheus: ",
        ),
    ]
    for request, expected in cases:
        assert refused(stub, request).startswith(expected), (request, expected)
    # counted once its handler has finished (which may be just after the client heard)
    wait_until(
        lambda: (
            server.value("sla_retrieval_requests_total", method="Explain", code=INVALID.name)
            >= len(cases)
        ),
        timeout=10,
        what="every refusal counted",
    )


def test_the_series_cap_is_stated(db: TempDatabase, stack: Stack, end: int) -> None:
    with (
        ServerThread(_settings(db, stack, sla_explain_max_series=5)) as srv,
        grpc.insecure_channel(srv.target) as ch,
    ):
        details = refused(
            pb_grpc.RetrievalServiceStub(ch),
            pb.ExplainRequest(selector=HOST, anomalous=[spike(end)]),
        )
    assert "more than the cap of 5 (SLA_EXPLAIN_MAX_SERIES)" in details, details


def test_prometheus_down_is_unavailable(db: TempDatabase, stack: Stack, end: int) -> None:
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    with (
        ServerThread(_settings(db, stack, prometheus_url=closed)) as srv,
        grpc.insecure_channel(srv.target) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        pb_grpc.RetrievalServiceStub(ch).Explain(
            pb.ExplainRequest(selector=HOST, anomalous=[spike(end)]), timeout=60
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert (info.value.details() or "").startswith("Prometheus: ")


def client_env(server: ServerThread) -> dict[str, str]:
    return {
        **os.environ,
        "GRPC_TARGET": server.target,
        "GRPC_API_TOKEN": "",
        "PYTHONUNBUFFERED": "1",
    }


def test_the_client_command_prints_the_explanation(
    server: ServerThread, run: Runner, end: int
) -> None:
    base = [PY, "-m", "data_retrieval.client", "explain", "--selector", HOST]
    interval_args = ["--anomalous", str(end - 50 * MINUTE), str(end - 30 * MINUTE)]
    proc = run([*base, *interval_args, "--json"], timeout=60, env=client_env(server))
    assert proc.returncode == 0, proc.stdout
    doc = json.loads(proc.stdout)
    assert FD_KEY in [s["series"]["key"] for s in doc["ranked"][:2]]
    assert doc["explanation"] and doc["candidates"] == len(demo.generate(end=end, hours=1))

    proc = run([*base, *interval_args], timeout=60, env=client_env(server))
    assert proc.returncode == 0, proc.stdout
    assert "Explanation of " in proc.stdout and "candidate series" in proc.stdout
    assert FD_KEY in proc.stdout and "distance" in proc.stdout

    bad = ["--anomalous", str(end), str(end - 60)]
    proc = run([*base, *bad], timeout=60, env=client_env(server))
    assert proc.returncode == 1
    assert "INVALID_ARGUMENT: anomalous[0]: start must be before end" in proc.stdout


def test_the_menu_explains_an_interval(server: ServerThread, end: int) -> None:
    term = Terminal([PY, "-m", "data_retrieval.client"], env=client_env(server))
    try:
        term.expect("x = explain an interval, q = quit > ")
        term.send("x")
        term.expect(f'Candidates, a PromQL selector (Enter: {{instance="{demo.INSTANCE}"}}) > ')
        term.send("")  # the default: every series of the stored series' instance
        term.expect("Anomalous from (e.g. -50m) > ")
        term.send("yesterday")
        term.expect("'yesterday' is not a choice")
        term.send(str(end - 50 * MINUTE))
        term.expect("until (Enter: now) > ")
        term.send(str(end - 30 * MINUTE))
        shown = term.expect("Pick a metric", timeout=60)
        assert "Explanation of " in shown and FD_KEY in shown, shown
        term.send("q")
        assert term.wait() == 0
        assert "Traceback" not in term.output
    finally:
        term.close()
