"""The HTTP client's own log lines with secrets masked. ``httpx`` (or ``httpx2``, which newer ``openai``
releases use) logs every request at INFO, ``HTTP Request: POST http://user:password@host/v1/chat/completions
"HTTP/1.1 200 OK"``, and ``speechsum pairs``/``evaluate``/``synth`` log INFO: a base_url's credentials went
whole into their output and the pipeline's stage logs. :func:`mask_client_logs` puts a filter on those
loggers that rewrites each record with :func:`speechsum.utils.remote.without_keys`."""

from __future__ import annotations

import logging
from collections.abc import Callable

# the loggers that name a request's URL: the HTTP library's (both names), the openai client's debug lines
CLIENT_LOGGERS = ("httpx", "httpx2", "openai", "openai._base_client")


class MaskingFilter(logging.Filter):
    """Rewrites a record's message with ``mask`` (its arguments merged in) where that changes it."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: logging reports it itself
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_client_logs(mask: Callable[[str], str]) -> None:
    """Filter every record of :data:`CLIENT_LOGGERS` through ``mask`` (once per process: idempotent)."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter(mask))


def quiet_client_logs() -> None:
    """The HTTP library's one INFO line per request off (WARNING and above kept), under either name."""
    for name in CLIENT_LOGGERS[:2]:
        logging.getLogger(name).setLevel(logging.WARNING)
