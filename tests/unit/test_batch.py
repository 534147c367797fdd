"""The batch job's pieces without Spark: features, checks, the threshold rule, the model
artefact and metadata round trip, settings, ranges, the retried fetch, /metrics labels."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from anomaly_detection.batch import __main__ as batch_cli
from anomaly_detection.batch import core, fetch, store
from anomaly_detection.batch.__main__ import main as batch_main
from anomaly_detection.batch.job import aligned_range, groups
from anomaly_detection.batch.metrics import BatchMetrics
from anomaly_detection.batch.settings import BatchSettings
from anomaly_detection.metrics import model_score_labels
from anomaly_detection.models import iforest
from sla_common.prometheus import PrometheusUnavailable
from sla_common.settings import SettingsError, load_settings
from tests.unit.promfake import Answer, PrometheusHttp

STEP = 60
PARAMS = core.Params(STEP, (300, 1800), 16, 0.01, 50)


def _series(n: int, step: int = STEP, t0: float = 1_700_000_000.0) -> tuple[Any, Any]:
    t = t0 + step * np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(1)
    v = 100.0 + 10 * np.sin(2 * np.pi * np.arange(n) / 240) + rng.normal(0, 1, n)
    return t, v


def test_features_on_a_hand_built_series() -> None:
    t = 1_700_000_000.0 + STEP * np.arange(8, dtype=np.float64)
    v = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 11.0, 1.0, 1.0])
    x = core.feature_matrix(t, v, PARAMS, with_time=False, with_week=False)
    # value, diff, then per window (5 and 30 rows) mean, std, deviation, deviation in stds,
    # then the shingle of the last differences.
    assert x.shape == (8, 2 + 4 * 2 + iforest.SHINGLE)
    assert x[:, 0].tolist() == v.tolist()
    assert x[5, 1] == 10.0 and x[6, 1] == -10.0
    mean5, std5, dev5 = x[:, 2], x[:, 3], x[:, 4]
    assert mean5[5] == 1.0 and std5[5] == 0.0 and dev5[5] == 10.0  # the past only
    assert mean5[6] == pytest.approx((1 + 1 + 1 + 1 + 11) / 5)  # rows 1..5
    assert x[5, 5] > 1e6  # 10 over a zero std: huge, finite
    assert np.isfinite(x).all()
    assert PARAMS.windows_rows() == (5, 30)


def test_time_of_day_only_when_the_history_covers_two_days() -> None:
    t, v = _series(2 * 1440 - 10)
    m = core.train("x", t, v, PARAMS)
    assert isinstance(m, core.Model) and not m.with_time
    t, v = _series(2 * 1440 + 1)
    m = core.train("x", t, v, PARAMS)
    assert isinstance(m, core.Model) and m.with_time and not m.with_week
    names = m.feature_names()
    shingle = [f"shingle_d{j}" for j in range(iforest.SHINGLE)]
    assert names[-2 - iforest.SHINGLE :] == ["tod_sin", "tod_cos", *shingle]
    x = core.feature_matrix(t, v, PARAMS, m.with_time, m.with_week)
    assert x.shape[1] == len(m.feature_names())


def test_checks_give_typed_skips() -> None:
    assert core.check(np.ones(10), 16) == core.Skip("too_short", "10 points, fewer than 16")
    skip = core.check(np.full(50, 3.0), 16)
    assert skip is not None and skip.reason == "constant"
    assert core.check(np.arange(50.0), 16) is None
    t, v = _series(40)
    v[:30] = np.nan  # non-finite points do not count
    skip2 = core.train("x", t, v, PARAMS)
    assert isinstance(skip2, core.Skip) and skip2.reason == "too_short"
    assert set(core.SKIP_REASONS) >= {"no_match", "too_short", "constant", "fetch_failed"}


def test_threshold_rule_flags_the_spike_and_about_contamination_of_training() -> None:
    assert core.is_anomaly(np.array([0.5, 0.5000001, 0.2, 1.0])).tolist() == [
        False,
        True,
        False,
        True,
    ]
    t, v = _series(1440)
    m = core.train("x", t, v, PARAMS)
    assert isinstance(m, core.Model)
    s = core.score(m, t, v, t[0])
    assert len(s.scores) == 1440 and ((s.scores >= 0) & (s.scores <= 1)).all()
    # 0.5 is the (1 - contamination) quantile of the training points' raw scores.
    assert s.flags.mean() <= PARAMS.contamination + 1 / 1440
    t2, v2 = _series(1500)  # the same series, 60 points on
    v2[-30] += 200.0  # a spike after training
    s2 = core.score(m, t2, v2, t2[-60])
    assert len(s2.scores) == 60
    assert s2.flags[30] and s2.scores[30] > 0.9
    assert s2.flags[:30].sum() <= 1  # before it: quiet


def test_score_suppresses_repeats_as_on_nab_whatever_the_range() -> None:
    t, v = _series(1440)
    m = core.train("x", t, v, PARAMS)
    assert isinstance(m, core.Model)
    t2, v2 = _series(1700)
    v2[1500] += 200.0  # a spike, then the same spike again 20 rows later
    v2[1520] += 200.0
    whole = core.score(m, t2, v2, t2[0])
    raw = np.clip(m.fitted.score(core.feature_matrix(t2, v2, PARAMS, False, False)), 0, 1)
    assert np.array_equal(whole.scores, iforest.suppress_repeats(raw, PARAMS.suppress_rows))
    assert whole.flags[1500] and raw[1520] > 0.5 and not whole.flags[1520]
    # A score run's range, with the lookback the job fetches before it: the same scores.
    lookback = core.lookback_s(PARAMS)
    assert lookback == (30 + PARAMS.suppress_rows + 1) * STEP
    start = t2[1450]
    part = core.score(m, t2[t2 >= start - lookback], v2[t2 >= start - lookback], start)
    assert np.array_equal(part.scores, whole.scores[1450:])


def test_model_artefact_and_metadata_round_trip() -> None:
    t, v = _series(600)
    m = core.train("k", t, v, PARAMS)
    assert isinstance(m, core.Model)
    blob, sha = core.dump(m)
    back = core.load(blob, sha)
    assert back.params == m.params and back.train_start == t[0] and back.train_end == t[-1]
    assert np.array_equal(core.score(back, t, v, t[0]).scores, core.score(m, t, v, t[0]).scores)
    meta = json.loads(json.dumps(m.metadata()))
    assert meta["params"]["windows_s"] == [300, 1800] and meta["params"]["trees"] == 50
    assert meta["params"]["contamination"] == 0.01 and meta["params"]["threshold"] == 0.5
    assert meta["features"]["names"][:4] == ["value", "diff", "mean_300s", "std_300s"]
    with pytest.raises(core.ArtefactError):
        core.load(blob[:-1] + bytes([blob[-1] ^ 1]), sha)


def test_score_rows_one_per_point_status_by_the_rule() -> None:
    t, v = _series(300)
    m = core.train("k", t, v, PARAMS)
    assert isinstance(m, core.Model)
    ref = store.SeriesRef.of({"__name__": "up", "job": "a"})
    assert ref.key == 'up{job="a"}' and ref.prometheus_labels() == {"__name__": "up", "job": "a"}
    scored = core.Scored(t[:3], v[:3], np.array([0.1, 0.5, 0.7]))
    rows = store.score_rows(ref, m, "v1", scored, now=5)
    cols = store.SCORES.columns
    assert [r[cols.index("status")] for r in rows] == ["SAFE", "SAFE", "ERROR"]
    assert [r[cols.index("window_start_ms")] for r in rows] == [round(x * 1000) for x in t[:3]]
    r0 = rows[0]
    assert r0[cols.index("window_end_ms")] - r0[cols.index("window_start_ms")] == STEP * 1000
    assert r0[cols.index("detector")] == "iforest" and r0[cols.index("score")] == 0.1
    assert store.SCORES.key == ("key_hash", "detector", "window_start_ms")


def test_settings_and_ranges() -> None:
    s = load_settings(BatchSettings, batch_selectors='a; b{x="1"}', batch_windows_s="120,600")
    assert s.spark_master == "local[*]" and s.spark_local_ip == "127.0.0.1"
    assert s.batch_selectors == ("a", 'b{x="1"}') and s.batch_windows_s == (120, 600)
    with pytest.raises(SettingsError, match="two BATCH_STEP_S"):
        load_settings(BatchSettings, batch_windows_s="60")
    assert aligned_range(1000.5, 300, 60) == (720.0, 960.0)  # 5 points: 720..960
    rows = list(groups([store.SeriesRef.of({"__name__": f"m{i}"}) for i in range(5)], 2))
    assert [g for g, _ in rows] == [0, 0, 1, 1, 2]


def test_cli_takes_train_and_score_together_and_schedule_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        batch_main(["schedule", "train"])
    assert e.value.code == 2 and "schedule runs alone" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        batch_main(["train", "rescore"])
    assert e.value.code == 2
    called: list[tuple[str, Any]] = []

    def schedule(s: BatchSettings, stop: Any) -> int:
        called.append(("schedule", 0))
        return 0

    def once(s: BatchSettings, kinds: Any, end: float | None) -> int:
        called.append(("once", list(kinds)))
        return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_cli, "cmd_schedule", schedule)
        mp.setattr(batch_cli, "cmd_once", once)
        assert batch_main([]) == batch_main(["schedule"]) == 0
        assert batch_main(["train", "score", "--end=600"]) == batch_main(["score"]) == 0
    assert called == [
        ("schedule", 0),
        ("schedule", 0),
        ("once", ["train", "score"]),
        ("once", ["score"]),
    ]


MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [{"metric": {"__name__": "up"}, "values": [[60, "1"], [120, "2"]]}],
    },
}


def test_history_is_retried_while_prometheus_is_down() -> None:
    failures = 2

    def respond(_path: str, _form: dict[str, str]) -> Answer:
        return (
            (503, b"down") if len(prom.requests) <= failures else (200, json.dumps(MATRIX).encode())
        )

    with PrometheusHttp(respond) as prom:
        s = load_settings(
            BatchSettings,
            prometheus_url=prom.url,
            batch_fetch_attempts=3,
            batch_fetch_backoff_s=0.01,
        )
        ref = store.SeriesRef.of({"__name__": "up"})
        with fetch.client(s) as c:
            t, v = fetch.history(s, c, ref, 60, 120, 60)
        assert t.tolist() == [60.0, 120.0] and v.tolist() == [1.0, 2.0] and len(prom.requests) == 3
        failures = 10
        with fetch.client(s) as c, pytest.raises(PrometheusUnavailable):
            fetch.history(s, c, ref, 60, 120, 60)
        assert len(prom.requests) == 6


def test_metrics_expose_the_latest_score_with_the_series_labels_and_model() -> None:
    assert model_score_labels("up", {"job": "a", "__x": "y", "model": "m"}, "iforest") == {
        "job": "a",
        "for": "up",
        "model": "iforest",
    }
    m = BatchMetrics(max_series=1)
    summary = {
        "series_key": 'up{job="a"}',
        "metric": "up",
        "labels": '{"job": "a"}',
        "outcome": "scored",
        "last_score": 0.75,
    }
    other = {**summary, "series_key": 'up{job="b"}', "labels": '{"job": "b"}'}
    m.observe_run("score", "complete", 1.0, 120.0, [summary, other])
    value = m.registry.get_sample_value(
        "anomaly_score", {"job": "a", "for": "up", "model": "iforest"}
    )
    assert value == 0.75
    assert m.registry.get_sample_value("anomaly_batch_series_not_exposed") == 1


def test_not_exposed_is_the_latest_passes_count_not_a_running_total() -> None:
    m = BatchMetrics(max_series=1)

    def scored(*jobs: str) -> list[dict[str, Any]]:
        return [
            {
                "series_key": f'up{{job="{j}"}}',
                "metric": "up",
                "labels": json.dumps({"job": j}),
                "outcome": "scored",
                "last_score": 0.25,
            }
            for j in jobs
        ]

    def not_exposed() -> float | None:
        return m.registry.get_sample_value("anomaly_batch_series_not_exposed")

    m.observe_run("score", "complete", 1.0, 60.0, scored("a", "b"))
    assert not_exposed() == 1  # b: the bound (1) is taken by a
    m.observe_run("score", "complete", 1.0, 120.0, scored("a", "c", "d"))
    assert not_exposed() == 2  # c and d this pass; b, gone, is no longer counted
    m.observe_run("score", "complete", 1.0, 180.0, scored("a"))
    assert not_exposed() == 0
    assert m.registry.get_sample_value(
        "anomaly_score", {"job": "a", "for": "up", "model": "iforest"}
    )


def test_a_model_of_another_features_version_is_a_stale_skip_not_a_failed_score() -> None:
    """A model stored before an upgrade changed the features (version 1: no shingle) would
    get more columns than its forest was fitted on; scoring skips it as ``stale_model``."""
    t, v = _series(1440)
    m = core.train("x", t, v, PARAMS)
    assert isinstance(m, core.Model)
    assert core.stale(m.metadata()["features"]) is None
    old = {"version": 1, "names": m.feature_names()[: -iforest.SHINGLE]}
    skip = core.stale(old)
    assert skip is not None and skip.reason == "stale_model" and "run train" in skip.detail
    assert "stale_model" in core.SKIP_REASONS
    assert core.stale({}) is not None  # no version said: not ours to trust
