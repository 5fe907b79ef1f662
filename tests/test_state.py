"""State files: read only when they are what the hook wrote (regular, bounded, of this
schema), reported when not; written whole or not at all. Real files in a temporary
directory; the tmpfs faults (full, read-only) are in tests/test_state_kernel.py."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from vmnet_hook.core.annotation import PortRange
from vmnet_hook.errors import StateError
from vmnet_hook.host.state import (
    MAX_BYTES,
    VERSION,
    Binding,
    DomainState,
    StateStore,
    UnreadableState,
)
from vmnet_hook.podnet.plan import Dns, GuestNic
from vmnet_hook.podnet.record import GuestRecord

UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
OTHER = "11111111-1111-4111-8111-111111111111"
BINDING = Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10, "net:[4026532]", "eth0")
NIC = GuestNic(UUID, "52:54:00:00:00:02", "vnbbbb", "eth1", "vmnbbbb", "vmnet_bbbb",
               "10.0.2.0/30", "10.0.2.1", "10.0.2.2", "52:54:00:00:00:03", "198.51.100.7",
               1500, True, (PortRange("tcp", 9091, 9091),), Dns(("10.96.0.10",), ("svc",), "x"))  # fmt: skip
GUEST = GuestRecord(NIC, 4, 4026533, ("/proc/1/ns/net",), "0", "/run/x.pid", "/run/x.leases",
                    1234, 1700000000.5)  # fmt: skip
STATE = DomainState("vm1", (BINDING,), (GUEST,))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    made = StateStore(str(tmp_path / "state"))
    os.mkdir(made.state_dir, 0o700)
    return made


def unreadable(store: StateStore, uuid: str = OTHER) -> str:
    """The reason ``load`` gives, which ``scan`` reports the same way."""
    with pytest.raises(UnreadableState) as caught:
        store.load(uuid)
    (reported,) = store.scan().unreadable
    assert (reported.path, reported.reason) == (store.path(uuid), caught.value.reason)
    assert str(caught.value) == (
        f"state file {store.path(uuid)} is unreadable ({caught.value.reason}): if no running "
        f"domain has UUID {uuid}, remove it; `vmnet-hook status` lists it"
    )
    return caught.value.reason


def written(**changes: object) -> dict[str, object]:
    return {"version": VERSION, **asdict(STATE), **changes}


def test_what_save_writes_load_reads_back_with_its_version(store: StateStore) -> None:
    store.save(UUID, STATE)
    assert store.load(UUID) == STATE
    assert json.loads(Path(store.path(UUID)).read_text())["version"] == VERSION
    assert sorted(os.listdir(store.state_dir)) == [f"{UUID}.json"]  # no temporary left
    assert store.scan().states == {UUID: STATE} and store.scan().unreadable == ()


def test_a_file_from_before_versions_still_loads(store: StateStore) -> None:
    """Files written before ``version`` existed: same shape, and fields added later with
    a default (a binding's pod NIC, ``guests``) may be absent."""
    old = {"domain": "vm1", "bindings": [{"mac": "52:54:00:00:00:01", "placeholder": "vnaaaa",
                                          "host_veth": "vethA", "ifindex": 10}]}  # fmt: skip
    Path(store.path(OTHER)).write_text(json.dumps(old))
    bound = Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10)
    assert store.load(OTHER) == DomainState("vm1", (bound,))


def raw(text: str | bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(text if isinstance(text, bytes) else text.encode())


def as_json(value: object) -> Callable[[Path], object]:
    return raw(json.dumps(value))


def without(key: str) -> dict[str, object]:
    body = written()
    del body[key]
    return body


def binding_with(**changes: object) -> dict[str, object]:
    return written(bindings=[{**asdict(BINDING), **changes}])


def guest_nic_with(**changes: object) -> dict[str, object]:
    guest = asdict(GUEST)
    guest["nic"] = {**guest["nic"], **changes}
    return written(guests=[guest])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (raw(""), "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (raw('{"domain": "vm1", "bindings": ['), "not JSON: Expecting value: line 1 column 32 (char 31)"),
        (raw(b"\xff\xfe{}"), "not UTF-8 text"),
        (raw("[" * 100_000), "JSON nested too deeply"),
        (as_json([]), "the file is not a JSON object"),
        (as_json(written(version=2)), "written by another version of vmnet-hook: state version 2, this one reads 1"),
        (as_json(written(version="1")), "written by another version of vmnet-hook: state version '1', this one reads 1"),
        (as_json(written(version=True)), "written by another version of vmnet-hook: state version True, this one reads 1"),
        (as_json(written(owner="someone")), "unexpected field owner"),
        (as_json(without("domain")), "missing field domain"),
        (as_json(without("guests")), "missing field guests"),  # a versioned file is whole
        (as_json(written(domain=7)), "domain is a number, not a string"),
        (as_json(written(bindings={})), "bindings is an object, not an array"),
        (as_json(written(bindings=["x"])), "bindings[0] is a string, not an object"),
        (as_json(binding_with(ifindex="10")), "bindings[0].ifindex is a string, not an integer"),
        (as_json(binding_with(ifindex=10.0)), "bindings[0].ifindex is a number, not an integer"),
        (as_json(binding_with(ifindex=True)), "bindings[0].ifindex is a boolean, not an integer"),
        (as_json(binding_with(ifindex=None)), "bindings[0].ifindex is null, not an integer"),
        (as_json(binding_with(**{"new\x1bfield": 1})), "unexpected field bindings[0].'new\\x1bfield'"),
        (as_json(guest_nic_with(mtu=[1500])), "guests[0].nic.mtu is an array, not an integer"),
        (as_json(guest_nic_with(pod_ports=[{"proto": "tcp", "first": 1}])), "missing field guests[0].nic.pod_ports[0].last"),
        (as_json(guest_nic_with(dns={"servers": [], "search": [], "source": 1})), "guests[0].nic.dns.source is a number, not a string"),
        (as_json(guest_nic_with(default_route=1)), "guests[0].nic.default_route is a number, not a boolean"),
    ],
)  # fmt: skip
def test_a_file_of_another_shape_is_unreadable_and_says_where(
    store: StateStore, make: Callable[[Path], object], reason: str
) -> None:
    make(Path(store.path(OTHER)))
    assert unreadable(store) == reason


def test_null_and_whole_numbers_where_the_record_allows_them(store: StateStore) -> None:
    guest = {**asdict(GUEST), "dnsmasq_pid": None, "dnsmasq_started": 1700000000}
    Path(store.path(OTHER)).write_text(json.dumps(written(guests=[guest])))
    (loaded,) = store.load(OTHER).guests  # type: ignore[union-attr]
    assert (loaded.dnsmasq_pid, loaded.dnsmasq_started) == (None, 1700000000.0)


def test_a_fifo_is_refused_without_blocking(store: StateStore) -> None:
    os.mkfifo(store.path(OTHER))  # opened for reading, it would wait for a writer forever
    assert unreadable(store) == "not a regular file but a FIFO"


def test_a_symbolic_link_is_not_followed(store: StateStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(written()))  # a perfectly good state, somewhere else
    os.symlink(elsewhere, store.path(OTHER))
    assert unreadable(store) == "not a regular file but a symbolic link"


def test_a_directory_a_socket_and_a_device_are_refused(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.mkdir(store.path(OTHER))
    assert unreadable(store) == "not a regular file but a directory"
    os.rmdir(store.path(OTHER))
    monkeypatch.chdir(store.state_dir)  # a socket's path is short
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(f"{OTHER}.json")
        assert unreadable(store) == "not a regular file but a socket"
    os.unlink(store.path(OTHER))
    os.mknod(store.path(OTHER), 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero: never ends
    assert unreadable(store) == "not a regular file but a character device"


def test_a_file_over_the_cap_is_not_read(store: StateStore) -> None:
    padded = json.dumps(written(domain="v" * MAX_BYTES))
    Path(store.path(OTHER)).write_text(padded)
    assert unreadable(store) == f"larger than {MAX_BYTES} bytes"


def test_a_json_name_that_is_no_uuid_is_reported_other_names_are_not_state(
    store: StateStore,
) -> None:
    store.save(UUID, STATE)
    for name in (".lock", f".{UUID}.abc123.tmp", f"{UUID}.vmnbbbb.pid", "notes.txt"):
        Path(store.state_dir, name).write_text("{")
    assert store.scan().unreadable == ()
    Path(store.state_dir, "vm1.json").write_text(json.dumps(written()))
    scan = store.scan()
    assert scan.states == {UUID: STATE}
    assert [str(e) for e in scan.unreadable] == [
        f"state file {store.state_dir}/vm1.json is unreadable (its name is not <uuid>.json): "
        "vmnet-hook never writes a file of that name: move it out of the directory"
    ]


def test_a_missing_directory_holds_nothing_and_one_that_is_a_file_is_named(
    tmp_path: Path,
) -> None:
    assert StateStore(str(tmp_path / "none")).scan().states == {}
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError) as caught:
        StateStore(str(tmp_path / "file")).scan()
    assert str(caught.value) == (
        f"state directory {tmp_path}/file is not a directory (Not a directory); its files "
        "cannot be listed: remove what stands in its way, or set state_dir to another directory"
    )


def test_save_into_a_path_that_is_a_file_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError) as caught:
        StateStore(str(tmp_path / "file" / "state")).save(UUID, STATE)
    assert str(caught.value) == (
        f"state directory {tmp_path}/file/state is not a directory (Not a directory): "
        "remove what stands in its way, or set state_dir to another directory"
    )


def test_an_interrupted_save_leaves_no_temporary_and_the_old_state(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(UUID, STATE)

    def interrupted(_fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(UUID, DomainState("vm1", ()))
    monkeypatch.undo()
    assert os.listdir(store.state_dir) == [f"{UUID}.json"]
    assert store.load(UUID) == STATE


def test_stale_temporaries_are_swept_on_save_fresh_ones_are_left(store: StateStore) -> None:
    """A writer killed mid-save leaves ``.<uuid>.*``; one still writing is seconds old."""
    dead, live = (
        Path(store.state_dir, f".{OTHER}.k1ll3d.tmp"),
        Path(store.state_dir, f".{OTHER}.l1ve"),
    )
    for path in (dead, live):
        path.write_text("{")
    hour_ago = time.time() - 3600
    os.utime(dead, (hour_ago, hour_ago))
    keep = Path(store.state_dir, ".keep")  # not a temporary name: never swept
    keep.write_text("")
    os.utime(keep, (hour_ago, hour_ago))
    store.save(UUID, STATE)
    assert sorted(os.listdir(store.state_dir)) == sorted([live.name, keep.name, f"{UUID}.json"])


def test_remove_is_idempotent(store: StateStore) -> None:
    store.save(UUID, STATE)
    store.remove(UUID)
    store.remove(UUID)
    assert store.load(UUID) is None and os.listdir(store.state_dir) == []


def test_stamp_changes_with_every_save(store: StateStore) -> None:
    assert store.stamp(UUID) is None
    store.save(UUID, STATE)
    first = store.stamp(UUID)
    assert store.scan().stamps == {UUID: first}
    store.save(UUID, STATE)
    assert store.stamp(UUID) != first
