"""Syslog, tag ``vmnet-hook``: libvirt keeps a hook's stderr only when it fails."""

from __future__ import annotations

import syslog

_LEVELS = {
    "debug": syslog.LOG_DEBUG,
    "info": syslog.LOG_INFO,
    "warning": syslog.LOG_WARNING,
    "error": syslog.LOG_ERR,
}


class Log:
    def __init__(self, level: str = "info") -> None:
        self.threshold = _LEVELS[level]
        syslog.openlog("vmnet-hook", syslog.LOG_PID, syslog.LOG_DAEMON)

    def __call__(self, level: str, message: str) -> None:
        priority = _LEVELS[level]
        if priority <= self.threshold:
            syslog.syslog(priority, message)
