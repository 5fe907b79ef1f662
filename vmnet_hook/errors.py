"""The one exception family. ``str(error)`` is a single line that says what to fix."""


class VmnetError(Exception):
    """Any error a user of vmnet-hook can meet."""


class ConfigError(VmnetError):
    """The configuration file or an environment override is invalid."""


class AnnotationError(VmnetError):
    """The domain XML or its vmnet annotation is malformed or unsafe."""


class PodNotFound(VmnetError):
    """The pod named by a selector has no network namespace on this host."""


class LinkRefused(VmnetError):
    """A link exists but is not one a VM may be attached to (not a veth, wrong peer...)."""


class PolicyRefused(VmnetError):
    """The pod is outside ``allowed_namespaces``."""


class BindError(VmnetError):
    """A placeholder could not be bound (or unbound) as an altname."""


class ReadError(VmnetError):
    """Netlink could not read what the kernel holds (a link, a namespace id)."""


class StateError(VmnetError):
    """A domain's state file cannot be read: what it bound is unknown."""


class DemoError(VmnetError):
    """The demo cannot build or start what it shows on this host."""


class PodNetError(VmnetError):
    """The pod side of a masqueraded NIC could not be read, made or undone."""


class InterfaceError(VmnetError):
    """A problem with one domain interface: names the domain and the MAC."""

    def __init__(self, domain: str, mac: str, cause: VmnetError) -> None:
        super().__init__(f"domain {domain!r}, interface {mac}: {cause}")
        self.cause = cause


class Failures(VmnetError):
    """Several problems found in one call; one line each."""

    def __init__(self, problems: list[VmnetError]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems
