"""The learned normal that follows a series' own cycle (anomaly_detection.rules.Season):
hand-computed updates, its use only when it predicts better, checkpoints, settings."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from kafka import TopicPartition

from anomaly_detection.detector import PartitionState, Series, StateStore
from anomaly_detection.judge import Rule
from anomaly_detection.rules import Baseline, Season, ew_alpha, offset_var_factor, season_bin_ms
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial, SeriesWindows, partials
from sla_common.settings import SettingsError, load_settings

DAY_S = 86_400
W15 = 900_000  # 15-minute windows: 96 a day, one per phase of a daily season


@pytest.mark.parametrize(
    ("period_ms", "window_ms", "bin_ms"),
    [
        (86_400_000, 60_000, 900_000),  # a day: quarter hours (96 phases)
        (604_800_000, 60_000, 3_600_000),  # a week: at most 168 phases, hours
        (86_400_000, 3_600_000, 3_600_000),  # never narrower than a window
        (3_600_000, 500, 900_000),  # an hour: four quarters
    ],
)
def test_phase_width(period_ms: int, window_ms: int, bin_ms: int) -> None:
    assert season_bin_ms(period_ms, window_ms) == bin_ms
    s = Season.new(period_ms, window_ms)
    assert len(s.offsets) == len(s.spreads) == len(s.visits) == period_ms // bin_ms


def test_first_period_is_taken_as_it_is_then_holt_winters_updates_by_hand() -> None:
    s = Season.new(3_600_000, W15)  # 4 phases of 15 minutes
    for i, x in enumerate([10.0, 20.0, 30.0, 20.0]):
        s.learn(i * W15, x, 0.0, plain_mean=None, window_ms=W15, alpha=0.5)
    assert (s.level, s.offsets, s.visits, s.scored) == (10.0, [0.0, 10.0, 20.0, 10.0], [1] * 4, 0)
    assert s.predict(4 * W15) == 10.0 and s.predict(5 * W15) == 20.0
    # Second period, phase 0: mean 12, variance 1; the plain normal said 20.
    s.learn(4 * W15, 12.0, 1.0, plain_mean=20.0, window_ms=W15, alpha=0.5)
    # r = 12 - 10 = 2. First scored window: the error averages are the errors themselves.
    assert (s.err, s.err_plain) == (4.0, 64.0)
    gamma = 1 - 0.5**0.5  # half-life of two visits of a phase, one window a visit
    assert s.offsets[0] == pytest.approx(gamma * 0.5 * 2)  # 0 + gamma·(1 - alpha)·r
    assert s.level == 11.0  # 10 + alpha·r
    assert s.spreads[0] == 2.5  # second visit: weight 1/2 of r² + window variance = 5
    assert s.var == 5.0 and s.scored == 1
    assert s.predict(5 * W15) == 21.0  # the new level + phase 1's offset
    # Phase 1's spread: the larger of the recent one (5) and its neighbourhood's mean
    # ((2.5 + 0 + 0) / 3).
    assert s.std_at(5 * W15) == math.sqrt(5.0)
    assert not s.better(W15)  # one window predicted, not a full period yet


def test_the_first_period_averages_each_phase_and_predicts_nothing() -> None:
    s = Season.new(3_600_000, 60_000)  # 1-minute windows: 15 a phase of 15 minutes
    for i, x in enumerate([10.0, 12.0, 14.0]):  # phase 0, variance 1 in each window
        s.learn(i * 60_000, x, 1.0, plain_mean=10.0, window_ms=60_000, alpha=0.5)
    # The level is the first window; phase 0's offset the mean of x - level (0, 2, 4), its
    # spread the mean of the squared deviations from it (8/3) plus the windows' variance.
    assert (s.level, s.offsets[0], s.visits[0]) == (10.0, 2.0, 3)
    assert s.spreads[0] == pytest.approx(8 / 3 + 1)
    assert (s.scored, s.err, s.err_plain) == (0, 0.0, 0.0)  # nothing compared yet
    # Still the first period (a later phase): learned, not scored.
    s.learn(30 * 60_000, 7.0, 0.0, plain_mean=10.0, window_ms=60_000, alpha=0.5)
    assert (s.offsets[2], s.scored) == (-3.0, 0)
    # One period later phase 0 is predicted: level 10 + offset 2.
    s.learn(60 * 60_000, 13.0, 0.0, plain_mean=10.0, window_ms=60_000, alpha=0.5)
    assert (s.scored, s.err, s.err_plain) == (1, 1.0, 9.0)


@pytest.mark.parametrize(
    ("visits", "per_visit", "g", "factor"),
    [
        (1, 1.0, 0.5, 1.0),  # one window seen: the offset is that window
        (2, 1.0, 0.5, 0.5),  # (1 - g)²·1 + g²
        (3, 1.0, 0.5, 0.375),  # (1 - g)²·0.5 + g²
        (10_000, 1.0, 0.5, 1 / 3),  # settles at g / (2 - g)
        (3, 15.0, 0.1, 1 / 3),  # the first visit of 15 windows: a mean of the 3 seen
        (15, 15.0, 0.1, 1 / 15),
    ],
)
def test_the_offset_variance_factor_by_hand(
    visits: int, per_visit: float, g: float, factor: float
) -> None:
    assert offset_var_factor(visits, per_visit, g) == pytest.approx(factor)


def test_a_phase_seen_few_times_has_the_predictive_band() -> None:
    """A phase's band includes the uncertainty of its offset: seen once, its spread
    counts twice (σ²·(1 + 1)); the recent spread alone would have been the band before."""
    s = Season.new(3_600_000, W15)  # 4 phases of 15 minutes, one window a visit
    for i in range(4):  # the first period: each window's variance 4, its mean 10
        s.learn(i * W15, 10.0, 4.0, plain_mean=None, window_ms=W15, alpha=0.5)
    assert (s.spreads, s.var) == ([4.0] * 4, 0.0)
    assert s.std_at(5 * W15, W15, 0.5) == pytest.approx(math.sqrt(8.0))  # not 2
    # Phase 0's second visit, predicted exactly: r = 0, its spread stays 4, the recent
    # spread becomes 4. Its offset moved by g = gamma·(1 - alpha) = (2 - √2)/4:
    # (1 - g)² + g² = 3/4 of the spread on top of it.
    s.learn(4 * W15, 10.0, 4.0, plain_mean=10.0, window_ms=W15, alpha=0.5)
    assert (s.spreads[0], s.visits[0], s.var) == (4.0, 2, 4.0)
    assert s.std_at(8 * W15, W15, 0.5) == pytest.approx(math.sqrt(4.0 * 1.75))


def test_winsorized_at_the_error_band_once_it_has_a_spread() -> None:
    s = Season.new(3_600_000, W15)
    for i, x in enumerate([10.0, 10.0, 10.0, 10.0, 11.0]):
        s.learn(i * W15, x, 0.0, plain_mean=10.0, window_ms=W15, alpha=0.5)
    assert (s.level, s.var) == (10.5, 1.0)
    # A window at 1000 enters as prediction + 2·std; the error average sees it raw.
    pred, std = s.predict(5 * W15), s.std_at(5 * W15)
    assert (pred, std) == (10.5, 1.0)
    s.learn(5 * W15, 1000.0, 0.0, plain_mean=10.0, window_ms=W15, alpha=0.5, clip=2.0)
    assert s.level == 10.5 + 0.5 * 2.0
    assert s.err > 1000


def _day(rule: Rule, start_ms: int, level: float, rnd: random.Random) -> Partial:
    """A square daily cycle: 20 ± 1 from 00:00 to 09:00, 70 ± 5 from 09:00 to 18:00, 20
    after; three samples a 15-minute window."""
    hour = (start_ms % 86_400_000) / 3_600_000
    high = 9 <= hour < 18
    mu, sd = (70.0 + level, 5.0) if high else (20.0 + level, 1.0)
    ts = [start_ms + k * 300_000 for k in range(3)]
    (p,) = partials(ts, [rnd.gauss(mu, sd) for _ in ts], rule.window_ms)
    return p


def _run(seasons: tuple[int, ...], days: int, jump_at: int | None = None) -> list[str]:
    rule = Rule(
        window_ms=W15,
        alpha=ew_alpha(W15, 6 * 3600),
        min_history=30,
        season_periods_s=seasons,
    )
    rnd = random.Random(13)
    b, state = Baseline(), dict[int, Season]()
    out: list[str] = []
    for i in range(days * 96):
        # The jump: +10 (10 quiet-phase standard deviations) for an hour at 03:00.
        level = 10.0 if jump_at is not None and jump_at <= i < jump_at + 4 else 0.0
        out.append(rule.judge(b, _day(rule, i * W15, level, rnd), seasons=state)[0])
    return out


def test_a_daily_cycle_is_learned_its_edges_do_not_alarm_and_a_small_jump_does() -> None:
    jump = 5 * 96 + 12  # day 5, 03:00
    plain = _run((), 6, jump)
    seasonal = _run((DAY_S,), 6, jump)
    after = slice(3 * 96, jump)  # from day 3 (two periods learned) to the jump
    # The plain normal follows part of the cycle and fires on its edges; the season does not
    # (a chance window of the noisy phase at most).
    assert plain[after].count("ERROR") >= 10
    assert seasonal[after].count("ERROR") <= 1
    # The jump (+10 in the quiet phase, inside the plain normal's wide band) is an ERROR for
    # each of its four windows with the season, and missed by the plain normal. (The band
    # is not 2 quiet-phase deviations: the recent spread, which still remembers the noisy
    # phase, bounds it from below.)
    assert seasonal[jump : jump + 4] == ["ERROR"] * 4
    assert "ERROR" not in plain[jump : jump + 4]


def test_without_a_cycle_the_plain_normal_is_kept() -> None:
    rule = Rule(
        window_ms=W15, alpha=ew_alpha(W15, 6 * 3600), min_history=30, season_periods_s=(DAY_S,)
    )
    rnd = random.Random(21)
    b, state = Baseline(), dict[int, Season]()
    for i in range(5 * 96):
        (p,) = partials([i * W15 + k for k in range(3)], [rnd.gauss(50, 4) for _ in range(3)], W15)
        mean_before = b.mean
        normal = rule.judge(b, p, seasons=state)[2]
        if normal.source == "learned":
            assert normal.mean == mean_before  # the plain normal's, never the season's
    assert state[DAY_S].scored > 96 and not state[DAY_S].better(W15)


def test_restart_from_a_checkpoint_gives_the_same_results(tmp_path: Path) -> None:
    rule = Rule(
        window_ms=W15,
        alpha=ew_alpha(W15, 6 * 3600),
        min_history=30,
        season_periods_s=(DAY_S, 7 * DAY_S),
    )
    rnd = random.Random(4)
    windows = [_day(rule, i * W15, 0.0, rnd) for i in range(4 * 96)]
    whole_b, whole_s = Baseline(), dict[int, Season]()
    whole = [rule.judge(whole_b, p, seasons=whole_s)[:2] for p in windows]
    series = Series("cpu", {"h": "a"}, SeriesWindows(W15, 0))
    store, tp = StateStore(tmp_path, W15, 0), TopicPartition("samples", 0)
    out = [rule.judge(series.baseline, p, seasons=series.seasons)[:2] for p in windows[:250]]
    store.save(tp, PartitionState(offset=7, series={"k": series}))
    back = store.load(tp).series["k"]
    assert set(back.seasons) == {DAY_S, 7 * DAY_S} and back.seasons == series.seasons
    out += [rule.judge(back.baseline, p, seasons=back.seasons)[:2] for p in windows[250:]]
    assert out == whole


def test_a_checkpoint_without_seasons_loads_and_starts_them(tmp_path: Path) -> None:
    store, tp = StateStore(tmp_path, W15, 0), TopicPartition("samples", 1)
    store.save(tp, PartitionState(offset=3, series={"k": Series("m", {}, SeriesWindows(W15, 0))}))
    text = store.path(tp).read_text().replace(',"seasons":{}', "")
    assert '"seasons"' not in text
    store.path(tp).write_text(text)
    back = store.load(tp).series["k"]
    assert back.seasons == {}
    rule = Rule(window_ms=W15, season_periods_s=(DAY_S,))
    (p,) = partials([0], [1.0], W15)
    rule.judge(back.baseline, p, seasons=back.seasons)
    assert back.seasons[DAY_S].level == 1.0


def test_season_periods_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(DetectorSettings).anomaly_season_periods_s == (DAY_S, 7 * DAY_S)
    monkeypatch.setenv("ANOMALY_SEASON_PERIODS_S", " 86400 ")
    assert Rule.from_settings(load_settings(DetectorSettings)).season_periods_s == (DAY_S,)
    monkeypatch.setenv("ANOMALY_SEASON_PERIODS_S", "")
    assert load_settings(DetectorSettings).anomaly_season_periods_s == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("60", "between 3600"),
        ("86400,86400", "listed twice"),
        ("a day", "integer"),
        ("3600,7200,10800,14400,18000", "at most 4"),
    ],
)
def test_bad_season_periods_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("ANOMALY_SEASON_PERIODS_S", value)
    with pytest.raises(SettingsError, match="ANOMALY_SEASON_PERIODS_S") as e:
        load_settings(DetectorSettings)
    assert reason.lower() in str(e.value).lower()
