"""A small, safe condition language compiled to Python closures.

Conditions are parsed with :mod:`ast` (Python's own parser, nothing is executed) and only a whitelist of
nodes is accepted: comparisons (``< <= > >= == !=``, ``in``/``not in`` a list of constants, ``is None``,
``is not None``), ``and``/``or``/``not``, arithmetic (``+ - * / %``), numbers, strings, ``true``/``false``/
``null`` and the known field names. Every name and type is checked when the rule is loaded, so a typo
fails at start-up rather than silently never firing.

Null semantics (like SQL): a comparison or arithmetic with a missing value is false / missing, so
``adoption_rate < 0.3`` does not fire for an account without seats. Use ``x is None`` to test for it.
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["number", "string", "bool", "null", "list"]
Ctx = Mapping[str, Any]
Fn = Callable[[Ctx], Any]


@dataclass(frozen=True)
class FieldSpec:
    kind: Literal["number", "string", "bool"]
    #: For strings with a closed set of values (band, segment): a literal outside it is an error.
    values: frozenset[str] | None = None


class ExprError(ValueError):
    pass


@dataclass(frozen=True)
class Compiled:
    fn: Callable[[Ctx], bool]
    fields: tuple[str, ...]
    source: str

    def __call__(self, ctx: Ctx) -> bool:
        return self.fn(ctx)


_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_ALIASES = {"true": True, "false": False, "null": None}


class _Compiler:
    def __init__(self, fields: Mapping[str, FieldSpec]) -> None:
        self.fields = fields
        self.used: list[str] = []

    def fail(self, node: ast.AST, msg: str) -> ExprError:
        col = getattr(node, "col_offset", None)
        return ExprError(f"{msg} (at column {col + 1})" if col is not None else msg)

    # Each visitor returns (closure, kind, constant-or-sentinel); constants let comparisons specialise.
    def compile(self, node: ast.AST) -> tuple[Fn, Kind, Any]:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, f"{type(node).__name__.lower()} is not allowed in a condition")
        return method(node)

    def visit_Expression(self, node: ast.Expression) -> tuple[Fn, Kind, Any]:
        return self.compile(node.body)

    def visit_Constant(self, node: ast.Constant) -> tuple[Fn, Kind, Any]:
        v = node.value
        if v is None:
            return (lambda c: None), "null", None
        if isinstance(v, bool):
            return (lambda c, v=v: v), "bool", v
        if isinstance(v, int | float):
            return (lambda c, v=v: v), "number", v
        if isinstance(v, str):
            return (lambda c, v=v: v), "string", v
        raise self.fail(node, f"constant {v!r} is not allowed")

    def _field(self, node: ast.AST, name: str) -> tuple[Fn, Kind, Any]:
        if name in _ALIASES:
            return self.visit_Constant(ast.Constant(_ALIASES[name]))
        spec = self.fields.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, self.fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.fail(node, f"unknown field {name!r}{hint}")
        self.used.append(name)
        return operator.itemgetter(name), spec.kind, _FIELD

    def visit_Name(self, node: ast.Name) -> tuple[Fn, Kind, Any]:
        return self._field(node, node.id)

    def visit_Attribute(self, node: ast.Attribute) -> tuple[Fn, Kind, Any]:
        if isinstance(node.value, ast.Name) and node.value.id == "metrics":
            return self._field(node, node.attr)
        raise self.fail(node, "only metrics.<name> attribute access is allowed")

    def visit_BoolOp(self, node: ast.BoolOp) -> tuple[Fn, Kind, Any]:
        parts = [self._bool(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return (lambda c: all(p(c) for p in parts)), "bool", _FIELD
        return (lambda c: any(p(c) for p in parts)), "bool", _FIELD

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[Fn, Kind, Any]:
        if isinstance(node.op, ast.Not):
            inner = self._bool(node.operand)
            return (lambda c: not inner(c)), "bool", _FIELD
        fn, kind, const = self.compile(node.operand)
        if kind != "number":
            raise self.fail(node, "unary minus needs a number")
        if isinstance(node.op, ast.USub):
            if const is not _FIELD:
                return (lambda c, v=-const: v), "number", -const
            return (lambda c: None if (v := fn(c)) is None else -v), "number", _FIELD
        if isinstance(node.op, ast.UAdd):
            return fn, "number", const
        raise self.fail(node, "operator is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> tuple[Fn, Kind, Any]:
        op = _ARITH.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        left, lk, _ = self.compile(node.left)
        right, rk, _ = self.compile(node.right)
        if lk != "number" or rk != "number":
            raise self.fail(node, "arithmetic needs numbers on both sides")

        def arith(c: Ctx) -> Any:
            a, b = left(c), right(c)
            if a is None or b is None:
                return None
            try:
                return op(a, b)
            except ZeroDivisionError:
                return None

        return arith, "number", _FIELD

    def visit_Compare(self, node: ast.Compare) -> tuple[Fn, Kind, Any]:
        tests: list[Fn] = []
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            tests.append(self._compare(left_node, op, right_node))
            left_node = right_node
        if len(tests) == 1:
            return tests[0], "bool", _FIELD
        return (lambda c: all(t(c) for t in tests)), "bool", _FIELD

    def _compare(self, lnode: ast.AST, op: ast.cmpop, rnode: ast.AST) -> Fn:
        if isinstance(op, ast.In | ast.NotIn):
            return self._membership(lnode, op, rnode)
        left, lk, lc = self.compile(lnode)
        right, rk, rc = self.compile(rnode)
        if isinstance(op, ast.Is | ast.IsNot):
            if rk != "null":
                raise self.fail(rnode, "'is' and 'is not' only compare with null")
            if isinstance(op, ast.Is):
                return lambda c: left(c) is None
            return lambda c: left(c) is not None
        if isinstance(op, ast.Eq | ast.NotEq):
            if "null" not in (lk, rk) and lk != rk:
                raise self.fail(lnode, f"cannot compare {lk} with {rk}")
            self._check_literal(lnode, rc)
            self._check_literal(rnode, lc)
            if isinstance(op, ast.Eq):
                return lambda c: left(c) == right(c)
            return lambda c: left(c) != right(c)
        fn = _ORDER.get(type(op))
        if fn is None:
            raise self.fail(lnode, "comparison is not allowed")
        if lk != rk or lk not in ("number", "string"):
            raise self.fail(lnode, f"cannot order {lk} and {rk}")
        for side in (lnode, rnode):
            spec = self._spec(side)
            if spec is not None and spec.values is not None:
                raise self.fail(side, f"{self._name(side)} has no order; compare it with == or in")
        if rc is not _FIELD:  # field < constant: the common, fast case

            def cmp_const(c: Ctx, get: Fn = left, k: Any = rc, f: Any = fn) -> bool:
                v = get(c)
                return v is not None and f(v, k)

            return cmp_const

        def cmp(c: Ctx) -> bool:
            a, b = left(c), right(c)
            return a is not None and b is not None and fn(a, b)

        return cmp

    def _membership(self, lnode: ast.AST, op: ast.cmpop, rnode: ast.AST) -> Fn:
        left, lk, _ = self.compile(lnode)
        if not isinstance(rnode, ast.List | ast.Tuple | ast.Set):
            raise self.fail(rnode, '\'in\' needs a list of constants, e.g. band in ["red", "yellow"]')
        items = []
        for elt in rnode.elts:
            _, kind, const = self.compile(elt)
            if const is _FIELD or kind != lk:
                raise self.fail(elt, f"list items must be {lk} constants")
            self._check_literal(lnode, const)
            items.append(const)
        values = frozenset(items)
        if isinstance(op, ast.In):
            return lambda c: left(c) in values
        return lambda c: (v := left(c)) is not None and v not in values

    @staticmethod
    def _name(node: ast.AST) -> str | None:
        return node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)

    def _spec(self, node: ast.AST) -> FieldSpec | None:
        name = self._name(node)
        return self.fields.get(name) if name else None

    def _check_literal(self, field_node: ast.AST, const: Any) -> None:
        name = self._name(field_node)
        spec = self._spec(field_node)
        if spec and spec.values is not None and isinstance(const, str) and const not in spec.values:
            raise self.fail(field_node, f"{name} is never {const!r}; it is one of {sorted(spec.values)}")

    def _bool(self, node: ast.AST) -> Fn:
        fn, kind, _ = self.compile(node)
        if kind not in ("bool", "null"):
            raise self.fail(node, f"expected a condition (true/false), got a {kind}")
        return fn


_FIELD = object()  # marks "not a constant"


def compile_condition(source: str, fields: Mapping[str, FieldSpec]) -> Compiled:
    """Compile ``source`` or raise :class:`ExprError` saying what and where."""
    if len(source) > 2000:
        raise ExprError("condition is longer than 2000 characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error at column {exc.offset}: {exc.msg}") from None
    compiler = _Compiler(fields)
    fn, kind, _ = compiler.compile(tree)
    if kind != "bool":
        raise ExprError(f"a condition must be true or false, not a {kind}")
    body = tree.body
    returns_bool = isinstance(body, ast.Compare | ast.BoolOp) or (
        isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not)
    )
    final = fn if returns_bool else (lambda c, f=fn: bool(f(c)))  # a bare field may be null
    return Compiled(fn=final, fields=tuple(dict.fromkeys(compiler.used)), source=source)
