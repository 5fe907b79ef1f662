"""The ``vmnet-hook`` command: thin click commands over the core."""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from vmnet_hook import __version__, config
from vmnet_hook.cli.options import (
    connect_option,
    dev_option,
    json_option,
    prune_option,
    selector_from,
    selector_options,
    xml_argument,
)
from vmnet_hook.errors import VmnetError
from vmnet_hook.text import printable

if TYPE_CHECKING:  # the commands import their modules when they run
    from vmnet_hook.cli.libvirt import RunningDomains
    from vmnet_hook.cli.status import Places
    from vmnet_hook.host.netlink import Pyroute2Netlink


STDIN_CLOSED = False  # main() found descriptor 0 closed: /dev/null reads in its place


OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EBADF)


class OutputError(VmnetError):
    """stdout cannot be written (full, a closed pipe...)."""


class Commands(click.Group):
    """Every command behind one error wrapper: the project's errors become
    ``vmnet-hook: ...`` lines on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VmnetError as error:
            for line in str(error).splitlines():
                say(f"vmnet-hook: {line}", err=True)
            ctx.exit(1)


def say(text: str, err: bool = False) -> None:
    """Echo lines a user reads: names from pods and domain XML have their control
    characters shown escaped (vmnet_hook.text), never sent to the terminal. XML (as
    character references, core.rewrite.to_text) and JSON (ASCII) are escaped as they are
    written and go through click.echo as they are."""
    lines = ("\t".join(map(printable, line.split("\t"))) for line in text.split("\n"))
    echo("\n".join(lines), err=err)


def echo(text: str, err: bool = False, nl: bool = True) -> None:
    """click.echo, where stdout failing is an OutputError (one line on stderr) and
    stderr failing leaves nothing to say it on."""
    try:
        click.echo(text, err=err, nl=nl)
    except OSError as error:
        if not err:
            raise stdout_failed(error) from None


def stdout_failed(error: OSError) -> OutputError:
    """The error for stdout; what is still buffered goes to /dev/null, not into another
    error as the interpreter exits."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return OutputError(f"cannot write to stdout ({error.strerror or error})")


def _settings() -> config.Config:
    return config.load(config.config_path())


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmnet-hook")
def cli() -> None:
    """Connect libvirt domains' macvtap interfaces to their Kubernetes pods' NICs."""


@cli.command()
@xml_argument
def rewrite(xml_file: BinaryIO) -> None:
    """Print the domain XML with each annotated <source dev> set to its pod's host veth
    (network='l2'); a masqueraded NIC keeps its placeholder.

    Binds and builds nothing: for tools that `virsh create` a domain themselves.

    \b
    Example:
      vmnet-hook rewrite vm1.xml > vm1-here.xml
    """
    from vmnet_hook.core.annotation import parse_domain, parse_xml
    from vmnet_hook.core.rewrite import rewrite as rewritten
    from vmnet_hook.core.rewrite import to_text
    from vmnet_hook.hook.handlers import System, resolve_all, source_dev

    tree = parse_xml(xml_file.read())
    domain = parse_domain(tree)
    veths, _pods = resolve_all(domain, System(_settings()).resolver)
    echo(to_text(rewritten(tree, domain.claims, source_dev(veths))), nl=False)


@cli.command()
@selector_options
@dev_option
@json_option
def resolve(pod_dev: str, as_json: bool, **selectors: str | None) -> None:
    """Print the host end of a pod NIC's veth pair, checked at both ends.

    \b
    Example:
      vmnet-hook resolve --pod default/virt-launcher-vm1-x7k2p --dev eth0
    """
    from vmnet_hook.hook.handlers import System

    veth = System(_settings()).resolver.host_veth(selector_from(selectors), pod_dev)
    if as_json:
        record = {"name": veth.name, "ifindex": veth.index, "pod_dev": veth.pod_dev,
                  "pod_netns_inode": veth.pod_netns.ino}  # fmt: skip
        echo(json.dumps(record))
    else:
        say(veth.name)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("domain")
@click.argument("operation")
@click.argument("subop")
@click.argument("extra", required=False, default="-")
@click.pass_context
def hook(ctx: click.Context, domain: str, operation: str, subop: str, extra: str) -> None:
    """Do exactly what /etc/libvirt/hooks/qemu does, with the domain XML on stdin.

    \b
    Example:
      vmnet-hook hook vm1 prepare begin - < vm1.xml
    """
    from vmnet_hook.hook.gate import main as hook_main

    args = [domain, operation, subop, extra]
    ctx.exit(hook_main(args, sys.stdin.buffer, stdin_closed=STDIN_CLOSED))


@cli.command()
@click.option("--no-libvirt", is_flag=True, help="skip starting a domain even if libvirtd runs")
def demo(no_libvirt: bool) -> None:
    """Build a throwaway pod from kernel objects and connect a VM to it; needs root.

    \b
    Example:
      sudo vmnet-hook demo
    """
    from vmnet_hook.demo.run import run

    run(say, with_libvirt=not no_libvirt)


@cli.command()
@json_option
def pods(as_json: bool) -> None:
    """List every pod network namespace on this host, its NICs and their host veths.

    Each NIC is checked at both ends as `resolve` checks it; one that cannot be given to
    a VM says why. Pod names come from kubelet's log directories (pod_log_dir), pod UIDs
    and container ids from cgroups. Needs root: it reads inside each namespace.

    \b
    Example:
      vmnet-hook pods
      vmnet-hook pods --json | jq '.[] | select(.pods[0].name == "virt-launcher-vm1-x7k2p")'
    """
    from vmnet_hook.cli.pods import list_pods, to_json, to_table

    entries = list_pods(_settings())
    if as_json:
        echo(to_json(entries))
    else:
        say(to_table(entries))


@cli.command()
@xml_argument
@dev_option
@selector_options
@click.option("--mac", help="which interface (added as a direct interface if the domain lacks it)")
@click.option(
    "--network",
    type=click.Choice(["masquerade", "l2"]),
    help="the guest's network (default when not written: masquerade)",
)
@click.option(
    "--pod-ports", help="with masquerade, ports that stay with the pod: 'tcp/9091 udp/53'"
)
def annotate(
    xml_file: BinaryIO,
    pod_dev: str,
    mac: str | None,
    network: str | None,
    pod_ports: str | None,
    **selectors: str | None,
) -> None:
    """Add or update a domain's vmnet annotation and set a placeholder <source dev>.

    The output is ready for `virsh define`. The domain's one direct interface is used
    unless --mac names another; a domain with none gets one.

    \b
    Example:
      virsh dumpxml vm1 | vmnet-hook annotate --pod default/virt-launcher-vm1-x7k2p \\
          --dev eth0 > vm1.xml && virsh define vm1.xml
    """
    from vmnet_hook.core.annotate import annotate as annotated
    from vmnet_hook.core.annotation import parse_xml
    from vmnet_hook.core.rewrite import to_text

    tree = annotated(
        parse_xml(xml_file.read()), selector_from(selectors), pod_dev, mac, network, pod_ports
    )
    echo(to_text(tree), nl=False)


@cli.command()
@click.argument("domain", required=False)
@json_option
@prune_option
@connect_option
def status(domain: str | None, as_json: bool, prune: bool, libvirt_uri: str) -> None:
    """Show what each running domain holds, checked live; exit 1 if a piece is missing,
    a state file cannot be read, or a domain libvirt does not run still holds pod NICs
    (`stale`: libvirt is asked with virsh; if it cannot be, nothing is marked stale).
    It reads the configured state dir, the default one and each one a pointer there
    names; one anyone but root could change is named, not read. With a broken config it
    reads the defaults' (VMNET_HOOK_STATE_DIR's), as release does, says why, and exits 1.

    For network='l2': the placeholder bound to the pod's host veth. For masquerade: the
    guest's link, its /30 and address, the DHCP server (alive or not), the nft table.
    --prune releases the stale ones (of DOMAIN, when given) and prints one line each;
    unreadable state files are only reported: see what the line says.

    \b
    Example:
      vmnet-hook status vm1
      vmnet-hook status --json | jq '.[] | select(.state != "ok" or .stale)'
      vmnet-hook status --prune
    """
    from functools import partial

    from vmnet_hook.cli import status as shown
    from vmnet_hook.cli.libvirt import virsh_running
    from vmnet_hook.host.netlink import Pyroute2Netlink

    if prune and as_json:
        raise click.UsageError("--prune prints lines, not JSON")
    where = shown.places(config.config_path())
    if config_broken := bool(where.config_error):
        read = [store.state_dir for store in where.stores]
        dirs = f"the state director{'y' if len(read) == 1 else 'ies'} {', '.join(read)}"
        say(f"vmnet-hook: {where.config_error}; status reads {dirs if read else 'nothing'}",
            err=True)  # fmt: skip
    netlink, running = Pyroute2Netlink(), partial(virsh_running, libvirt_uri)
    if prune:
        _prune(where, netlink, running, domain)
        click.get_current_context().exit(1 if config_broken else 0)
    found = shown.report(where.stores, (netlink, netlink), running, domain, where.refused)
    if as_json:
        echo(json.dumps(shown.to_json(found), indent=1))
    elif not found.rows and not found.unreadable and not found.refused:
        say("no bindings" + (f" for {domain}" if domain else ""))
    for line in [] if as_json else shown.to_lines(found):
        say(line)
    for note in shown.notes(found):
        say(f"vmnet-hook: {note}", err=True)
    if found.failed or config_broken:
        click.get_current_context().exit(1)


def _prune(
    where: Places, netlink: Pyroute2Netlink, running: RunningDomains, domain: str | None
) -> None:
    from functools import partial

    from vmnet_hook.cli.libvirt import LibvirtUnknown
    from vmnet_hook.cli.prune import prune
    from vmnet_hook.podnet.attach import disconnect_all

    try:
        disconnect = partial(disconnect_all, netlink=netlink)
        pruned = prune(where.stores, netlink, disconnect, running, domain)
        pruned.problems[:0] = [f"not pruned: {line}" for line in where.refused]
    except LibvirtUnknown as error:
        raise LibvirtUnknown(
            f"cannot ask libvirt which domains run ({error}): nothing pruned"
        ) from None
    for line in pruned.done or ([] if pruned.problems else ["nothing to prune"]):
        say(line)
    for line in pruned.notes + pruned.problems:
        say(f"vmnet-hook: {line}", err=True)
    if pruned.problems:
        click.get_current_context().exit(1)


@cli.command()
@click.option(
    "--hooks-dir",
    default="/etc/libvirt/hooks",
    show_default=True,
    help="libvirt's hooks directory, as install.sh's HOOKS_DIR",
)
@json_option
def doctor(hooks_dir: str, as_json: bool) -> None:
    """Check that this host can run the hook, and say what to fix; exit 1 if a check fails.

    Tries an altname on a veth in a throwaway network namespace, so run it as root on the
    libvirt host. Checks shown as `warn` (no kubelet pod logs) do not fail it.

    \b
    Example:
      sudo vmnet-hook doctor
      sudo vmnet-hook doctor --json | jq -r '.checks[] | select(.ok | not) | .fix'
    """
    from vmnet_hook.cli.doctor import Paths, render, report, run_checks

    paths = Paths(hooks_dir=hooks_dir.rstrip("/") or "/", config_path=config.config_path())
    checks = run_checks(paths)
    if as_json:
        echo(json.dumps(report(checks), indent=1))
    else:
        say(render(checks))
    if any(check.failed for check in checks):
        click.get_current_context().exit(1)


def main() -> None:
    """No traceback for any input: a closed stdin reads as empty, a closed or failing
    stdout is one line on stderr, and a bug is one line naming it."""
    from vmnet_hook.hook.gate import plug_closed_descriptors

    global STDIN_CLOSED
    stdout_closed, STDIN_CLOSED = sys.stdout is None, sys.stdin is None
    plug_closed_descriptors()
    if STDIN_CLOSED:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin)
    if stdout_closed:
        say("vmnet-hook: stdout is closed: nothing a command prints could be read", err=True)
        sys.exit(1)
    sys.exit(_run())


def _run() -> int:
    """The command's exit status; its own output and click's (--help...) that could not
    be written to stdout is one line on stderr."""
    try:
        try:
            status = cli.main(prog_name="vmnet-hook", standalone_mode=False)
        except SystemExit:  # click's, after a broken pipe (it wraps stdout to say nothing)
            if not type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
                raise
            raise stdout_failed(OSError(errno.EPIPE, os.strerror(errno.EPIPE))) from None
        except OSError as error:  # click's own output (--help) to a full stdout, say
            if error.filename is not None or error.errno not in OUTPUT_ERRNOS:
                raise
            raise stdout_failed(error) from None
        try:
            sys.stdout.flush()
        except OSError as error:
            raise stdout_failed(error) from None
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        say("vmnet-hook: aborted", err=True)
        return 1
    except OutputError as error:
        say(f"vmnet-hook: {error}", err=True)
        return 1
    except Exception as error:  # a bug; still one line, never a traceback
        say(f"vmnet-hook: internal error: {error!r}", err=True)
        return 1
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    main()
