"""Properties of the hook's entry point for any input (issue 11, rules 8 and 9): random
argv, random bytes or near-domain XML on stdin, random config text. No exception escapes
``gate.main``, the status is 0, 1 or 2, and every line on stderr is one printable line
that starts with ``vmnet-hook:``. Nothing is written outside the test's own state dir
(VMNET_HOOK_STATE_DIR is set, so no pointer is written to the default one either).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmnet_hook.config import Config
from vmnet_hook.hook import gate
from vmnet_hook.hook.operations import OPERATIONS

STEPS = [*OPERATIONS, ("started", "begin"), ("stopped", "end")]
KEYS = [*Config.__dataclass_fields__, "unknown_key"]
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


def near_domain(name: str, uuid: str, inner: str, tail: bytes) -> bytes:
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><metadata>"
        f'<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">{inner}</vmnet:interfaces>'
        "</metadata><devices><interface type='direct'><mac address='52:54:00:12:34:56'/>"
        "<source dev='vn3f9a0c1d2e4b'/></interface></devices></domain>"
    ).encode("utf-8", "surrogatepass") + tail


ARGV = st.one_of(
    st.lists(TEXT, max_size=6),
    st.tuples(TEXT, st.sampled_from(STEPS), st.lists(TEXT, max_size=1)).map(
        lambda t: [t[0], *t[1], *t[2]]
    ),
)
XML = st.one_of(
    st.binary(max_size=512),
    st.builds(
        near_domain, TEXT, st.one_of(st.uuids().map(str), TEXT), TEXT, st.binary(max_size=32)
    ),
)
CONFIG = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(
        lambda key, value: f"[vmnet-hook]\n{key} = {value}\n".encode("utf-8", "surrogatepass"),
        st.sampled_from(KEYS),
        TEXT,
    ),
)


@pytest.mark.kernel  # a prepare of near-domain XML may look up namespaces and links
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(argv=ARGV, xml=XML, config=CONFIG)
def test_any_input_gives_a_status_and_printable_lines(
    argv: list[str], xml: bytes, config: bytes | None, hook_env: dict[str, str], tmp_path: Path
) -> None:
    config_file = Path(hook_env["VMNET_HOOK_CONFIG"])
    if config is None:
        config_file.unlink(missing_ok=True)
    else:
        config_file.write_bytes(config)
        os.chmod(config_file, 0o644)
    out, err = io.StringIO(), io.StringIO()
    status = gate.main(argv, io.BytesIO(xml), out, err)
    assert status in (0, 1, 2)
    for line in err.getvalue().splitlines():
        assert line.startswith("vmnet-hook: ") and line.isprintable(), line
    if status:
        assert err.getvalue(), "a failure says why"
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    assert not state_dir.exists() or [p for p in state_dir.iterdir() if p.name != ".lock"] == []


@given(st.text(max_size=200))
def test_printable_shows_every_character_a_terminal_would_act_on(text: str) -> None:
    from vmnet_hook.text import printable

    shown = printable(text)
    assert shown.isprintable()
    assert (shown == text) == text.isprintable()
