"""scripts/demo_live.py: the demo's live incident shifts one series, only while it is on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from sla_common.demo import live_exposition

REPO = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_live", REPO / "scripts" / "demo_live.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_live"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _values(text: str) -> dict[str, float]:
    return {k: float(v) for k, _s, v in (line.rpartition(" ") for line in text.splitlines())}


def test_the_incident_shifts_its_series_only_between_start_and_end(tmp_path: Path) -> None:
    dl = _module()
    now = 1_700_000_000.0
    inc = dl.fd_jump(now, after_s=60, duration_s=120)
    path = tmp_path / "incident.json"
    path.write_text(inc.to_json())
    loaded = dl.LiveIncident.load(path)
    assert loaded == inc and json.loads(path.read_text())["shift"] == dl.INCIDENT_SHIFT
    for t, on in ((now, False), (now + 59, False), (now + 60, True), (now + 179, True),
                  (now + 180, False)):  # fmt: skip
        plain = live_exposition(42, t)
        shifted = _values(dl.with_incident(plain, t, loaded))
        base = _values(plain)
        assert set(shifted) == set(base)
        for key, v in base.items():
            want = v + dl.INCIDENT_SHIFT if on and key == inc.key else v
            assert shifted[key] == want, (t, key)
    assert inc.key in _values(live_exposition(42, now))  # the incident's series is exposed


def test_no_file_or_a_bad_one_is_no_incident(tmp_path: Path) -> None:
    dl = _module()
    assert dl.LiveIncident.load(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert dl.LiveIncident.load(tmp_path / "bad.json") is None
    text = live_exposition(42, 1_700_000_000.0)
    assert dl.with_incident(text, 1_700_000_000.0, None) == text


def test_live_noise_is_fresh_per_step_deterministic_and_within_3_sigma() -> None:
    dl = _module()
    now = 1_700_000_000.0
    scales = dl.noise_scales(42, now)
    assert 30 < scales['node_filefd_allocated{instance="demo-host:9100",job="host"}'] < 100
    seen: dict[str, set[float]] = {}
    for step in range(8):
        t = now + 15 * step
        plain = _values(live_exposition(42, t))
        noisy = _values(dl.with_noise(live_exposition(42, t), 42, t, scales))
        assert noisy == _values(dl.with_noise(live_exposition(42, t), 42, t, scales))
        for key, v in plain.items():
            assert abs(noisy[key] - v) <= 3 * scales[key] + 1, key
            seen.setdefault(key, set()).add(noisy[key] - v)
    assert all(len(d) > 4 for d in seen.values())  # a different draw at each step
