"""Golden files: each `<case>.input.yaml` renders to exactly `<case>.expected.yaml`.

Regenerate after a deliberate change with `UPDATE_GOLDEN=1 pytest tests/unit/test_builders_golden.py`
and review the diff: the expected files are the documentation of what each builder produces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.builders import BuildContext, build_all
from baseline_operator.label_selectors import selector_from_json
from baseline_operator.spec import BaselineRef, NamespaceInfo, Section, parse_spec

GOLDEN = Path(__file__).parent / "golden"
INPUT_SUFFIX = ".input.yaml"
EXPECTED_SUFFIX = ".expected.yaml"
CASES = sorted(path.name.removesuffix(INPUT_SUFFIX) for path in GOLDEN.glob(f"*{INPUT_SUFFIX}"))
REQUIRED_CASES = {
    "full-example",
    "ingress-only-deny",
    "egress-open-metadata-block",
    "dns-with-nodelocal",
    "same-namespace",
    "limitrange-only",
    "quota-only",
    "rbac-placeholders",
    "pod-security-version",
    "audit-mode",
    "gke-cloud-dns",
    "metadata-block-beside-user-egress-policies",
}


def render(case: str) -> list[dict[str, Any]]:
    case_input = yaml.safe_load((GOLDEN / f"{case}{INPUT_SUFFIX}").read_text())
    spec = parse_spec(case_input["spec"])
    context = BuildContext(
        baseline=BaselineRef(**case_input["baseline"]),
        namespace=NamespaceInfo(case_input["namespace"]["name"], case_input["namespace"].get("labels") or {}),
        # The pod selectors of the namespace's own egress policies (the metadata block leaves those pods out).
        other_egress_selectors=tuple(
            selector_from_json(selector) for selector in case_input.get("otherEgressPodSelectors") or ()
        ),
    )
    sections = [Section(name) for name in case_input.get("sections", spec.sections)]
    return build_all(spec, context, sections)


def expected(case: str) -> Any:
    return yaml.safe_load((GOLDEN / f"{case}{EXPECTED_SUFFIX}").read_text())


@pytest.mark.parametrize("case", CASES)
def test_case_renders_exactly_its_expected_objects(case):
    actual = render(case)
    expected_path = GOLDEN / f"{case}{EXPECTED_SUFFIX}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        # safe_dump refuses anything that is not plain data (an enum member, a FrozenMap), which is
        # exactly what must never reach the API body.
        expected_path.write_text(yaml.safe_dump(actual, sort_keys=False, width=110))
    assert expected_path.exists(), f"{expected_path.name} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == expected(case)


@pytest.mark.parametrize("case", CASES)
def test_output_is_plain_json(case):
    actual = render(case)
    assert json.loads(json.dumps(actual)) == actual
    yaml.safe_dump(actual)


def test_required_cases_exist():
    assert set(CASES) >= REQUIRED_CASES


def test_every_expected_file_has_an_input():
    expected_cases = {path.name.removesuffix(EXPECTED_SUFFIX) for path in GOLDEN.glob(f"*{EXPECTED_SUFFIX}")}
    orphans = expected_cases - set(CASES)
    assert not orphans


def test_audit_mode_renders_the_same_objects_as_enforce():
    assert expected("audit-mode") == expected("full-example")
    assert render("audit-mode") == render("full-example")


def test_rendering_twice_gives_equal_results():
    for case in CASES:
        assert render(case) == render(case)
