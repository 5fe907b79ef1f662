"""Pure tier: configuration file and environment overrides."""

from __future__ import annotations

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
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ=environ)
    assert message in str(caught.value)
