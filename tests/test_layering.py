"""The workflow modules depend one way: purchase -> provider sequences -> flow -> models (and the
helpers saga/outcomes). A provider module or the toolkit importing purchase.py would close the circle
the split removed (issue 24)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).parents[1] / "workflows"
PROVIDERS = ("atom", "onebox", "tevo", "atm", "acme")
# What each module may import from workflows/ (type-only imports count: they are the circle's arrows too).
ALLOWED = {
    "models": set(),
    "outcomes": {"models"},
    "saga": {"models", "outcomes"},
    "flow": {"models", "outcomes", "saga"},
    **{provider: {"models", "outcomes", "saga", "flow"} for provider in PROVIDERS},
}


def imported(module: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse((WORKFLOWS / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "workflows":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("workflows."):
                names.add(node.module.removeprefix("workflows."))
        elif isinstance(node, ast.Import):
            names |= {alias.name.removeprefix("workflows.") for alias in node.names if alias.name.startswith("workflows.")}
    return names


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_run_one_way(module: str) -> None:
    assert imported(module) <= ALLOWED[module], f"workflows/{module}.py imports {sorted(imported(module) - ALLOWED[module])}"


def test_purchase_drives_every_provider_through_flow() -> None:
    assert {"flow", *PROVIDERS} <= imported("purchase")
