"""What code a student may hand in: plain Python on torch, numpy and math, and nothing that reaches around the grader.

The grader judges answers recorded in the student's own process (:mod:`course_kit.answers`), so code
that could read the grader's inputs early, run work on a thread or a process the grader does not
watch, call into libtorch past its dispatcher, or change the kit or a library in memory could forge
what is recorded. None of that is needed to learn attention, so this module refuses it outright,
statically, before the notebook runs: a submission with a violation is not run, scores 0, and its
reason names each cell and line (``attention-course validate`` shows the same before handing in).

Checked: every code cell the student may have written, that is, every cell that is not locked and
is not, word for word, one of the instructor's own cells. The rules:

- imports only from :data:`ALLOWED_MODULES` (torch, numpy, math and a few plain standard modules),
  and not the parts of torch that run code elsewhere or read files (:data:`DENIED_PARTS`);
- no private (``_name``) or special (``__name__``) attribute of anything but ``self`` and ``cls``,
  except ``__init__``;
- none of the builtins that reach names by strings or run code (:data:`DENIED_BUILTINS`);
- no assignment to an attribute of a module (``torch.softmax = ...``);
- inside a ``@triton.jit`` kernel, calls only to ``tl`` (``triton.language``), ``triton`` and
  ``range``, so the kernel's work is Triton's.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import nbformat

ALLOWED_MODULES = frozenset({
    "torch", "numpy", "math", "cmath", "random", "time", "typing", "dataclasses", "functools", "itertools",
    "collections", "enum", "abc", "copy", "heapq", "bisect", "statistics", "string", "textwrap", "numbers",
    "__future__", "matplotlib", "triton", "course_kit", "tqdm", "IPython", "warnings",
})
# Parts of allowed modules that run code on other threads or processes, load files, reach libtorch
# directly or switch the grader's watch off; ``course_kit.answers`` is the grader's recorder.
DENIED_PARTS = frozenset({
    "torch.jit", "torch.ops", "torch.library", "torch.multiprocessing", "torch.distributed", "torch.futures",
    "torch.hub", "torch.package", "torch.profiler", "torch.autograd.profiler", "torch.overrides", "torch.utils",
    "torch.compile", "torch.load", "torch.save", "torch.from_file", "torch.backends", "torch.export",
    "torch.fx", "torch.func", "torch.cuda.memory", "numpy.load", "numpy.save", "numpy.savez", "numpy.fromfile",
    "numpy.memmap", "numpy.ctypeslib", "numpy.lib", "course_kit.answers", "IPython.core", "IPython.utils",
    "IPython.get_ipython", "matplotlib.pyplot.savefig", "warnings.showwarning",
})
DENIED_BUILTINS = frozenset({"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
                             "globals", "locals", "vars", "breakpoint", "get_ipython", "memoryview"})
ALLOWED_SPECIAL = frozenset({"__init__"})
TRITON_CALLABLE_ROOTS = frozenset({"tl", "triton", "range", "min", "max", "int", "float"})
# Methods of a Triton tensor (triton.language.tensor) a kernel may call on its own values.
TRITON_TENSOR_METHODS = frozenset({"to", "reshape", "trans", "permute", "broadcast_to", "expand_dims", "view",
                                   "sum", "max", "min", "argmax", "argmin", "cumsum", "exp", "exp2", "log", "log2",
                                   "sqrt", "abs", "split", "join", "cast"})


@dataclass(frozen=True)
class Violation:
    cell: int  # the cell's number in the notebook, from 1
    line: int
    what: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.what}"


def instructor_sources(source_notebook: nbformat.NotebookNode) -> set[str]:
    """The sources of the instructor's cells a student finds as they are (all but solution cells)."""
    return {cell.source.strip() for cell in source_notebook.cells
            if cell.cell_type in ("code", "markdown") and not cell.metadata.get("nbgrader", {}).get("solution")}


def check_notebook(notebook: nbformat.NotebookNode, instructors: set[str]) -> list[Violation]:
    """Every violation in the code the student may have written (see the module doc)."""
    aliases = _module_aliases(notebook)
    kernels = _triton_kernels(notebook, aliases)
    violations = []
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("locked"):
            continue
        if cell.source.strip() in instructors:
            continue
        try:
            tree = ast.parse(_without_magics(cell.source))
        except SyntaxError:
            continue  # it fails when it runs, and scores what it scores
        violations += [Violation(number, line, what) for line, what in _check(tree, aliases, kernels)]
    return violations


def _without_magics(source: str) -> str:
    """IPython's ``%magic`` and ``!shell`` lines are not Python; they are reported as violations."""
    return "\n".join(f"__ipython_magic__  # {line}" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _module_aliases(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Names bound to modules anywhere in the notebook
    (``import torch.nn.functional as F``: F -> torch.nn.functional)."""
    aliases: dict[str, str] = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_without_magics(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted path an expression names, through the module aliases
    (``F.softmax`` -> torch.nn.functional.softmax)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    root = aliases.get(node.id)
    return ".".join([root, *reversed(parts)]) if root else None


def _denied(path: str) -> bool:
    return any(path == part or path.startswith(part + ".") for part in DENIED_PARTS)


def _check(tree: ast.AST, aliases: dict[str, str], kernels: set[str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    aliases = dict(aliases)
    for node in ast.walk(tree):  # names the student binds to modules count too (t = torch)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            path = _dotted(node.value, aliases)
            if path is not None:
                aliases[node.targets[0].id] = path
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module or ''}.{a.name}" if node.level == 0 else "." for a in node.names]
            for module in modules:
                top = module.split(".")[0]
                if isinstance(node, ast.ImportFrom) and node.level:
                    found.append((line, "relative imports are not allowed"))
                elif top not in ALLOWED_MODULES:
                    found.append((line, f"`import {module.rstrip('.')}`: submitted code may import only "
                                        f"{', '.join(sorted(ALLOWED_MODULES - {'__future__'}))}"))
                elif _denied(module) or any(part.startswith("_") and part != "__future__"
                                            for part in module.split(".")):
                    found.append((line, f"`{module}` is not allowed in submitted code"))
        elif isinstance(node, ast.Attribute):
            base_is_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr.startswith("__") and node.attr not in ALLOWED_SPECIAL:
                found.append((line, f"`.{node.attr}`: special attributes are not allowed in submitted code"))
            elif node.attr.startswith("_") and not base_is_self and not node.attr.startswith("__"):
                found.append((line, f"`.{node.attr}`: private parts of a library are not allowed in submitted code"))
            else:
                path = _dotted(node, aliases)
                if path is not None and _denied(path):
                    found.append((line, f"`{path}` is not allowed in submitted code"))
            if isinstance(node.ctx, (ast.Store, ast.Del)) and _dotted(node.value, aliases) is not None:
                found.append((line, f"`{ast.unparse(node)} = ...` changes a module: not allowed in submitted code"))
        elif isinstance(node, ast.Name):
            if node.id in DENIED_BUILTINS:
                found.append((line, f"`{node.id}` is not allowed in submitted code"))
            elif node.id == "__ipython_magic__":
                found.append((line, "IPython magics and shell commands (% and ! lines) are not allowed in "
                                    "submitted code"))
            elif node.id.startswith("__") and node.id not in ("__name__",):
                found.append((line, f"`{node.id}` is not allowed in submitted code"))
            elif node.id in aliases and _denied(aliases[node.id]):
                found.append((line, f"`{aliases[node.id]}` is not allowed in submitted code"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_triton_kernel(node, aliases):
            found += _check_triton_kernel(node, aliases, kernels)
    return sorted(set(found))


def _triton_kernels(notebook: nbformat.NotebookNode, aliases: dict[str, str]) -> set[str]:
    """The names of the notebook's Triton kernels (a kernel may call another)."""
    names = set()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            try:
                tree = ast.parse(_without_magics(cell.source))
            except SyntaxError:
                continue
            names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and _is_triton_kernel(n, aliases)}
    return names


def _is_triton_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef, aliases: dict[str, str]) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        path = _dotted(target, aliases) or (target.id if isinstance(target, ast.Name) else "")
        if path.startswith("triton.") and path.endswith(("jit", "autotune", "heuristics")):
            return True
    return False


def _check_triton_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef, aliases: dict[str, str],
                         kernels: set[str]) -> list[tuple[int, str]]:
    """A Triton kernel calls only ``tl``/``triton`` functions, other kernels, ``range``, and the methods of
    its own tensors: its work is Triton's, not Python's (under the interpreter a kernel could call
    anything). ``raise NotImplementedError()`` (the release's stub) is fine."""
    raised = {id(n.exc) for n in ast.walk(node) if isinstance(n, ast.Raise) and n.exc is not None}
    local = _local_names(node)
    found = []
    for call in (n for statement in node.body for n in ast.walk(statement) if isinstance(n, ast.Call)):
        if id(call) in raised:
            continue
        func = call.func
        path = _dotted(func, aliases) or ""
        if path.startswith(("triton.", "tl.")) or path in ("triton", "tl"):
            continue
        if isinstance(func, ast.Name) and (func.id in TRITON_CALLABLE_ROOTS or func.id in kernels):
            continue
        if isinstance(func, ast.Attribute) and not path and func.attr in TRITON_TENSOR_METHODS \
                and _root_name(func.value) in local | kernels | {"tl", "triton"}:
            continue  # a method of one of the kernel's own tensors: p.to(tl.float16), tl.load(...).to(...)
        found.append((call.lineno, f"the Triton kernel `{node.name}` calls `{ast.unparse(func)}`: a kernel may "
                                   "call only triton.language (tl) functions and its tensors' methods"))
    return found


def _local_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The names a function binds itself: its parameters and what it assigns (not the globals it reads)."""
    arguments = node.args
    names = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
    names |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
            names.add(inner.id)
    return names


def _root_name(node: ast.AST) -> str | None:
    """The name an expression starts from, through attributes, subscripts and calls (``tl.load(p).to`` -> tl)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None
