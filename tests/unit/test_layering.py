"""The import rule: leaves import only leaves; roles import leaves, never roles."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "forkchat"
ROLES = {"supervisor", "broker", "worker"}
ENTRY = {"cli", "__main__"}          # wires the roles together
# Part of one role, run by the entry alone: it may import that role.
ROLE_PARTS = {"warmup": "worker"}
PURE = {"state", "state_rooms", "state_talk", "state_query", "state_users", "rooms",
        "protocol", "numerics", "tutorial", "flood", "session", "operguard"}
IO_MODULES = {"socket", "selectors", "subprocess", "multiprocessing", "psutil", "sqlite3",
              "signal", "ssl"}


def imports_of(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(forkchat modules imported, top-level other modules imported)."""
    tree = ast.parse(path.read_text())
    ours, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "forkchat":
                ours.update(alias.name for alias in node.names if alias.name != "__version__")
            elif node.module.startswith("forkchat."):
                ours.add(node.module.split(".")[1])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("forkchat."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours, others


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_layering(module):
    ours, others = imports_of(PACKAGE / f"{module}.py")
    if module in ENTRY:
        return
    if module in ROLES:
        assert not ours & ROLES, f"{module} imports another role: {ours & ROLES}"
    elif module in ROLE_PARTS:
        assert ours & (ROLES | ENTRY) <= {ROLE_PARTS[module]}, f"{module} imports {ours}"
    else:
        assert not ours & (ROLES | ENTRY), f"leaf {module} imports {ours & (ROLES | ENTRY)}"
    if module in PURE:
        assert not others & IO_MODULES, f"pure {module} imports I/O: {others & IO_MODULES}"


@pytest.mark.parametrize("module", MODULES)
def test_a_part_of_a_role_is_imported_by_the_entry_alone(module):
    ours, _ = imports_of(PACKAGE / f"{module}.py")
    if module not in ENTRY:
        assert not ours & set(ROLE_PARTS), f"{module} imports {ours & set(ROLE_PARTS)}"
