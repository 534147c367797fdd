"""Write the rule file Prometheus loads, and ask Prometheus to reload it.

After every SLO write the whole file is generated again from MySQL (under a lock, so two
concurrent writes end with a file holding both) and replaced atomically: Prometheus never
reads half a file. Then ``POST PROMETHEUS_URL/-/reload`` (``--web.enable-lifecycle``, kept on
loopback / the compose network). A failed write or reload does not undo the stored SLO: the
answer says so (``X-Rules-Status``), the log says why, and the next write retries.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from sla_manager.models import Sli
from sla_manager.settings import SlaSettings
from sla_manager.slo.model import Slo
from sla_manager.slo.rules import RuleSet, SloDefinition, rule_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    status: str  # not_configured | written | reloaded | write_failed | reload_failed
    detail: str = ""


def definitions(slos: Iterable[Slo], slis: dict[str, Sli]) -> list[SloDefinition]:
    return [
        SloDefinition(s.name, s.spec(), slis.get(s.sli) if s.sli is not None else None)
        for s in slos
    ]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``: a temporary file in the same directory, then a rename (0644:
    Prometheus may run as another user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # rules are not secret, and Prometheus may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RulePublisher:
    def __init__(self, settings: SlaSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    def render(self, slos: Iterable[Slo], slis: dict[str, Sli]) -> RuleSet:
        return rule_set(definitions(slos, slis), self.settings.slo_rule_config())

    def publish(self, rules: RuleSet) -> Published:
        path = self.settings.slo_rules_file
        if path is None:
            return Published("not_configured", "SLO_RULES_FILE is not set")
        with self._lock:
            try:
                write_atomically(path, rules.yaml())
            except OSError as e:
                log.error("could not write the SLO rules to %s: %s", path, e)
                return Published("write_failed", f"{type(e).__name__}: {e.strerror}")
            if not self.settings.slo_prometheus_reload:
                return Published("written")
            url = f"{self.settings.prometheus_url.rstrip('/')}/-/reload"
            try:
                response = httpx.post(url, timeout=self.settings.prometheus_timeout_s)
            except httpx.HTTPError as e:
                log.warning("rules written to %s, but Prometheus did not reload: %s", path, e)
                return Published("reload_failed", type(e).__name__)
            if response.status_code != 200:
                # Prometheus refuses a file it cannot load and keeps the previous rules.
                log.error(
                    "Prometheus refused to reload %s: HTTP %d %s",
                    path,
                    response.status_code,
                    response.text[:500],
                )
                return Published("reload_failed", f"HTTP {response.status_code}")
        log.info("SLO rules written to %s and reloaded (%d groups)", path, len(rules.groups))
        return Published("reloaded")
