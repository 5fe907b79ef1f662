"""One check's verdict, and the two ways of making one."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    severity: str = "error"  # "warning": shown, but does not make the doctor fail

    @property
    def failed(self) -> bool:
        return not self.ok and self.severity == "error"

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.failed else "warn"

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, **asdict(self)}


def ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def fail(name: str, detail: str, fix: str, severity: str = "error") -> Check:
    return Check(name, False, detail, fix, severity)
