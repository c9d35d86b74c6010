"""Outside ``minicompress/nn/`` nothing reaches into a Module's private state.

Pruning, quantization, tracing, MAC counting and io extend the engine through its public seams
(hooks, parametrizations, ``get_submodule``, ``state_dict(keep_vars=True)``...). This test reads every
package file outside ``nn/`` and fails on: an attribute named like one of Module's private stores,
``object.__setattr__``, and ``__dict__`` / ``vars()`` -- the last two allowed only on ``self`` inside
a class that is not a Module (an LR scheduler's own state, a pruning method's repr).
"""
import ast
import importlib
from pathlib import Path

import minicompress
from minicompress.nn import Module

PACKAGE = Path(minicompress.__file__).parent
PRIVATE_STORES = {"_parameters", "_buffers", "_modules", "_non_persistent", "_forward_pre_hooks", "_forward_hooks",
                  "_grad_hooks", "_parametrizations", "_values", "_caches", "_cache", "_hook_counter",
                  "_state_slots", "_in_backward"}


def _violations(path: Path, source: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    module_name = "minicompress." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    module_name = module_name.removesuffix(".__init__")
    found = []

    def is_module_class(class_name: str | None) -> bool:
        if class_name is None:
            return True                      # module-level code: never allowed
        cls = getattr(importlib.import_module(module_name), class_name, None)
        return not isinstance(cls, type) or issubclass(cls, Module)

    def visit(node: ast.AST, class_name: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            owner = child.name if isinstance(child, ast.ClassDef) else class_name
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(child, 'lineno', '?')}"
            if isinstance(child, ast.Attribute):
                on_self = isinstance(child.value, ast.Name) and child.value.id == "self"
                if child.attr in PRIVATE_STORES:
                    found.append(f"{where}: .{child.attr}")
                if child.attr == "__dict__" and (not on_self or is_module_class(class_name)):
                    found.append(f"{where}: .__dict__")
                if child.attr == "__setattr__" and isinstance(child.value, ast.Name) and child.value.id == "object":
                    found.append(f"{where}: object.__setattr__")
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "vars":
                on_self = (len(child.args) == 1 and isinstance(child.args[0], ast.Name)
                           and child.args[0].id == "self")
                if not on_self or is_module_class(class_name):
                    found.append(f"{where}: vars()")
            visit(child, owner)
    visit(tree, None)
    return found


def test_no_file_outside_nn_touches_module_private_state():
    files = [p for p in PACKAGE.rglob("*.py") if "nn" not in p.relative_to(PACKAGE).parts[:1]]
    assert len(files) > 40
    found = [v for path in sorted(files) for v in _violations(path)]
    assert not found, "\n".join(found)


def test_the_check_sees_a_violation():
    source = "def f(m):\n    m._parameters.clear()\n    object.__setattr__(m, 'x', 1)\n    return m.__dict__, vars(m)\n"
    assert len(_violations(PACKAGE / "metrics.py", source)) == 4
