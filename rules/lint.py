"""``healthmon rules check``: what loading already rejects, plus warnings about rules that cannot fire."""

from __future__ import annotations

import ast
from pathlib import Path

from rules.engine import RuleSet, load_rules, rule_files
from rules.model import Rule, format_duration
from streams.config import ConfigError
from streams.core.state import HORIZON_DAYS

DAY = 86_400


def _upper_bounds(rule: Rule) -> dict[str, float]:
    """Upper bounds the condition puts on fields (``x < 7``, ``x <= 6``) in its top-level ``and``."""
    tree = ast.parse(rule.when.strip(), mode="eval").body
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    bounds: dict[str, float] = {}
    for part in parts:
        if not isinstance(part, ast.Compare):
            continue
        items = [part.left, *part.comparators]
        for left, op, right in zip(items, part.ops, items[1:], strict=False):
            if (
                isinstance(left, ast.Name)
                and isinstance(right, ast.Constant)
                and isinstance(right.value, int | float)
            ):
                if isinstance(op, ast.Lt):
                    bounds[left.id] = min(bounds.get(left.id, float("inf")), right.value)
                elif isinstance(op, ast.LtE):
                    bounds[left.id] = min(bounds.get(left.id, float("inf")), right.value + 1)
    return bounds


def lint(ruleset: RuleSet) -> list[str]:
    warnings = []
    for rule in ruleset.rules:
        where = f"{ruleset.sources[rule.id]}: {rule.id}"
        if rule.for_ >= HORIZON_DAYS * DAY:
            warnings.append(
                f"{where}: for {format_duration(rule.for_)} is beyond the {HORIZON_DAYS}-day state horizon"
            )
        for field, bound in _upper_bounds(rule).items():
            if field.endswith("_days_ago") and rule.for_ >= bound * DAY:
                warnings.append(
                    f"{where}: unreachable: {field} stays below {bound:g} days for less than "
                    f"for {format_duration(rule.for_)}"
                )
        if rule.cooldown and rule.cooldown < rule.keep_firing_for:
            warnings.append(f"{where}: cooldown is shorter than keep_firing_for and has no effect")
    return warnings


def check(paths: list[Path]) -> tuple[list[RuleSet], list[str], list[str]]:
    """Load every rule file under ``paths`` on its own, so that every bad file is reported, not only
    the first: (rule sets that loaded, warnings, errors). An id defined twice under one path is an
    error (the worker refuses to load that folder); across the paths given, a warning."""
    sets: list[RuleSet] = []
    errors: list[str] = []
    warnings: list[str] = []
    seen: dict[str, tuple[int, str]] = {}
    for index, path in enumerate(paths):
        if not path.exists():
            errors.append(f"{path}: no such rule file or folder")
            continue
        for file in rule_files(path):
            try:
                rs = load_rules(file)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            sets.append(rs)
            for rule in rs.rules:
                if rule.id in seen:
                    other_index, other = seen[rule.id]
                    problem = f"{file}: rule id {rule.id!r} is already defined in {other}"
                    (errors if other_index == index else warnings).append(problem)
                else:
                    seen[rule.id] = (index, str(file))
            warnings += lint(rs)
    return sets, warnings, errors
