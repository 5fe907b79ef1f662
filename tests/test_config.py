"""Pure tier: configuration file and environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmnet_hook.config import Config, load
from vmnet_hook.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config"
    path.write_text(text)
    return str(path)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load(str(tmp_path / "absent"), environ={}) == Config()


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[vmnet-hook]\nstate_dir = /tmp/s\ndeadline_seconds = 3\n"
                 "allowed_namespaces = prod, staging\n")  # fmt: skip
    config = load(path, environ={"VMNET_HOOK_DEADLINE_SECONDS": "7", "HOME": "/root"})
    assert (config.state_dir, config.deadline_seconds, config.allowed_namespaces) == (
        "/tmp/s", 7, ("prod", "staging"))  # fmt: skip


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[vmnet-hook]\nstate_dri = /x\n", {}, "unknown key 'state_dri'"),
        ("[vmnet]\n", {}, "unknown section [vmnet]"),
        ("", {"VMNET_HOOK_DEADLINE": "3"}, "unknown variable VMNET_HOOK_DEADLINE"),
        ("[vmnet-hook]\ndeadline_seconds = soon\n", {}, "deadline_seconds: 'soon' is not a whole"),
        ("[vmnet-hook]\ndeadline_seconds = 0\n", {}, "deadline_seconds: '0'"),
        ("[vmnet-hook]\nlog_level = loud\n", {}, "log_level: 'loud' is not one of debug"),
        ("[vmnet-hook]\nproc_root = proc\n", {}, "proc_root: 'proc' is not an absolute path"),
        ("not ini at all\n", {}, "config file"),
        ("[vmnet-hook]\nallowed_namespaces =\n", {}, "allowed_namespaces: '' names no namespace"),
        ("", {"VMNET_HOOK_STATE_DIR": "/tmp/link/../x"}, "'/tmp/link/../x' holds '..'; name"),
        ("[vmnet-hook]\nstate_dir = //\n", {}, "state_dir: '//' is a directory of the system"),
        ("[vmnet-hook]\nstate_dir = //run\n", {}, "state_dir: '//run' is a directory of the"),
        ("[vmnet-hook]\nallowed_namespaces = , ,\n", {}, "', ,' names no namespace; list"),
        ("", {"VMNET_HOOK_ALLOWED_NAMESPACES": " "}, "allowed_namespaces: ' ' names no"),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ=environ)
    assert message in str(caught.value)


def test_a_link_to_a_fifo_is_judged_before_it_is_opened(tmp_path: Path) -> None:
    """Opening a FIFO for reading releases a writer blocked in its open: a file that acts
    on open must never be opened. The writer still waits after the refusal."""
    import threading

    from vmnet_hook import files

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    opened = threading.Event()

    def writer() -> None:
        with open(fifo, "wb"):  # blocks until a reader opens the FIFO
            opened.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(files.NotReadable, match="not a regular file but a FIFO"):
            files.read_regular(str(tmp_path / "link"), 100, follow=True)
        assert not opened.wait(0.5)
    finally:  # let the writer go, should it still wait; never block here
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(5)


@pytest.mark.parametrize(
    ("value", "message"),
    [("/run/vm\u0085net", "holds a control character"),
     ("/run/vm\u2028net", "holds a control character"),
     ("/", "is a directory of the system, not one of its own"),
     ("/run/", "is a directory of the system, not one of its own"),
     ("/var/lib/../tmp", "holds '..'; name the directory itself")],
)  # fmt: skip
def test_a_state_dir_that_is_not_a_dedicated_printable_path_is_refused(
    value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load("", environ={"VMNET_HOOK_STATE_DIR": value})


def test_no_config_path_means_the_environment_and_defaults() -> None:
    """What release end falls back on when the config file is broken (hook.place)."""
    assert load("", environ={}) == Config()
    assert load("", environ={"VMNET_HOOK_STATE_DIR": "/run/x"}).state_dir == "/run/x"
