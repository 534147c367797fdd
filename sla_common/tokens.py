"""The policy of a service's bearer token, one rule for every service that has one.

- ``ENVIRONMENT=production``: required, at least :data:`MIN_PRODUCTION_TOKEN_CHARS`
  characters, not a placeholder (the service does not start otherwise).
- ``test``: optional, but never a placeholder. ``local``: optional, a placeholder is warned
  about.

Messages name the variable, never the token.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

log = logging.getLogger(__name__)

PLACEHOLDER_TOKENS = frozenset({"changethis", "changeme", "secret", "token", "password"})
MIN_PRODUCTION_TOKEN_CHARS = 16


def blank_is_unset(value: object) -> object:
    """For a ``mode="before"`` validator: ``NAME=`` in an env file means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def readable_file(name: str, path: Path | None) -> None:
    """Raise ValueError (naming ``name``) unless ``path`` is None or a readable file."""
    if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
        raise ValueError(f"{name}: {str(path)!r} is not a readable file")


def check_token(name: str, token: SecretStr | None, environment: str) -> None:
    """Raise ValueError (naming ``name``) when ``token`` breaks the policy above."""
    value = token.get_secret_value() if token is not None else None
    if value is None:
        if environment == "production":
            raise ValueError(
                f"{name} must be set when ENVIRONMENT=production "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return
    if value.lower() in PLACEHOLDER_TOKENS:
        if environment != "local":
            raise ValueError(f"{name} is a placeholder: use a random one outside ENVIRONMENT=local")
        log.warning("%s is a placeholder: refused outside ENVIRONMENT=local", name)
    if environment == "production" and len(value) < MIN_PRODUCTION_TOKEN_CHARS:
        raise ValueError(
            f"{name} is shorter than {MIN_PRODUCTION_TOKEN_CHARS} characters; "
            "use a random one in production"
        )


def same_token(given: str, expected: str) -> bool:
    """Compared in constant time (in the length of ``expected``)."""
    return secrets.compare_digest(given.encode(), expected.encode())
