"""What every ``python -m <service>`` does first: settings from the environment, then the
logging they configure. Invalid settings are one logged line naming the variable, and the
caller exits with :data:`EXIT_BAD_SETTINGS`."""

from __future__ import annotations

import logging
from typing import TypeVar

from sla_common.logging import setup_logging
from sla_common.settings import CommonSettings, SettingsError, load_settings

EXIT_BAD_SETTINGS = 2

S = TypeVar("S", bound=CommonSettings)


def settings_and_logging(cls: type[S], log: logging.Logger) -> S | None:
    """``cls`` from the environment with logging set up from it; None (logged) if invalid."""
    try:
        settings = load_settings(cls)
    except SettingsError as e:
        setup_logging()
        log.error("%s", e)
        return None
    setup_logging(settings.log_level, settings.log_format)
    return settings
