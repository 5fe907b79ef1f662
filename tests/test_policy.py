"""Pure tier: allowed_namespaces refuses pods outside the listed namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmnet_hook.config import Config
from vmnet_hook.core.annotation import Selector
from vmnet_hook.core.policy import check
from vmnet_hook.errors import VmnetError

UID = "3f9a0c1d-2e4b-4c5d-8e6f-7a8b9c0d1e2f"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / f"prod_web-0_{UID}").mkdir()
    return Config(pod_log_dir=str(tmp_path), allowed_namespaces=("vms", "staging"))


def test_no_policy_allows_everything() -> None:
    check(Selector("pid", "1"), Config())


@pytest.mark.parametrize("selector", [Selector("pod", "vms/vm1"), Selector("pod", "staging/x")])
def test_pods_in_listed_namespaces_pass(config: Config, selector: Selector) -> None:
    check(selector, config)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            Selector("pod", "prod/web-0"),
            "pod=prod/web-0: namespace 'prod' is not in allowed_namespaces (vms, staging)",
        ),
        (
            Selector("pod-uid", UID),
            f"pod-uid={UID}: namespace 'prod' is not in allowed_namespaces",
        ),
        (
            Selector("pid", "42"),
            "pid=42: allowed_namespaces is set, so name the pod with pod= or pod-uid=",
        ),
        (Selector("pod-uid", "00000000-0000-4000-8000-000000000000"), "no kubelet log directory"),
    ],
)
def test_pods_elsewhere_are_refused(config: Config, selector: Selector, message: str) -> None:
    with pytest.raises(VmnetError) as caught:
        check(selector, config)
    assert message in str(caught.value)
