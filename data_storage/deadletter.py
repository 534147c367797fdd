"""Dead letters: how a record the consumer cannot store reaches ``KAFKA_DLQ_TOPIC``.

A dead letter is the original record (key, value, headers) plus ``dlq.*`` headers saying
why. A record the dead-letter topic cannot take as it is — larger than the producer's
``max_request_size`` or the broker's limit, or refused by the broker as an invalid record —
is sent once more *without its value*: its size and SHA-256 digest go in headers instead,
with its key and coordinates, so it can be found in the source topic. Those refusals are
not retried as they are: a retry cannot cure them. Should even that letter be refused, the
record is logged (coordinates, size, digest) and counted, and the consumer moves past it:
one record must never stop the stream.

Each :class:`DeadLetter` remembers its send: a retry of the batch (after the broker failed)
sends only the letters not yet acknowledged, and waits for one still in flight instead of
sending it twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from data_storage.metrics import StorageMetrics
from data_storage.validate import Rejected

log = logging.getLogger(__name__)

# Refusals of the record itself: the same bytes would be refused again.
UNSENDABLE = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
)
# A letter without its value keeps the record's key and headers while they stay this small.
MAX_KEPT_KEY_BYTES = 16 * 1024
MAX_KEPT_HEADER_BYTES = 16 * 1024
MAX_HEADER_TEXT = 1000

Headers = list[tuple[str, bytes]]

WHOLE, WITHOUT_VALUE, UNDELIVERABLE = "whole", "without_value", "undeliverable"


def digest(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def _text(value: object) -> bytes:
    return str(value)[:MAX_HEADER_TEXT].encode()


def source_headers(record: Any, why: Rejected, group: str) -> Headers:
    return [
        ("dlq.reason", why.reason.encode()),
        ("dlq.error", why.error.encode()),
        ("dlq.source.topic", record.topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
        ("dlq.source.timestamp", str(record.timestamp).encode()),
        ("dlq.consumer.group", group.encode()),
    ]


def whole_letter(
    record: Any, why: Rejected, group: str
) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers of the dead letter carrying the record as it is."""
    return record.key, record.value, [*(record.headers or []), *source_headers(record, why, group)]


def letter_without_value(
    record: Any, why: Rejected, group: str, omitted: str
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter of a record the topic refused whole: no value, its size and digest.

    The record's key and headers stay unless they are large themselves (then their sizes
    and the key's digest stand for them). ``omitted`` says why the value was left out.
    """
    value: bytes = record.value or b""
    own: Headers = list(record.headers or [])
    headers: Headers = []
    if sum(len(k) + len(v) for k, v in own) <= MAX_KEPT_HEADER_BYTES:
        headers += own
    else:
        headers.append(("dlq.source.headers.dropped", str(len(own)).encode()))
    headers += source_headers(record, why, group)
    headers += [
        ("dlq.value.omitted", _text(omitted)),
        ("dlq.source.size", str(len(value)).encode()),
        ("dlq.source.sha256", digest(value).encode()),
    ]
    key: bytes | None = record.key
    if key is not None and len(key) > MAX_KEPT_KEY_BYTES:
        headers += [
            ("dlq.source.key.size", str(len(key)).encode()),
            ("dlq.source.key.sha256", digest(key).encode()),
        ]
        key = None
    # A record needs a key or a value: a keyless letter gets an empty value.
    return key, (None if key is not None else b""), headers


@dataclass
class DeadLetter:
    """One record on its way to the dead-letter topic, across the retries of its batch."""

    record: Any  # kafka ConsumerRecord
    why: Rejected
    form: str = WHOLE
    omitted: str = ""  # why the value was left out (form WITHOUT_VALUE)
    future: Any = None  # the send in flight or done
    acknowledged: bool = False

    @property
    def finished(self) -> bool:
        return self.acknowledged or self.form == UNDELIVERABLE

    def payload(self, group: str) -> tuple[bytes | None, bytes | None, Headers]:
        if self.form == WHOLE:
            return whole_letter(self.record, self.why, group)
        return letter_without_value(self.record, self.why, group, self.omitted)

    def refused(self, error: BaseException) -> None:
        """The topic refused this form of the letter for good: the next, smaller form."""
        self.future = None
        if self.form == WHOLE:
            self.form, self.omitted = WITHOUT_VALUE, f"{type(error).__name__}: {error}"
        else:
            self.form = UNDELIVERABLE


@dataclass
class DeadLetterQueue:
    """Sends dead letters with ``producer`` and waits for the broker's acknowledgements."""

    producer: Any  # KafkaProducer
    topic: str
    group: str
    timeout_s: float
    metrics: StorageMetrics

    def send(self, letters: list[DeadLetter]) -> None:
        """Deliver every unfinished letter; KafkaError when some must be retried later.

        Letters acknowledged earlier are not sent again; refusals of a letter's size or
        form are not retried as they are (see the module's docstring).
        """
        while True:
            todo = [d for d in letters if not d.finished]
            if not todo:
                return
            for d in todo:
                if d.future is None or (d.future.is_done and not d.future.succeeded()):
                    self._send(d)
            with contextlib.suppress(KafkaTimeoutError):  # the futures not done say which
                self.producer.flush(timeout=self.timeout_s)
            failed: list[DeadLetter] = []
            for d in todo:
                self._settle(d, failed)
            if failed:
                first = failed[0].future
                cause = first.exception if first.is_done else "not acknowledged in time"
                raise KafkaError(f"{len(failed)} dead letter(s) not acknowledged: {cause}")

    def _send(self, d: DeadLetter) -> None:
        while not d.finished:
            key, value, headers = d.payload(self.group)
            try:
                d.future = self.producer.send(self.topic, key=key, value=value, headers=headers)
                return
            except UNSENDABLE as e:  # the producer's own size check, before any request
                self._refused(d, e)

    def _settle(self, d: DeadLetter, failed: list[DeadLetter]) -> None:
        f = d.future
        if d.finished or f is None:
            return
        if f.is_done and f.succeeded():
            d.acknowledged = True
            self._delivered(d)
        elif f.is_done and isinstance(f.exception, UNSENDABLE):
            self._refused(d, f.exception)  # the next round sends the smaller form
        else:
            failed.append(d)

    def _refused(self, d: DeadLetter, error: BaseException) -> None:
        r = d.record
        d.refused(error)
        if d.form == WITHOUT_VALUE:
            log.warning(
                "dead letter of %s[%d]@%d refused as it is (%s: %s); sending it without its "
                "value (%d bytes, sha256 %s)",
                r.topic,
                r.partition,
                r.offset,
                type(error).__name__,
                error,
                len(r.value or b""),
                digest(r.value),
            )
            return
        self.metrics.dlq_undeliverable.inc()
        log.error(
            "%s[%d]@%d (%s: %s) cannot be dead-lettered even without its value (%s: %s); "
            "skipped: %d bytes, sha256 %s, key sha256 %s",
            r.topic,
            r.partition,
            r.offset,
            d.why.reason,
            d.why.error[:300],
            type(error).__name__,
            error,
            len(r.value or b""),
            digest(r.value),
            digest(r.key),
        )

    def _delivered(self, d: DeadLetter) -> None:
        r, why = d.record, d.why
        self.metrics.dlq_messages.labels(why.reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d%s: %s: %s",
            r.topic,
            r.partition,
            r.offset,
            " without its value" if d.form == WITHOUT_VALUE else "",
            why.reason,
            why.error[:300],
        )
