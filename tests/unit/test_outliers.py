"""The autoencoder outlier model (issue 17): rescaling and windows, the k-sigma rule,
serialisation, the executor's fallback, bad requests and model reloads (no stack)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from anomaly_detection.outliers.executor import create_app
from anomaly_detection.outliers.model import (
    ModelParams,
    OutlierModel,
    forward,
    ksigma,
    train,
    zscores,
)
from anomaly_detection.outliers.store import MemoryStore, ModelCache
from anomaly_detection.outliers.windowing import (
    METHODS,
    Scaler,
    fill_gaps,
    point_windows,
    unwindow,
    windows,
)
from sla_common.anomalies import AnomalyRecord
from sla_common.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusUnavailable,
    RangeSeries,
)
from sla_common.series import series_key

STEP = 60.0
T0 = 1_700_000_000.0


def _series(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = T0 + STEP * np.arange(n)
    v = 5000 + 300 * np.sin(2 * np.pi * np.arange(n) / 180) + rng.normal(0, 10, n)
    return t, v


FAST = ModelParams(backend="mlp", epochs=30)


@pytest.mark.parametrize("method", METHODS)
def test_rescaling_round_trips(method: str) -> None:
    x = np.array([0.0, 1.0, 5000.0, -3.5, 1e6, 42.25])
    s = Scaler.fit(method, x)  # type: ignore[arg-type]
    y = s.transform(x)
    np.testing.assert_allclose(s.inverse(y), x, rtol=1e-9, atol=1e-9)
    assert Scaler.from_dict(s.to_dict()) == s


def test_tanhlog_is_the_references_transform() -> None:
    x = np.array([0.0, 10.0, 1e4])
    np.testing.assert_allclose(Scaler.fit("tanhlog", x).transform(x), np.tanh(np.log1p(x) / 32))


def test_standard_and_minmax_use_the_training_values() -> None:
    x = np.array([2.0, 4.0, 6.0])
    assert Scaler.fit("minmax", x).transform(np.array([2.0, 6.0])).tolist() == [0.0, 1.0]
    st = Scaler.fit("standard", x)
    assert st.a == 4.0 and st.b == pytest.approx(np.std(x))
    # A constant series does not divide by zero.
    assert Scaler.fit("standard", np.ones(5)).b == 1.0


def test_windows_and_back() -> None:
    x = np.arange(10.0)
    rows = windows(x, 4)
    assert rows.shape == (7, 4)
    assert rows[0].tolist() == [0, 1, 2, 3] and rows[-1].tolist() == [6, 7, 8, 9]
    np.testing.assert_array_equal(unwindow(rows, 10), x)
    row, pos = point_windows(10, 4)
    # Each point is judged in the window ending at it; the first 3 in the first window.
    assert row.tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    assert pos.tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert windows(x[:3], 4).shape == (0, 4)


def test_gaps_are_filled_from_the_past() -> None:
    x = np.array([np.nan, 1.0, np.nan, 3.0, np.nan])
    assert fill_gaps(x).tolist() == [1.0, 1.0, 1.0, 3.0, 3.0]
    assert fill_gaps(np.array([np.nan, np.nan])).tolist() == [0.0, 0.0]


def test_ksigma_rule() -> None:
    err = np.array([0.1, 0.5, 0.7, 0.71])
    # mean 0.1, std 0.15, k 4: the limit is 0.7, exclusive.
    assert ksigma(err, 0.1, 0.15, 4.0).tolist() == [False, False, False, True]
    np.testing.assert_allclose(zscores(err, 0.1, 0.15), [0.0, 8 / 3, 4.0, 4.0 + 0.01 / 0.15])


def test_a_trained_model_flags_a_spike_and_not_its_training_data() -> None:
    t, v = _series()
    model = train(t[:900], v[:900], FAST, "fd")
    quiet = model.score(v[900:])
    assert quiet.outlier.mean() < 0.01  # Gaussian noise: P(|e| > k-sigma limit) is about 0.2 %
    spiked = v[900:].copy()
    spiked[150] += 2000
    s = model.score(spiked)
    assert s.outlier[150]
    assert s.score[150] > model.meta.params.k
    # The reconstruction is in the series' units, close to the values where nothing happens.
    assert np.median(np.abs(quiet.expected - v[900:])) < 30


def test_serialisation_keeps_weights_and_metadata() -> None:
    t, v = _series(300)
    model = train(t, v, dataclasses.replace(FAST, rescale="tanhlog", k=3.5), 'm{a="b"}')
    back = OutlierModel.from_bytes(model.to_bytes())
    assert back.meta == model.meta
    m = back.meta
    assert m.series == 'm{a="b"}' and m.params.k == 3.5 and m.scaler.method == "tanhlog"
    assert (m.train_start, m.train_end, m.step) == (t[0], t[-1], STEP)
    assert m.version > 0 and m.error_std > 0 and m.val_loss is not None and m.val_loss > 0
    for a, b in zip(back.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.score(v).expected, model.score(v).expected)


def test_a_model_of_another_format_is_refused() -> None:
    t, v = _series(100)
    model = train(t, v, FAST, "x")
    bad = dataclasses.replace(model, meta=dataclasses.replace(model.meta, format=99))
    with pytest.raises(ValueError, match="format"):
        OutlierModel.from_bytes(bad.to_bytes())


def test_keras_weights_give_keras_own_prediction() -> None:
    """The executor's numpy forward pass is the Keras network (JAX backend, 2 epochs)."""
    import keras  # noqa: PLC0415

    t, v = _series(200)
    model = train(t, v, ModelParams(backend="keras", epochs=2, window=16, layers=(8, 4)), "k")
    assert keras.backend.backend() == "jax"
    layers: list[Any] = [keras.Input((16,))]
    layers += [keras.layers.Dense(u, activation="tanh") for u in (8, 4, 8)]
    net = keras.Sequential([*layers, keras.layers.Dense(16)])
    net.set_weights([w.astype(np.float32) for w in model.weights])
    rows = windows(model.meta.scaler.transform(v), 16)
    np.testing.assert_allclose(
        net.predict(rows, verbose=0), forward(model.weights, rows), rtol=1e-4, atol=1e-5
    )
    assert model.meta.val_loss is not None


def test_training_is_reproducible() -> None:
    """The same data and parameters (seed included) train the same Keras weights, bit for
    bit, even with other training in between; another seed gives other weights."""
    t, v = _series(300)
    p = ModelParams(backend="keras", epochs=2, window=16, layers=(8, 4), seed=7)
    a = train(t, v, p, "k")
    train(t, v, dataclasses.replace(p, seed=8), "k")  # moves every global random state
    b = train(t, v, p, "k")
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(x, y)
    assert (a.meta.val_loss, a.meta.error_mean, a.meta.error_std) == (
        b.meta.val_loss,
        b.meta.error_mean,
        b.meta.error_std,
    )
    other = train(t, v, dataclasses.replace(p, seed=8), "k")
    assert not np.array_equal(other.weights[0], a.weights[0])


def test_the_seed_is_a_setting() -> None:
    from anomaly_detection.outliers.settings import OutlierSettings  # noqa: PLC0415
    from anomaly_detection.outliers.trainer import params_of  # noqa: PLC0415

    assert params_of(OutlierSettings()).seed == 0
    assert params_of(OutlierSettings(outliers_seed=123)).seed == 123
    with pytest.raises(ValueError, match="outliers_seed"):
        OutlierSettings(outliers_seed=-1)


def test_the_store_keeps_only_newer_versions() -> None:
    t, v = _series(100)
    store = MemoryStore()
    old = train(t, v, FAST, "s")
    new = dataclasses.replace(old, meta=dataclasses.replace(old.meta, version=old.meta.version + 1))
    assert store.put(new) and not store.put(old) and not store.put(new)
    got = store.get("s")
    assert got is not None and got.meta.version == new.meta.version
    assert store.versions(["s", "t"]) == {"s": new.meta.version}


class FakeProm(PrometheusClient):
    """Answers query_range from a dict (or raises what it is given)."""

    def __init__(self, series: list[RangeSeries], fail: Exception | None = None) -> None:
        super().__init__("http://127.0.0.1:1")
        self.held, self.fail = series, fail

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        if self.fail is not None:
            raise self.fail
        return [
            RangeSeries(s.labels, s.timestamps[m], s.values[m])
            for s in self.held
            for m in [(s.timestamps >= start) & (s.timestamps <= end)]
        ]


LABELS = {"__name__": "node_filefd_allocated", "instance": "h:9100"}
KEY = series_key("node_filefd_allocated", LABELS)


def _client(prom: PrometheusClient, store: MemoryStore) -> TestClient:
    return TestClient(create_app(prom, ModelCache(store), max_series=5, max_points=2000))


def _body(start: float, end: float, **kw: Any) -> dict[str, Any]:
    return {"selector": "node_filefd_allocated", "start": start, "end": end, "step": STEP} | kw


def test_calculate_with_a_model_and_without_one() -> None:
    t, v = _series()
    v = v.copy()
    v[1100] += 3000
    prom = FakeProm([RangeSeries(LABELS, t, v)])
    store = MemoryStore()
    client = _client(prom, store)
    body = _body(t[1000], t[-1])

    r = client.post("/calculate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success"
    (summary,) = out["series"]
    assert summary["model"] == "iforest" and summary["fallback"] is True
    assert "no model" in summary["fallback_reason"]
    assert any(a["timestamp"] == t[1100] for a in out["anomalies"])

    store.put(train(t[:900], v[:900], FAST, KEY))
    out = client.post("/calculate", json=body).json()
    (summary,) = out["series"]
    assert summary["model"] == "autoencoder" and summary["fallback"] is False
    assert len(out["prediction"]) == 200
    flagged = [a for a in out["anomalies"] if a["timestamp"] == t[1100]]
    assert flagged and flagged[0]["value"] == pytest.approx(v[1100])
    assert abs(flagged[0]["expected"] - v[1100]) > 1000 and flagged[0]["score"] > 4
    assert set(out["anomalies"][0]) == {"series", "timestamp", "value", "expected", "score"}


def test_a_newer_model_is_picked_up() -> None:
    t, v = _series()
    store = MemoryStore()
    cache = ModelCache(store)
    first = train(t[:600], v[:600], FAST, KEY)
    store.put(first)
    assert cache.models_for([KEY])[KEY].meta.version == first.meta.version
    assert cache.models_for([KEY])[KEY].meta.version == first.meta.version
    assert cache.loads == 1
    newer = train(t[:900], v[:900], FAST, KEY)
    newer = dataclasses.replace(
        newer, meta=dataclasses.replace(newer.meta, version=first.meta.version + 1)
    )
    store.put(newer)
    assert cache.models_for([KEY])[KEY].meta.version == newer.meta.version
    assert cache.loads == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"selector": "x", "start": 10, "end": 5, "step": 60}, "end must be after start"),
        ({"selector": "x", "start": 0, "end": 10, "step": 0}, "step"),
        ({"selector": "x", "start": 0, "end": 10, "step": "soon"}, "step"),
        ({"selector": "x", "start": 0, "end": 10}, "step: Field required"),
        ({"selector": "", "start": 0, "end": 10, "step": 1}, "selector"),
        ({"selector": "x", "start": 0, "end": 10, "step": 1, "k": 3}, "k: Extra inputs"),
        ({"selector": "x", "start": 0, "end": 1e6, "step": 1}, "more than 2000"),
    ],
)
def test_bad_requests_get_400(body: dict[str, Any], needle: str) -> None:
    r = _client(FakeProm([]), MemoryStore()).post("/calculate", json=body)
    assert r.status_code == 400
    assert r.json()["status"] == "error" and needle in r.json()["msg"]


def test_not_json_gets_400() -> None:
    r = _client(FakeProm([]), MemoryStore()).post("/calculate", content=b"{nope")
    assert r.status_code == 400 and r.json()["status"] == "error"


def test_a_bad_selector_is_400_in_prometheus_words_and_a_down_prometheus_503() -> None:
    bad = FakeProm([], PrometheusError("bad_data", 'parse error: unexpected "}"', 400))
    r = _client(bad, MemoryStore()).post("/calculate", json=_body(0, 600))
    assert r.status_code == 400 and 'unexpected "}"' in r.json()["msg"]
    down = FakeProm([], PrometheusUnavailable("connection refused"))
    r = _client(down, MemoryStore()).post("/calculate", json=_body(0, 600))
    assert r.status_code == 503 and r.json()["status"] == "error"


def test_too_many_series_is_400() -> None:
    t, v = _series(50)
    many = [RangeSeries(LABELS | {"instance": str(i)}, t, v) for i in range(6)]
    r = _client(FakeProm(many), MemoryStore()).post("/calculate", json=_body(t[0], t[-1]))
    assert r.status_code == 400 and "6 series" in r.json()["msg"]


def test_scheduled_scoring_gives_autoencoder_anomaly_records() -> None:
    from anomaly_detection.outliers.trainer import records_for  # noqa: PLC0415

    t, v = _series()
    v = v.copy()
    v[1100] += 3000
    store = MemoryStore()
    store.put(train(t[:900], v[:900], FAST, KEY))
    recs = records_for(
        FakeProm([RangeSeries(LABELS, t, v)]), ModelCache(store), "x", t[1050], t[-1], STEP
    )
    assert len(recs) == 150  # one per point of the interval; the window before is context
    assert {r.detector.name for r in recs} == {"autoencoder"}
    bad = [r for r in recs if r.status == "ERROR"]
    assert t[1100] in [r.window.start for r in bad]
    assert len(bad) <= 3  # the spike, and Gaussian noise past k = 5 error std at most twice
    r = next(r for r in bad if r.window.start == t[1100])
    assert r.series.key == KEY and r.mean == pytest.approx(v[1100]) and r.deviation > 5
    assert r.window.end == t[1100] + STEP and r.normal.source == "learned"
    assert AnomalyRecord.from_bytes(r.to_bytes()) == r


class ListProducer:
    """A KafkaProducer's send/flush, keeping what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float) -> None:
        pass


def test_a_scoring_pass_sets_anomaly_score_per_series_with_its_labels() -> None:
    from anomaly_detection.outliers.settings import OutlierSettings  # noqa: PLC0415
    from anomaly_detection.outliers.trainer import ScheduleMetrics, score_once  # noqa: PLC0415

    t, v = _series()
    v = v.copy()
    v[-1] += 3000  # the latest point of the first series is an outlier
    other = LABELS | {"instance": "g:9100", "model": "its-own"}
    store = MemoryStore()
    store.put(train(t[:900], v[:900], FAST, KEY))
    store.put(train(t[:900], v[:900], FAST, series_key("node_filefd_allocated", other)))
    third = LABELS | {"instance": "f:9100"}
    store.put(train(t[:900], v[:900], FAST, series_key("node_filefd_allocated", third)))
    prom = FakeProm([RangeSeries(LABELS, t, v), RangeSeries(other, t, v[::-1].copy()),
                     RangeSeries(third, t, v)])  # fmt: skip
    s = OutlierSettings(outliers_selectors="node_filefd_allocated", outliers_step_s=STEP)
    metrics = ScheduleMetrics(max_series=2)
    producer = ListProducer()
    n = score_once(s, prom, ModelCache(store), producer, t[1050], t[-1], metrics)
    assert n == len(producer.sent) == 3 * 150
    metrics.observe_pass("complete", n)
    recs = [AnomalyRecord.from_bytes(value) for _, _, value in producer.sent]
    last = {r.series.key: r for r in recs if r.window.start == t[-1]}

    def gauge(labels: dict[str, str]) -> float | None:
        want = {k: v for k, v in labels.items() if k != "__name__"}
        want |= {"for": "node_filefd_allocated", "model": "autoencoder"}
        return metrics.registry.get_sample_value("anomaly_score", want)

    first = gauge(LABELS)
    assert first is not None and first == last[KEY].deviation and first > 5
    assert last[KEY].status == "ERROR"
    second = gauge(other)  # its own "model" label gives way to the scoring model's
    assert second == last[series_key("node_filefd_allocated", other)].deviation
    assert second is not None and second < 5
    # At most OUTLIERS_MAX_EXPOSED_SERIES series: the third is counted, not exposed.
    assert gauge(third) is None
    assert metrics.registry.get_sample_value("outlier_series_not_exposed") == 1
    assert (
        metrics.registry.get_sample_value("outlier_score_passes_total", {"status": "complete"}) == 1
    )
    assert metrics.registry.get_sample_value("outlier_score_records_total") == n


def test_scheduled_selectors_may_hold_commas() -> None:
    from anomaly_detection.outliers.settings import OutlierSettings  # noqa: PLC0415

    two = 'node_filefd_allocated{instance="h:9100",job="host"}; up{job="a"}\n'
    assert OutlierSettings(outliers_selectors=two).outliers_selectors == (
        'node_filefd_allocated{instance="h:9100",job="host"}',
        'up{job="a"}',
    )
    assert OutlierSettings(outliers_selectors='["a", "b"]').outliers_selectors == ("a", "b")
    assert OutlierSettings(outliers_selectors=" ").outliers_selectors == ()
    assert OutlierSettings().outliers_selectors == ()
