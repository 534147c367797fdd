"""NAB scorer against hand-computed cases, the runner on awkward files, models streaming-honest."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from anomaly_detection.models.baselines import sigma_scores
from anomaly_detection.models.iforest import (
    N_TREES,
    SHINGLE,
    features,
    iforest_scores,
    suppress_repeats,
)
from anomaly_detection.nab import io
from anomaly_detection.nab.__main__ import main
from anomaly_detection.nab.runner import run
from anomaly_detection.nab.scorer import (
    MAX_TP,
    PROFILES,
    FileWeights,
    file_weights,
    normalise,
    optimise,
    probation_length,
    scaled_sigmoid,
    score_at,
)

STD = PROFILES["standard"]
T0 = np.datetime64("2014-01-01T00:00:00", "ns")
STEP = np.timedelta64(5, "m")


def times(n: int) -> np.ndarray:
    return T0 + STEP * np.arange(n)


def one_file(
    scores: list[float] | np.ndarray, spans: list[tuple[int, int]], n: int = 200
) -> FileWeights:
    ts = times(n)
    return file_weights(
        "c/f.csv", ts, np.asarray(scores, dtype=float), [(ts[a], ts[b]) for a, b in spans]
    )


def test_scaled_sigmoid_hand_values() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_is_15_percent_capped_at_750() -> None:
    assert probation_length(200) == 30
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750
    assert probation_length(3) == 0


def test_never_fires_scores_0_and_perfect_scores_100() -> None:
    spans = [(100, 119), (150, 159)]
    none = one_file(np.zeros(200), spans)
    for profile in PROFILES.values():
        r = score_at([none], 0.5, profile)
        assert r.raw == pytest.approx(-2 * profile["fn"])
        assert normalise(r.raw, [none], profile) == pytest.approx(0.0)
    s = np.zeros(200)
    s[[100, 150]] = 1.0
    perfect = one_file(s, spans)
    for profile in PROFILES.values():
        r = score_at([perfect], 0.5, profile)
        assert r.raw == pytest.approx(2 * profile["tp"])
        assert normalise(r.raw, [perfect], profile) == pytest.approx(100.0)


def test_single_tp_at_window_start_vs_end() -> None:
    spans = [(100, 109)]  # width 10
    start = np.zeros(200)
    start[100] = 1
    end = np.zeros(200)
    end[109] = 1
    raw_start = score_at([one_file(start, spans)], 0.5, STD).raw
    raw_end = score_at([one_file(end, spans)], 0.5, STD).raw
    assert raw_start == pytest.approx(1.0)
    # -(r - i + 1) / width = -0.1 -> (2 / (1 + e^-0.5) - 1) / 0.98661 = 0.24824
    assert raw_end == pytest.approx((2 / (1 + math.exp(-0.5)) - 1) / MAX_TP)
    assert raw_end == pytest.approx(0.24824, abs=1e-5)
    # Only the best detection of a window counts, once.
    both = start + end
    assert score_at([one_file(both, spans)], 0.5, STD).raw == pytest.approx(1.0)
    # Normalised against null (-1) and perfect (1): (0.24824 + 1) / 2.
    assert normalise(raw_end, [one_file(end, spans)], STD) == pytest.approx(62.412, abs=1e-3)


def test_false_positives_before_and_after_windows() -> None:
    spans = [(100, 109)]
    far = np.zeros(200)
    far[50] = 1  # before any window: the full fp weight
    assert score_at([one_file(far, spans)], 0.5, STD).raw == pytest.approx(-1.0 - 0.11)
    late = np.zeros(200)
    late[190] = 1  # 81 rows after a 10-row window: >= 3 widths -> -fp
    assert score_at([one_file(late, spans)], 0.5, STD).raw == pytest.approx(-1.0 - 0.11)
    near = np.zeros(200)
    near[110] = 1  # right after the window: |110 - 109| / (10 - 1)
    expected = -1.0 + 0.11 * (2 / (1 + math.exp(5 / 9)) - 1)
    assert score_at([one_file(near, spans)], 0.5, STD).raw == pytest.approx(expected)
    for profile in ("reward_low_FP_rate", "reward_low_FN_rate"):
        p = PROFILES[profile]
        assert score_at([one_file(far, spans)], 0.5, p).raw == pytest.approx(-p["fn"] - p["fp"])


def test_probation_rows_are_not_scored() -> None:
    s = np.zeros(200)
    s[10] = 1  # inside the first 30 rows
    f = one_file(s, [(100, 109)])
    assert score_at([f], 0.5, STD).raw == pytest.approx(-1.0)
    # A window entirely in probation neither costs nor counts for the null.
    g = one_file(np.zeros(200), [(5, 9)])
    assert g.windows_scorable == 0 and g.windows_labelled == 1


def test_optimise_finds_the_best_threshold_over_files() -> None:
    spans = [(100, 109)]
    a = np.full(200, 0.1)
    a[100] = 0.9
    a[60] = 0.8  # an FP below the TP
    b = np.full(200, 0.1)
    b[105] = 0.95
    fa, fb = one_file(a, spans), one_file(b, spans)
    t, raw = optimise([fa, fb], STD)
    assert t == 0.9
    assert raw == pytest.approx(score_at([fa, fb], 0.9, STD).raw)
    for thr in (0.05, 0.1, 0.5, 0.8, 0.85, 0.95, 1.0):
        assert score_at([fa, fb], thr, STD).raw <= raw + 1e-12
    # Nothing ever helps: the threshold above every score.
    t2, raw2 = optimise([one_file(np.full(200, 0.3), spans)], STD)
    assert t2 == 1.1 and raw2 == pytest.approx(-1.0)


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows(rows)


def test_runner_on_awkward_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    ts = [str(t).replace("T", " ")[:19] for t in times(600)]
    vals = rng.normal(10, 1, 600)
    vals[500] = 40
    _write(
        data / "real" / "normal.csv", [(t, str(float(v))) for t, v in zip(ts, vals, strict=True)]
    )
    _write(
        data / "real" / "missing.csv",
        [(t, "" if i % 7 == 0 else "nan" if i % 11 == 0 else "3.5") for i, t in enumerate(ts)],
    )
    _write(data / "art" / "constant.csv", [(t, "1") for t in ts])
    _write(data / "art" / "short.csv", [(t, "1") for t in ts[:3]])
    _write(data / "art" / "empty.csv", [])
    _write(
        data / "odd" / "stamps.csv",
        [("not a time", "1"), ("1400000000", "2"), ("2014-05-13T16:53:20Z", "3")] * 40,
    )
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"real/normal.csv": [[ts[495] + ".000000", ts[510] + ".000000"]]}))
    out = tmp_path / "results"
    for model in ("iforest", "sigma", "random", "null"):
        assert main([str(data), str(out), "--model", model, "--labels", str(labels)]) == 0
        for rel, path in io.data_files(data):
            res = io.result_path(out, model, rel)
            with res.open() as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == len(io.read_series(path, rel).values), (model, rel)
            sc = [float(r["anomaly_score"]) for r in rows]
            assert all(0.0 <= x <= 1.0 for x in sc)
            assert all(x == 0.0 for x in sc[: probation_length(len(sc))]) or model != "null"
        normal = io.result_path(out, model, "real/normal.csv")
        with normal.open() as f:
            rows = list(csv.DictReader(f))
        assert [int(r["label"]) for r in rows].count(1) == 16
    with io.result_path(out, "iforest", "real/normal.csv").open() as f:
        sc = [float(r["anomaly_score"]) for r in csv.DictReader(f)]
    assert sc[500] == max(sc[490:]) and sc[500] > 0.5


def test_score_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ts = [str(t).replace("T", " ")[:19] for t in times(200)]
    res = tmp_path / "results" / "mine" / "cat"
    res.mkdir(parents=True)
    with (res / "mine_f.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for i, t in enumerate(ts):
            w.writerow([t, 1, 1.0 if i == 100 else 0.0, 0])
    win = tmp_path / "w.json"
    win.write_text(json.dumps({"cat/f.csv": [[ts[100] + ".000000", ts[109] + ".000000"]]}))
    assert main(["score", str(tmp_path / "results"), "--windows", str(win), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["profile"] for r in rows} == set(PROFILES)
    assert all(
        r["score"] == pytest.approx(100.0) and r["fixed_score"] == pytest.approx(100.0)
        for r in rows
    )


def test_features_and_iforest_use_only_the_past() -> None:
    rng = np.random.default_rng(2)
    n, k, p = 1200, 900, 300
    t = times(n)
    v = rng.normal(0, 1, n)
    w = v.copy()
    w[k:] += 100  # a different future
    assert np.array_equal(features(t, v, True)[:k], features(t, w, True)[:k])
    a = iforest_scores(t, v, p, "x")
    b = iforest_scores(t, w, p, "x")
    assert np.array_equal(a[:k], b[:k])
    assert np.all(a[:p] == 0)


def test_shingle_columns_are_the_last_differences_over_their_robust_scale() -> None:
    # NAB follow-up 2 (issue 16): the last SHINGLE columns are d[i - j] / scale(i), the
    # scale max(median |d|, std(d) / 2) of the max(windows) differences before row i, so a
    # spike reads the same on any series' scale: +s then -s over the usual step.
    t = times(40)
    base = np.where(np.arange(40) % 2 == 0, 0.0, 1.0)  # |d| = 1 every row: scale 1
    shingles = []
    for level, unit in ((0.0, 1.0), (1e6, 1000.0)):
        v = level + unit * base
        v[30] += unit * 20  # a spike of 20 usual steps
        x = features(t, v, False, windows=(4, 8))
        assert x.shape[1] == 2 + 4 * 2 + SHINGLE
        shingles.append(x[:, -SHINGLE:])
    for sh in shingles:
        # row 30: d = 20 - 1 = 19 over the scale 1 of the 8 differences before it, then
        # the differences before it, newest first: +1, -1, +1, ...
        assert sh[30, :4].tolist() == pytest.approx([19.0, 1.0, -1.0, 1.0], rel=1e-5)
    # the same shingle on either scale, once the scale has history (row 2 on)
    assert np.allclose(shingles[0][2:], shingles[1][2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [4, 16, 32])
def test_shingle_length_is_a_parameter_for_the_benchmark(k: int) -> None:
    # NAB follow-up 3 (issue 16): bench_nab's `shingle` subcommand compares lengths; the
    # other columns and the shared differences do not change with the length.
    t = times(120)
    v = np.sin(np.arange(120) / 3.0)
    v[50] += 5.0
    base = features(t, v, False, windows=(4, 8))
    x = features(t, v, False, windows=(4, 8), shingle=k)
    assert x.shape[1] == 2 + 4 * 2 + k
    n = min(k, SHINGLE)
    assert np.array_equal(x[:, : 2 + 4 * 2 + n], base[:, : 2 + 4 * 2 + n])
    # column j is d[i - j]: row 50's jump up is column j's largest value at row 50 + j
    assert [20 + int(np.argmax(x[20:, 10 + j])) for j in range(k)] == [50 + j for j in range(k)]


def test_a_constant_history_scores_only_what_leaves_it() -> None:
    # Three days at 5 minutes: time-of-day features on, every value the same. The forest
    # could only isolate on the time of day; only a value off the constant may score.
    n, p = 864, 300
    t = times(n)
    v = np.full(n, 45.0)
    assert np.all(iforest_scores(t, v, p, "flat") == 0)
    w = v.copy()
    w[700] = 50.0
    s = iforest_scores(t, w, p, "flat")
    assert s[700] > 0.9 and np.all(s[:700] == 0)


def test_sigma_rule_fires_at_the_closing_row_of_a_jump() -> None:
    n = 1200
    t = times(n)
    v = np.random.default_rng(3).normal(0, 1, n)
    v[900:903] += 10  # one whole 15-minute window (rows 900..902)
    s = sigma_scores(t, v, 180, "x")
    assert s[903] > 0.5
    assert np.all(s[:180] == 0)
    assert (s > 0.5).sum() <= 12


def test_suppress_repeats_keeps_only_new_highs() -> None:
    s = np.array([0.0, 0.9, 0.8, 0.95, 0.1, 0.1, 0.7])
    out = suppress_repeats(s, 3)
    # 0.8 is below 0.9 two rows before; 0.7 is above the two rows before it (0.1, 0.1).
    assert out.tolist() == pytest.approx([0.0, 0.9, 0.4, 0.95, 0.05, 0.05, 0.7])
    assert np.array_equal(suppress_repeats(s, 1), s)


def test_windows_match_by_time_not_exact_rows() -> None:
    # A window whose edges fall between rows covers the rows inside it.
    ts = times(200)
    s = np.zeros(200)
    s[101] = 1
    f = file_weights("c/f.csv", ts, s, [(ts[100] + np.timedelta64(1, "m"), ts[110])])
    assert score_at([f], 0.5, STD).raw == pytest.approx(1.0)


def test_labels_from_points_and_bad_windows_files(tmp_path: Path) -> None:
    pts = tmp_path / "labels.json"
    pts.write_text(json.dumps({"c/f.csv": ["2014-01-01 00:10:00.000000"]}))
    w = io.read_windows(pts)["c/f.csv"]
    assert io.label_column(times(5), w).tolist() == [0, 0, 1, 0, 0]
    bad = tmp_path / "bad.json"
    for text in ("not json", "[1, 2]", '{"c/f.csv": [[1, 2, 3]]}'):
        bad.write_text(text)
        with pytest.raises(ValueError):
            io.read_windows(bad)
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path), "--windows", str(bad)])
    assert e.value.code == 2


def test_iforest_forest_size_and_seed_variants_run_under_their_own_name(tmp_path: Path) -> None:
    # bench_nab.measure_trees: the default call is trees=N_TREES with the file's own seed;
    # another seed or forest size changes the scores; the runner writes a variant under
    # the name it is given, with the function it is given.
    rng = np.random.default_rng(3)
    n, p = 700, 300
    t, v = times(n), rng.normal(10, 1, n)
    v[600] = 30.0
    base = iforest_scores(t, v, p, "x")
    assert np.array_equal(base, iforest_scores(t, v, p, "x", n_trees=N_TREES, seed_offset=0))
    assert not np.array_equal(base, iforest_scores(t, v, p, "x", seed_offset=7))
    bigger = iforest_scores(t, v, p, "x", n_trees=3 * N_TREES)
    assert not np.array_equal(base, bigger)
    assert bigger[600] > 0.5 and bigger[600] > max(bigger[p:600])
    ts = [str(x).replace("T", " ")[:19] for x in t]
    data = tmp_path / "data"
    _write(data / "real" / "f.csv", [(a, str(float(b))) for a, b in zip(ts, v, strict=True)])
    fn = functools.partial(iforest_scores, n_trees=3 * N_TREES)
    st = run(data, tmp_path / "out", "iforest-t300", fn=fn)
    assert (st.files, st.failed) == (1, 0)
    with io.result_path(tmp_path / "out", "iforest-t300", "real/f.csv").open() as f:
        sc = [float(r["anomaly_score"]) for r in csv.DictReader(f)]
    want = iforest_scores(t, v, probation_length(n), "real/f.csv", n_trees=3 * N_TREES)
    assert np.allclose(sc, want, atol=1e-6)  # the result file holds 6 decimals
