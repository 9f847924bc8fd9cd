"""The filter language of rule segments: parse and validate a marketer's rule, then compile it to
a Django `Q` over `profiles.Profile`. Rule text never becomes SQL text; every value, category name
included, reaches the database as a query parameter.

    lifecycle_stage = "active" and value_tier >= "medium"
    monetary > 100 and (frequency >= 3 or top_category = "Books")
    not is_loyalty_member and region in ("north", "east")
    category_share["Music"] >= 0.25
    rating_mean is null

`and` binds tighter than `or`, `not` tighter than both; keywords are case-insensitive. Comparisons
are `= != < <= > >=`, `in (…)`, `not in (…)`, `is null`, `is not null`; a bare yes/no field means
`= true`. Values are numbers, "double" or 'single' quoted strings (a backslash escapes the next
character), and true/false. `FIELDS` lists what a rule can test and how.

Nulls. A trait that is JSON null, absent, or not of its field's type (a string under a numeric
key) is null for that customer, and every comparison with a null is false — `!=` and `not in`
included, so `region != "north"` leaves out customers with no region. `not` is the exact
complement of its operand over all profiles: `not region = "north"` includes them. Only
`is null` / `is not null` test for nulls. `category_share["X"]` is never null: a category missing
from a customer's shares counts as 0, so `category_share["X"] < 0.2` holds for it.
"""

import difflib
import math
import operator
import re
from dataclasses import dataclass
from functools import reduce

from django.db.models import Case, CharField, F, FloatField, Func, Q, Value, When
from django.db.models.fields.json import KT, KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import Exact, GreaterThan, GreaterThanOrEqual, In, IsNull, LessThan, LessThanOrEqual
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from crm.models import Audience, RiskBand
from profiles.features import NUMERIC_FEATURES
from profiles.models import LifecycleStage, ValueTier

MAX_RULE_LENGTH = 2_000
MAX_COMPARISONS = 50
MAX_DEPTH = 50

ORDERING_OPERATORS = ("<", "<=", ">", ">=")
MEMBERSHIP_OPERATORS = ("=", "!=", "in", "not in")
NULL_OPERATORS = ("is null", "is not null")

# every numeric feature of a profile except the hour's sine and cosine, which say nothing on their
# own (preferred_hour is their readable form), plus two numeric traits kept outside the feature vector
NUMERIC_TRAITS = (
    *(name for name in NUMERIC_FEATURES if name not in ("hour_sin", "hour_cos")), "refunded_value", "preferred_hour",
)
TEXT_TRAITS = ("top_channel", "top_device", "age_band", "gender", "region")
PREDICTION_NUMBERS = ("churn_probability", "probability_active", "expected_purchases", "expected_spend",
                      "lifetime_value", "risk_score")


@dataclass(frozen=True)
class Field:
    """One thing a rule can test. `kind` is "number", "text", "boolean", "label" (a profile column
    holding one of `values`, which are in rank order when `ordered`) or "set" (a column holding a
    list of `values`: `=` tests that the list contains the value, `in` that it holds any of them)."""

    name: str
    kind: str
    values: tuple[str, ...] = ()
    ordered: bool = False
    keyed: bool = False  # takes a category name: category_share["Books"]
    nullable: bool = True
    column: str | None = None  # a column reached from the profile, instead of a trait in its JSON

    @property
    def operators(self) -> tuple[str, ...]:
        if self.kind == "number":
            allowed = ("=", "!=", *ORDERING_OPERATORS, "in", "not in")
        elif self.kind == "boolean":
            allowed = ("=", "!=")
        elif self.kind == "label" and self.ordered:
            allowed = ("=", "!=", *ORDERING_OPERATORS, "in", "not in")
        else:
            allowed = MEMBERSHIP_OPERATORS
        return allowed + NULL_OPERATORS if self.nullable else allowed


FIELDS: dict[str, Field] = {
    field.name: field
    for field in (
        Field("value_tier", "label", values=tuple(ValueTier.values), ordered=True, nullable=False),
        Field("lifecycle_stage", "label", values=tuple(LifecycleStage.values), nullable=False),
        *(Field(name, "number") for name in NUMERIC_TRAITS),
        *(Field(name, "text") for name in TEXT_TRAITS),
        Field("top_category", "text"),
        Field("is_loyalty_member", "boolean"),
        Field("category_share", "number", keyed=True, nullable=False),
        # the CLV model's forecasts and the risk scorecard (crm.CustomerPrediction); null before a fit
        *(Field(name, "number", column=f"customer__prediction__{name}") for name in PREDICTION_NUMBERS),
        Field("audience", "set", values=tuple(Audience.values), nullable=False, column="customer__prediction__audiences"),
        Field("risk_band", "label", values=tuple(RiskBand.values), ordered=True, column="customer__prediction__risk_band"),
    )
}


class RuleError(ValueError):
    """A rule that cannot be parsed or does not validate. `position` is the 0-based character
    offset of the problem when there is one; `column` counts from 1."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.message = message
        self.position = position

    @property
    def column(self) -> int | None:
        return None if self.position is None else self.position + 1


@dataclass(frozen=True)
class Comparison:
    field: str
    operator: str  # one of Field.operators
    value: object = None  # float, str or bool; a tuple of them for in / not in; None for the null tests
    category: str | None = None


@dataclass(frozen=True)
class AllOf:
    parts: tuple


@dataclass(frozen=True)
class AnyOf:
    parts: tuple


@dataclass(frozen=True)
class Not:
    part: object


@dataclass(frozen=True)
class Rule:
    """A parsed, validated rule; `str()` gives its canonical text, which parses back to an equal rule."""

    root: Comparison | AllOf | AnyOf | Not

    def __str__(self) -> str:
        return _render(self.root)


_GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction (_OR conjunction)*
?conjunction: negation (_AND negation)*
?negation: _NOT negation -> negated
         | comparison
         | "(" disjunction ")"

comparison: field OPERATOR _value                        -> compare
          | field _IN "(" _value ("," _value)* ")"       -> in_list
          | field _NOT _IN "(" _value ("," _value)* ")"  -> not_in_list
          | field _IS _NULL                              -> is_null
          | field _IS _NOT _NULL                         -> is_not_null
          | field                                        -> bare
field: NAME ("[" STRING "]")?
_value: STRING | NUMBER | TRUE | FALSE

_AND: "and"i
_OR: "or"i
_NOT: "not"i
_IN: "in"i
_IS: "is"i
_NULL: "null"i
TRUE: "true"i
FALSE: "false"i
NAME: /[a-z_][a-z0-9_]*/i
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/s
OPERATOR: "<=" | ">=" | "!=" | "<" | ">" | "="
%ignore /\s+/
"""
# The basic lexer makes keywords reserved everywhere (lark folds them into NAME), so "android" is
# a name but "and" never is. Positions give a nested part's offset for errors.
_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True)

_COMPARISON_FORMS = {"compare", "in_list", "not_in_list", "is_null", "is_not_null", "bare"}
_TERMINAL_WORDS = {
    "NAME": "a field", "STRING": "a string", "NUMBER": "a number", "TRUE": "'true'", "FALSE": "'false'",
    "OPERATOR": "a comparison", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','",
    "_AND": "'and'", "_OR": "'or'", "_NOT": "'not'", "_IN": "'in'", "_IS": "'is'", "_NULL": "'null'", "$END": "the end",
}


def rule_parse(text: str) -> Rule:
    """Parse and validate rule text; raises RuleError, and only RuleError, for anything wrong."""
    if not isinstance(text, str):
        raise RuleError("a rule must be text")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"expression too long ({len(text):,} > {MAX_RULE_LENGTH:,} characters)", MAX_RULE_LENGTH)
    if not text.strip():
        raise RuleError("the rule is empty", 0)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(error, text) from None
    comparisons = sum(1 for subtree in tree.iter_subtrees() if subtree.data in _COMPARISON_FORMS)
    if comparisons > MAX_COMPARISONS:
        raise RuleError(f"too many comparisons ({comparisons} > {MAX_COMPARISONS})")
    return Rule(_node(tree, depth=0))


def rule_canonical(text: str) -> str:
    """The normalised text of a rule: lower-case keywords and fields, double-quoted strings,
    minimal parentheses, bare yes/no fields spelled out as `= true`."""
    return str(rule_parse(text))


def rule_to_q(rule: Rule) -> Q:
    """The rule as a filter over profiles.Profile."""
    return _node_q(rule.root)


def _syntax_error(error: UnexpectedInput, text: str) -> RuleError:
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream
        character = text[position]
        hint = " (a string is not closed)" if character in "\"'" else ""
        return RuleError(f"unexpected character {character!r} at column {position + 1}{hint}", position)
    if isinstance(error, UnexpectedToken):
        token = error.token
        at_end = token.type == "$END"
        position = len(text) if at_end or token.start_pos is None else token.start_pos
        found = "end of rule" if at_end else repr(str(token))
        expected = sorted({_TERMINAL_WORDS.get(name, name) for name in (error.accepts or error.expected)})
        wanted = ", ".join(expected[:-1]) + " or " + expected[-1] if len(expected) > 1 else "".join(expected)
        hint = f"; put text in quotes: \"{token}\"" if token.type == "NAME" and "STRING" in error.expected else ""
        return RuleError(f"unexpected {found} at column {position + 1}, expected {wanted}{hint}", position)
    position = getattr(error, "pos_in_stream", None)
    return RuleError(f"cannot read the rule at column {(position or 0) + 1}", position)


def _node(tree: Tree, *, depth: int):
    if tree.data in _COMPARISON_FORMS:
        return _comparison(tree)
    if depth >= MAX_DEPTH:
        raise RuleError(f"the rule nests too deeply (more than {MAX_DEPTH} levels)", tree.meta.start_pos)
    if tree.data == "negated":
        return Not(_node(tree.children[0], depth=depth + 1))
    kind = AllOf if tree.data == "conjunction" else AnyOf
    parts = []
    for child in tree.children:
        part = _node(child, depth=depth + 1)
        # `a and (b and c)` is `a and b and c`; flattening keeps the canonical text stable
        parts.extend(part.parts if isinstance(part, kind) else [part])
    return kind(tuple(parts))


def _comparison(tree: Tree) -> Comparison:
    field_tree, *rest = tree.children
    field, category = _field(field_tree)
    name_token = field_tree.children[0]
    if tree.data == "bare":
        if field.kind != "boolean":
            raise RuleError(
                f"{field.name} is not a yes/no field; compare it with a value, e.g. {_example(field)}",
                name_token.start_pos,
            )
        return Comparison(field.name, "=", True, category)
    if tree.data in ("is_null", "is_not_null"):
        operator_name = "is null" if tree.data == "is_null" else "is not null"
        if not field.nullable:
            why = " (a missing category counts as 0)" if field.keyed else ""
            raise RuleError(f"{field.name} is never null{why}", name_token.start_pos)
        return Comparison(field.name, operator_name, None, category)
    if tree.data == "compare":
        operator_token, *value_tokens = rest
        operator_name, position = str(operator_token), operator_token.start_pos
    else:
        value_tokens = rest
        operator_name, position = ("in" if tree.data == "in_list" else "not in"), name_token.end_pos
    if operator_name not in field.operators:
        raise RuleError(
            f"'{operator_name}' does not apply to {field.name} ({_kind_words(field)}); "
            f"use {', '.join(field.operators)}",
            position,
        )
    values = tuple(_checked_value(field, operator_name, token) for token in value_tokens)
    value = values if operator_name in ("in", "not in") else values[0]
    return Comparison(field.name, operator_name, value, category)


def _field(tree: Tree) -> tuple[Field, str | None]:
    name_token, *category_tokens = tree.children
    name = str(name_token).lower()
    field = FIELDS.get(name)
    if field is None:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        suggestion = f" (did you mean '{close[0]}'?)" if close else ""
        raise RuleError(f"unknown field '{name_token}'{suggestion}", name_token.start_pos)
    if field.keyed and not category_tokens:
        raise RuleError(f'{name} needs a category, as in {name}["Books"]', name_token.start_pos)
    if category_tokens and not field.keyed:
        raise RuleError(f"{name} takes no [category]", category_tokens[0].start_pos)
    return field, (_string(category_tokens[0]) if category_tokens else None)


def _checked_value(field: Field, operator_name: str, token: Token):
    value = _literal(token)
    wanted = {"number": float, "text": str, "label": str, "set": str, "boolean": bool}[field.kind]
    if type(value) is not wanted:
        wanted_words = {float: "a number", str: "a string", bool: "true or false"}[wanted]
        raise RuleError(
            f"'{operator_name}' needs {wanted_words} for {field.name}, got {_value_words(value)}", token.start_pos
        )
    if field.kind in ("label", "set") and value not in field.values:
        raise RuleError(
            f"{field.name} compares with one of {', '.join(field.values)}, not {value!r}", token.start_pos
        )
    return value


def _literal(token: Token):
    if token.type == "STRING":
        return _string(token)
    if token.type == "NUMBER":
        number = float(token)
        if not math.isfinite(number):
            raise RuleError(f"number out of range: {token}", token.start_pos)
        return number
    return token.type == "TRUE"


def _string(token: Token) -> str:
    value = re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.S)
    if "\x00" in value:
        raise RuleError("a string cannot contain the NUL character", token.start_pos)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleError("a string contains characters that are not valid text", token.start_pos) from None
    return value


def _value_words(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "a number" if isinstance(value, float) else "a string"


def _kind_words(field: Field) -> str:
    if field.kind == "label":
        return "ranked values" if field.ordered else "one of fixed values"
    return {"number": "a number", "text": "text", "boolean": "yes/no", "set": "a list of fixed values"}[field.kind]


def _example(field: Field) -> str:
    subject = f'{field.name}["Books"]' if field.keyed else field.name
    if field.kind in ("label", "set"):
        return f'{subject} = "{field.values[0]}"'
    return f'{subject} > 0' if field.kind == "number" else f'{subject} = "…"'


def _render(node, *, inside_and: bool = False) -> str:
    if isinstance(node, Comparison):
        return _render_comparison(node)
    if isinstance(node, Not):
        inner = _render(node.part)
        return f"not ({inner})" if isinstance(node.part, (AllOf, AnyOf)) else f"not {inner}"
    if isinstance(node, AllOf):
        return " and ".join(_render(part, inside_and=True) for part in node.parts)
    text = " or ".join(_render(part) for part in node.parts)
    return f"({text})" if inside_and else text


def _render_comparison(comparison: Comparison) -> str:
    subject = comparison.field
    if comparison.category is not None:
        subject += f"[{_render_value(comparison.category)}]"
    if comparison.operator in NULL_OPERATORS:
        return f"{subject} {comparison.operator}"
    if comparison.operator in ("in", "not in"):
        values = ", ".join(_render_value(value) for value in comparison.value)
        return f"{subject} {comparison.operator} ({values})"
    return f"{subject} {comparison.operator} {_render_value(comparison.value)}"


def _render_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_COMPARE = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_LOOKUPS = {
    "=": Exact, "<": LessThan, "<=": LessThanOrEqual, ">": GreaterThan, ">=": GreaterThanOrEqual, "in": In,
}


class _JSONTypeof(Func):
    function = "jsonb_typeof"
    output_field = CharField()


def _node_q(node) -> Q:
    if isinstance(node, AllOf):
        return reduce(operator.and_, (_node_q(part) for part in node.parts))
    if isinstance(node, AnyOf):
        return reduce(operator.or_, (_node_q(part) for part in node.parts))
    if isinstance(node, Not):
        return ~_node_q(node.part)
    return _comparison_q(node)


def _comparison_q(comparison: Comparison) -> Q:
    field = FIELDS[comparison.field]
    if field.kind == "set":
        single = comparison.operator in ("=", "!=")
        test = Q(**{f"{field.column}__{'contains' if single else 'overlap'}":
                    [comparison.value] if single else list(comparison.value)})
        return ~test if comparison.operator in ("!=", "not in") else test
    if field.kind == "label":
        if comparison.operator in NULL_OPERATORS:
            return Q(**{f"{field.column}__isnull": comparison.operator == "is null"})
        allowed = [value for value in field.values if _label_holds(field, comparison, value)]
        return Q(**{f"{field.column or field.name}__in": allowed})
    value_expression = _trait_expression(field, comparison.category)
    if comparison.operator in NULL_OPERATORS:
        return Q(IsNull(value_expression, comparison.operator == "is null"))
    value = comparison.value
    if field.kind == "boolean":
        value = "true" if value else "false"  # ->> renders JSON booleans as this text
    negated = comparison.operator in ("!=", "not in")
    positive = {"!=": "=", "not in": "in"}.get(comparison.operator, comparison.operator)
    test = Q(_LOOKUPS[positive](value_expression, list(value) if positive == "in" else value))
    if negated:
        test = ~test
    if not field.nullable:
        return test
    # `x AND x IS NOT NULL` is false, never SQL NULL, when x is null, so `not` is an exact complement.
    return test & Q(IsNull(value_expression, False))


def _label_holds(field: Field, comparison: Comparison, value: str) -> bool:
    if comparison.operator == "in":
        return value in comparison.value
    if comparison.operator == "not in":
        return value not in comparison.value
    rank = field.values.index
    return _COMPARE[comparison.operator](rank(value), rank(comparison.value))


def _trait_expression(field: Field, category: str | None):
    if field.column:
        return F(field.column)
    if field.keyed:
        # KeyTransform passes the category as a parameter of a JSON path, whatever its characters.
        shares = KeyTransform("category_shares", "traits")
        return Coalesce(_json_number(KeyTransform(category, shares), KeyTextTransform(category, shares)), Value(0.0))
    if field.name == "top_category":
        return KT("traits__top_categories__0__name")
    if field.kind == "number":
        return _json_number(KeyTransform(field.name, "traits"), KeyTextTransform(field.name, "traits"))
    return KeyTextTransform(field.name, "traits")


def _json_number(json_value: KeyTransform, json_text: KeyTextTransform):
    """The value as a float where it is a JSON number, else NULL, so a stray string under a
    numeric key reads as undefined instead of failing the cast for the whole query."""
    return Case(
        When(Exact(_JSONTypeof(json_value), "number"), then=Cast(json_text, FloatField())),
        output_field=FloatField(),
    )
