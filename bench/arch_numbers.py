"""Architecture numbers of the code base (docs/architecture-numbers.md), measured the same way each time.

    .venv/bin/python -m bench.arch_numbers                   # the working tree
    .venv/bin/python -m bench.arch_numbers --rev d5ec811     # a commit (git archive into a temp dir)
    .venv/bin/python -m bench.arch_numbers --json            # the figures as JSON

Static and reproducible: it reads files (ast, tokenize) and calls the machine's `duplicates` tool; it runs
none of the code. The create ratio needs a SLURM cluster: `python -m bench.bench_slurm --creates 200
--tracked ""` (ratio_plugin_to_raw).

What each figure is:
- lines per backend: physical lines of the backend's package (interlink_plugins/<backend>/*.py), and the
  code lines among them (neither blank, nor comment, nor docstring);
- files a backend touches: .py files of interlink_plugins outside the backend's own package whose code
  (identifiers and string literals, not comments or docstrings) names the backend or one of its commands;
  and the test kits (tests/**/*.py not named test_*, outside tests/fixtures) that do. The words per
  backend are in BACKEND_WORDS; podman is also a ContainerRuntime, so its core count includes the runtime;
- functions over 50 lines: def/async def in interlink_plugins whose def line to last line spans > 50 lines;
- import cycles: strongly connected components (more than one node) of the import graph of
  interlink_plugins, by module and by top-level part (config, core, slurm, ...); imports under
  `if TYPE_CHECKING:` do not count; "at import" counts module-level imports only, "any" also those
  inside functions;
- duplicates pairs: the count line of `duplicates --most 200` over the tree and over interlink_plugins.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import subprocess
import tempfile
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "interlink_plugins"
BACKENDS = ("slurm", "htcondor", "podman")
BACKEND_WORDS = {
    "slurm": re.compile(r"slurm|sbatch|squeue|sacct|scancel|sinfo|scontrol|\bsrun\b", re.IGNORECASE),
    "htcondor": re.compile(r"condor|schedd|classad", re.IGNORECASE),
    "podman": re.compile(r"podman", re.IGNORECASE),
}
LONG_FUNCTION = 50
# identifiers and string literals (from Python 3.12 on, an f-string's text is its own token)
WORD_TOKENS = {tokenize.NAME, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def python_files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers covered by module, class and function docstrings."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_tokens(source: str) -> Iterator[tokenize.TokenInfo]:
    """NAME and STRING tokens outside docstrings (comments are COMMENT tokens: never yielded)."""
    skip = docstring_lines(ast.parse(source))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in WORD_TOKENS and token.start[0] not in skip:
            yield token


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not in a docstring."""
    skip = docstring_lines(ast.parse(source))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                          tokenize.ENDMARKER):
            continue
        lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in skip)
    return len(lines)


def backend_lines(root: Path) -> dict[str, dict[str, int]]:
    out = {}
    for backend in BACKENDS:
        files = python_files(root / PACKAGE / backend)
        texts = [f.read_text() for f in files]
        out[backend] = {"files": len(files), "lines": sum(len(t.splitlines()) for t in texts),
                        "code_lines": sum(code_lines(t) for t in texts)}
    return out


def names_backend(path: Path, backend: str) -> bool:
    words = BACKEND_WORDS[backend]
    return any(words.search(token.string) for token in code_tokens(path.read_text()))


def backend_touches(root: Path) -> dict[str, dict[str, list[str]]]:
    package = python_files(root / PACKAGE)
    # test kits: the helpers tests share (recorded-output scripts under tests/fixtures are data tooling)
    kits = [p for p in python_files(root / "tests")
            if not p.name.startswith("test_") and (root / "tests" / "fixtures") not in p.parents]
    out: dict[str, dict[str, list[str]]] = {}
    for backend in BACKENDS:
        own = root / PACKAGE / backend
        out[backend] = {
            "package": [str(p.relative_to(root)) for p in package
                        if own not in p.parents and names_backend(p, backend)],
            "test_kits": [str(p.relative_to(root)) for p in kits if names_backend(p, backend)],
        }
    return out


def long_functions(root: Path) -> list[tuple[str, int]]:
    found = []
    for path in python_files(root / PACKAGE):
        tree = ast.parse(path.read_text())
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                name = prefix
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = f"{prefix}{child.name}."
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > LONG_FUNCTION:
                        found.append((f"{path.relative_to(root)}:{name[:-1]}", length))
                stack.append((child, name))
    return sorted(found, key=lambda item: -item[1])


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, *, top_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run: not those under `if TYPE_CHECKING:`; with top_level_only, none in a function."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                if not (top_level_only and in_function):
                    yield child
            elif isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    yield from visit(ast.Module(body=[other], type_ignores=[]), in_function)
            else:
                yield from visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    return visit(tree, False)


def import_graph(root: Path, *, top_level_only: bool) -> dict[str, set[str]]:
    modules = {module_name(root, p): p for p in python_files(root / PACKAGE)}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text()), top_level_only=top_level_only):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(PACKAGE + "."):
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one node, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to: interlink_plugins.core.x -> core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_cycles(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, top in (("at_import", True), ("any", False)):
        graph = import_graph(root, top_level_only=top)
        parts: dict[str, set[str]] = {}
        for source, targets in graph.items():
            here = part_of(source)
            parts.setdefault(here, set()).update(part_of(t) for t in targets if part_of(t) != here)
        mutual = sorted({(a, b) for a, targets in parts.items() for b in targets if a < b and a in parts.get(b, ())})
        out[label] = {"modules": strongly_connected(graph), "parts": strongly_connected(parts),
                      "mutual_parts": [list(pair) for pair in mutual]}
    return out


def duplicate_pairs(repo: Path) -> tuple[int, str]:
    result = subprocess.run(["duplicates", "--repo", str(repo), "--most", "200", "--seconds", "300"],
                            capture_output=True, text=True, timeout=600, check=False, cwd=repo)
    first = result.stdout.splitlines()[0] if result.stdout else result.stderr.strip()
    match = re.match(r"(\d+) pairs", first)
    return (int(match.group(1)) if match else 0), first


def measure(root: Path) -> dict[str, Any]:
    cycles = import_cycles(root)
    tree_pairs, tree_line = duplicate_pairs(root)
    package_pairs, package_line = duplicate_pairs(root / PACKAGE)
    return {
        "backend_lines": backend_lines(root),
        "backend_touches": backend_touches(root),
        "long_functions": long_functions(root),
        "import_cycles": cycles,
        "duplicates": {"tree": tree_pairs, "tree_line": tree_line, "package": package_pairs,
                       "package_line": package_line},
    }


def report(figures: dict[str, Any]) -> str:
    lines = ["| backend | files | lines | code lines | package files outside it naming it | test kits naming it |",
             "| --- | --- | --- | --- | --- | --- |"]
    for backend in BACKENDS:
        size = figures["backend_lines"][backend]
        touches = figures["backend_touches"][backend]
        lines.append(f"| {backend} | {size['files']} | {size['lines']} | {size['code_lines']} | "
                     f"{len(touches['package'])} | {len(touches['test_kits'])} |")
    for backend in BACKENDS:
        lines.append(f"\n{backend} named in: {', '.join(figures['backend_touches'][backend]['package'])}")
    lines.append(f"\nfunctions over {LONG_FUNCTION} lines: {len(figures['long_functions'])}")
    lines += [f"  {name} ({length})" for name, length in figures["long_functions"]]
    for label, found in figures["import_cycles"].items():
        lines.append(f"\nimport cycles ({label}): {len(found['modules'])} between modules, "
                     f"{len(found['parts'])} between parts")
        lines += [f"  modules: {' <-> '.join(c)}" for c in found["modules"]]
        lines += [f"  parts: {' <-> '.join(c)}" for c in found["parts"]]
        lines += [f"  parts importing each other: {a} <-> {b}" for a, b in found["mutual_parts"]]
    dup = figures["duplicates"]
    lines.append(f"\nduplicates pairs: {dup['tree']} in the tree, {dup['package']} in {PACKAGE}")
    lines.append(f"  tree: {dup['tree_line']}\n  package: {dup['package_line']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="measure this commit (git archive) instead of the working tree")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="il-arch-") as tmp:
        root = ROOT
        if args.rev:
            root = Path(tmp)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev], capture_output=True,
                                     check=True, timeout=120).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True, timeout=120)
        figures = measure(root)
    print(json.dumps(figures, indent=1) if args.json else report(figures))


if __name__ == "__main__":
    main()
