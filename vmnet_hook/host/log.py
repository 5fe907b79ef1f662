"""Syslog, tag ``vmnet-hook``: libvirt keeps a hook's stderr only when it fails."""

from __future__ import annotations

import syslog

from vmnet_hook.text import printable

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
        """One line; control characters (from domain, pod or link names) shown escaped."""
        priority = _LEVELS[level]
        if priority <= self.threshold:
            syslog.syslog(priority, printable(message))
