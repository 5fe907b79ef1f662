"""The one table of libvirt operations the hook acts on: which handler, what tells the
gate there is work, and whether a failure may reach libvirt.

Read by the gate on every call, so the standard library's built-ins alone: no dataclasses,
no typing at run time (a few milliseconds each on a path whose budget is the interpreter's
start-up). ``hook.handlers`` maps each handler name to its function.
"""

ANNOTATION = "annotation"  # work when the domain XML holds the vmnet namespace
STATE = "state"  # work when a state file is recorded for the domain's UUID


class Operation:
    """What the hook does at one ``(operation, subop)``."""

    __slots__ = ("handler", "may_fail", "needs")

    def __init__(self, handler: str, needs: str, may_fail: bool) -> None:
        self.handler = handler  # a name in hook.handlers.HANDLERS_BY_NAME
        self.needs = needs  # ANNOTATION or STATE
        self.may_fail = may_fail  # False: libvirt would kill a running VM, so exit 0

    def __repr__(self) -> str:
        return f"Operation({self.handler!r}, {self.needs!r}, may_fail={self.may_fail})"


OPERATIONS = {
    ("prepare", "begin"): Operation("prepare", ANNOTATION, may_fail=True),
    ("migrate", "begin"): Operation("filter_xml", ANNOTATION, may_fail=True),
    ("restore", "begin"): Operation("filter_xml", ANNOTATION, may_fail=True),
    ("release", "end"): Operation("release", STATE, may_fail=False),
    ("reconnect", "begin"): Operation("check", ANNOTATION, may_fail=False),
    ("attach", "begin"): Operation("check", ANNOTATION, may_fail=False),
}
