"""Imports go in one direction: no import cycle among tabconv_np's modules.

Every module of the package is parsed with :mod:`ast`, and *every* ``import``
and ``from ... import`` statement counts, including those inside functions,
methods and ``if``/``try`` blocks: an import deferred into a function still
ties two modules together, it only moves the failure to run time.

Edges of the module graph:

* ``import tabconv_np.a.b`` -> ``tabconv_np.a.b``;
* ``from X import y`` (``X`` absolute or relative, resolved against the
  importing module's package) -> ``X`` (for a package: its ``__init__``), and
  also -> ``X.y`` when ``X.y`` is a module of the package (``from . import x``
  imports the submodule ``x``);
* parent packages that Python initialises on the way are not edges (a
  package's ``__init__`` importing its own submodules is the normal pattern),
  and a module importing itself is ignored;
* imports in a top-level ``if __name__ == "__main__":`` block are edges of
  their own node, ``<module>:__main__``: that code runs only when the file is
  executed as a script (``python -m tabconv_np.demo``), as the module
  ``__main__``, never when the package module is imported, so what it imports
  can import the package module back without a cycle (nothing imports
  ``__main__``);
* strings are not imports: the lazy ``__getattr__`` tables of the
  ``__init__`` files (``importlib.import_module(f".{name}")``) add no edges.

The test fails listing every strongly connected component of more than one
module, with cycle paths that between them use every edge inside the
component, and the file and line of each import on those paths.
"""
import ast
import os
from collections import deque

import pytest

import tabconv_np

PACKAGE = "tabconv_np"


# ------------------------------------------------------------------ the graph
def package_modules(root, package=PACKAGE):
    """``{module name: path}`` for every ``.py`` file under the package directory ``root``."""
    mods = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.isidentifier())
        rel = os.path.relpath(dirpath, root)
        parts = [package] + ([] if rel == os.curdir else rel.split(os.sep))
        if "__init__.py" not in filenames and len(parts) > 1:
            continue  # not a package: Python cannot import modules from it as tabconv_np.x
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            name = ".".join(parts if fn == "__init__.py" else parts + [fn[:-3]])
            mods[name] = os.path.join(dirpath, fn)
    return mods


def _resolve_from(node, module, is_package):
    """The absolute module name a ``from ... import`` statement imports from."""
    if node.level == 0:
        return node.module
    pkg = module if is_package else module.rpartition(".")[0]
    parts = pkg.split(".")
    if node.level - 1 >= len(parts):
        return None  # beyond the top-level package: not ours
    base = ".".join(parts[:len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _known(name, mods):
    """``name`` if it is one of ``mods``, else its longest prefix that is; None if none is."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_main_guard(node):
    """Whether ``node`` is ``if __name__ == "__main__":`` (either operand order)."""
    if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
        return False
    sides = [node.test.left] + node.test.comparators
    return (any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides)
            and any(isinstance(n, ast.Constant) and n.value == "__main__" for n in sides))


def imports_of(module, path, mods):
    """``[(importer, imported module, line, statement text)]`` for every import of a
    package module; the importer is ``module``, or ``module + ":__main__"`` for imports
    in its top-level ``if __name__ == "__main__":`` block."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    in_main = {id(n) for top in tree.body if _is_main_guard(top) for n in ast.walk(top)}
    out = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name, mods) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            if base is not None:
                targets.append(_known(base, mods))
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
        else:
            continue
        text = ast.get_source_segment(source, node) or ""
        text = " ".join(text.split())
        importer = f"{module}:__main__" if id(node) in in_main else module
        for t in dict.fromkeys(targets):
            if t is not None and t != module:
                out.append((importer, t, node.lineno, text))
    return out


def import_graph(root, package=PACKAGE):
    """``(graph, where)``: ``graph[a]`` the set of package modules ``a`` imports (``a``: a
    module, or ``module:__main__``); ``where[(a, b)]`` the ``(path, line, statement)`` of
    each import of ``b`` in ``a``."""
    mods = package_modules(root, package)
    graph = {m: set() for m in mods}
    where = {}
    for m, path in mods.items():
        for importer, target, line, text in imports_of(m, path, mods):
            graph.setdefault(importer, set()).add(target)
            where.setdefault((importer, target), []).append((path, line, text))
    return graph, where


def strongly_connected(graph):
    """Tarjan's strongly connected components of ``graph`` (iterative), each a sorted list."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    comps.append(sorted(comp))
    return comps


def _shortest_path(graph, start, goal, allowed):
    """Shortest path ``start -> ... -> goal`` inside ``allowed`` (a list of nodes), or None."""
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(graph[v]):
            if w in allowed and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def cycles(graph):
    """Import cycles: ``[(component, [cycle, ...])]``, one entry per strongly connected
    component of two or more modules.  Each cycle is a list of modules whose first and
    last entries are equal; together they cover every edge inside the component (for
    each edge ``a -> b``, the shortest way back ``b -> ... -> a`` closes a cycle)."""
    out = []
    for comp in strongly_connected(graph):
        if len(comp) < 2:
            continue
        members = set(comp)
        found = {}
        for a in comp:
            for b in sorted(graph[a] & members):
                back = _shortest_path(graph, b, a, members)
                cyc = [a] + back
                # one rotation per cycle: start at its smallest module
                i = cyc.index(min(cyc[:-1]))
                key = tuple(cyc[i:-1] + cyc[:i + 1])
                found.setdefault(key, list(key))
        out.append((comp, sorted(found.values(), key=lambda c: (len(c), c))))
    return out


def describe(found, where, root):
    """The failure message: every cycle, with the import statements along it."""
    top = os.path.dirname(root)
    lines = [f"{len(found)} import cycle group(s) among {PACKAGE} modules "
             f"(imports inside functions count too):"]
    for n, (comp, cycs) in enumerate(found, 1):
        lines.append(f"\n[{n}] {len(comp)} modules: {', '.join(comp)}")
        for cyc in cycs:
            lines.append("  cycle: " + " -> ".join(cyc))
            for a, b in zip(cyc, cyc[1:]):
                for path, line, text in where[(a, b)]:
                    lines.append(f"      {os.path.relpath(path, top)}:{line}: {text}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the tests
def test_no_import_cycles():
    root = os.path.dirname(os.path.abspath(tabconv_np.__file__))
    graph, where = import_graph(root)
    assert len(graph) > 20, f"too few modules found under {root}: {sorted(graph)}"
    found = cycles(graph)
    if found:
        pytest.fail(describe(found, where, root), pytrace=False)


def _write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_builder_on_a_small_package(tmp_path):
    """The checker itself: relative imports, submodules named in ``from . import``,
    imports inside functions, package ``__init__`` edges, lazy string tables."""
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "import importlib\n_LAZY = {'x': 'a'}\n",
        "a.py": "from . import b\nfrom .sub import c as _c\n",
        "b.py": "def f():\n    from .sub.c import g\n    import pkg.d\n",
        "d.py": "from .sub import helper\nimport os, numpy\n"
                "if __name__ == '__main__':\n    from .sub.c import main\n",
        "sub/__init__.py": "helper = 1\n",
        "sub/c.py": "from ..a import thing\nfrom .. import d\n",
        "data/notapackage.py": "from pkg import a\n",
    })
    graph, where = import_graph(str(pkg), "pkg")
    assert set(graph) == {"pkg", "pkg.a", "pkg.b", "pkg.d", "pkg.d:__main__", "pkg.sub",
                          "pkg.sub.c"}
    assert graph["pkg"] == set()
    assert graph["pkg.a"] == {"pkg", "pkg.b", "pkg.sub", "pkg.sub.c"}
    assert graph["pkg.b"] == {"pkg.sub.c", "pkg.d"}
    assert graph["pkg.d"] == {"pkg.sub"}
    assert graph["pkg.d:__main__"] == {"pkg.sub.c"}  # and no cycle d -> sub.c -> d
    assert graph["pkg.sub.c"] == {"pkg", "pkg.a", "pkg.d"}
    assert where[("pkg.b", "pkg.d")][0][1:] == (3, "import pkg.d")

    found = cycles(graph)
    assert [comp for comp, _ in found] == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert found[0][1] == [["pkg.a", "pkg.sub.c", "pkg.a"],
                           ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    msg = describe(found, where, str(pkg))
    assert "cycle: pkg.a -> pkg.b -> pkg.sub.c -> pkg.a" in msg
    assert "pkg/sub/c.py:1: from ..a import thing" in msg


def test_strongly_connected_components():
    g = {1: {2}, 2: {3}, 3: {1, 4}, 4: {5}, 5: {4}, 6: {6}, 7: set()}
    assert sorted(strongly_connected(g)) == [[1, 2, 3], [4, 5], [6], [7]]
