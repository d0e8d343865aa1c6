"""A strict reader of the Prometheus text exposition format 0.0.4.

It accepts what Prometheus's own parser accepts (and a little less, where the format
itself says so) and turns one scrape into columns: canonical series keys and float64
values. Any malformed line fails the whole scrape, so a bad answer stores nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from monitor.errors import ScrapeError

METRIC_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = rf"{_LABEL_NAME}[ \t]*=[ \t]*{_QUOTED}"
_LABELS_INNER = rf"[ \t]*(?:{_PAIR}[ \t]*(?:,[ \t]*{_PAIR}[ \t]*)*(?:,[ \t]*)?)?"
# Go's strconv.ParseFloat less hex floats and underscores (Prometheus rejects "pP_"),
# with ASCII digits only: Python's float() would also take "1_2", "١٢" and "+nan".
_VALUE = (
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|[+-]?[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN]"
)
_SAMPLE_LINE = re.compile(
    rf"({_METRIC_NAME})(?:[ \t]*\{{({_LABELS_INNER})\}})?"
    rf"[ \t]+({_VALUE})(?:[ \t]+([0-9]+))?[ \t]*"
)
_PAIRS = re.compile(rf'({_LABEL_NAME})[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")
_META = re.compile(r"#[ \t]+(HELP|TYPE)[ \t]+")
_HELP_LINE = re.compile(rf"#[ \t]+HELP[ \t]+({_METRIC_NAME})(?:[ \t].*)?")
# Like Prometheus, exactly one separator before the type and nothing after it.
_TYPE_LINE = re.compile(rf"#[ \t]+TYPE[ \t]+({_METRIC_NAME})[ \t](.*)")
_METRIC_NAME_RE = re.compile(_METRIC_NAME)
_LABEL_NAME_RE = re.compile(_LABEL_NAME)
_VALUE_RE = re.compile(_VALUE)
_QUOTED_RE = re.compile(_QUOTED)
_BLANKS = re.compile(r"[ \t]+")
_CANONICAL_KEY = re.compile(
    rf'({_METRIC_NAME})(?:\{{((?:{_LABEL_NAME}="(?:[^"\\\n]|\\[\\"n])*",)*'
    rf'{_LABEL_NAME}="(?:[^"\\\n]|\\[\\"n])*")\}})?'
)
_CANONICAL_PAIRS = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SUFFIX_TYPES = {
    "_bucket": ("histogram",),
    "_sum": ("histogram", "summary"),
    "_count": ("histogram", "summary"),
}
_INT64_MAX = 2**63 - 1
# The label of the zero-valued series that stands for a counter family declared without a
# sample (see `ParsedScrape.with_declared_counters`); Prometheus reserves `__` names.
DECLARED_LABEL = "__declared__"


@dataclass(frozen=True, eq=False)
class ParsedScrape:
    """One scrape as columns: `values[i]` is the sample of series `keys[i]`.

    `types` maps each metric family to its declared type; sample names that no
    `# TYPE` line covers appear as "untyped". `empty_counters` are the counter families
    declared without a sample.
    """

    keys: list[str]
    values: np.ndarray
    types: dict[str, str]
    empty_counters: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)

    def with_declared_counters(self) -> tuple[list[str], np.ndarray]:
        """The samples to store: these, and a zero under DECLARED_LABEL for each counter
        family declared without a sample (a labelled counter before its first increment,
        as Python's and Java's clients expose it), so that the family reads as counting
        nothing rather than as missing.

        >>> scrape = parse('# TYPE errors_total counter\\nreqs_total 7\\n')
        >>> scrape.with_declared_counters()[0]
        ['reqs_total', 'errors_total{__declared__="counter"}']
        """
        if not self.empty_counters:
            return self.keys, self.values
        # Under the names its samples may have: `errors` declares `errors_total` in
        # OpenMetrics, and `errors` itself in the 0.0.4 format of older clients.
        names = [name for family in self.empty_counters for name in (
            (family,) if family.endswith("_total") else (family, f"{family}_total"))]
        markers = [format_key(name, {DECLARED_LABEL: "counter"}) for name in names]
        return self.keys + markers, np.concatenate([self.values, np.zeros(len(markers))])


def parse(text: str) -> ParsedScrape:
    """Parse a whole exposition, or raise ScrapeError naming the first bad line.

    Series keys are canonical (see `format_key`); a label with an empty value is
    the same as no label, as in Prometheus. Timestamps are checked, not kept.

    >>> scrape = parse('# TYPE up gauge\\nup 1\\nreqs_total{method="get",code="500"} 3\\n')
    >>> scrape.keys
    ['up', 'reqs_total{code="500",method="get"}']
    >>> scrape.values.tolist(), scrape.types
    ([1.0, 3.0], {'up': 'gauge', 'reqs_total': 'untyped'})
    """
    keys: list[str] = []
    value_texts: list[str] = []
    line_numbers: list[int] = []
    types: dict[str, str] = {}
    sample_names: set[str] = set()
    match_sample = _SAMPLE_LINE.fullmatch
    # The hot path, kept inline: one regex validates a whole sample line.
    for line_number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line[0] in " \t":
            line = line.lstrip(" \t")
            if not line:
                continue
        if line[0] == "#":
            _read_comment(line, line_number, types)
            continue
        match = match_sample(line)
        if match is None:
            raise ScrapeError(f"line {line_number}: {_diagnose_sample(line)}")
        name, inner, value_text, timestamp = match.groups()
        keys.append(_series_key(name, inner, line_number) if inner else name)
        value_texts.append(value_text)
        line_numbers.append(line_number)
        sample_names.add(name)
        # int64 has at most 19 digits; int() of thousands of digits is itself refused.
        if timestamp is not None and len(timestamp.lstrip("-")) > 18 and (
                len(timestamp.lstrip("-")) > 19 or abs(int(timestamp)) > _INT64_MAX):
            raise ScrapeError(f"line {line_number}: timestamp {_snippet(timestamp)} is out of range")
    _check_unique(keys, line_numbers)
    values = _to_floats(value_texts, line_numbers)
    _add_untyped(types, sample_names)
    # OpenMetrics names a counter's family without the `_total` its samples carry.
    empty = tuple(family for family, kind in types.items()
                  if kind == "counter" and family not in sample_names
                  and f"{family}_total" not in sample_names)
    return ParsedScrape(keys=keys, values=values, types=types, empty_counters=empty)


def format_key(name: str, labels: Mapping[str, str]) -> str:
    """The canonical series key: labels sorted by name, values escaped as in the format.

    Every label given is written, even one with an empty value.

    >>> format_key("http_requests_total", {"method": "get", "code": "500"})
    'http_requests_total{code="500",method="get"}'
    >>> format_key("up", {})
    'up'
    """
    if not _METRIC_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    for label in labels:
        if not _LABEL_NAME_RE.fullmatch(label):
            raise ValueError(f"invalid label name {label!r}")
    if not labels:
        return name
    pairs = ",".join(f'{label}="{_escape(labels[label])}"' for label in sorted(labels))
    return f"{name}{{{pairs}}}"


def split_key(key: str) -> tuple[str, dict[str, str]]:
    """The inverse of `format_key`: a canonical key -> (metric name, labels).

    >>> split_key('http_requests_total{code="500",method="get"}')
    ('http_requests_total', {'code': '500', 'method': 'get'})
    """
    match = _CANONICAL_KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"not a series key: {key!r}")
    name, inner = match.groups()
    if inner is None:
        return name, {}
    pairs = _CANONICAL_PAIRS.findall(inner)
    labels = {label: _unescape(value) for label, value in pairs}
    if len(labels) != len(pairs):   # as Prometheus refuses them (a hand-edited recording)
        raise ValueError(f"{_duplicate_label(pairs)} in {key[:80]!r}")
    return name, labels


def _series_key(name: str, inner: str, line_number: int) -> str:
    """Canonical key of a sample whose label block `inner` the line regex has validated."""
    pairs = _PAIRS.findall(inner)
    if "\\" in inner:
        # Unknown escapes such as \t stay literal (as in Prometheus), so re-escape.
        pairs = [(label, _escape(_unescape(value))) for label, value in pairs]
    if len(pairs) == 1:
        label, value = pairs[0]
        return f'{name}{{{label}="{value}"}}' if value else name
    labels = dict(pairs)
    if len(labels) != len(pairs):
        raise ScrapeError(f"line {line_number}: {_duplicate_label(pairs)}")
    body = ",".join([f'{label}="{labels[label]}"' for label in sorted(labels) if labels[label]])
    return f"{name}{{{body}}}" if body else name


def _duplicate_label(pairs: list[tuple[str, str]]) -> str:
    """Message naming the first label that appears twice."""
    seen: set[str] = set()
    for label, _ in pairs:
        if label in seen:
            return f"label {_snippet(label)} appears twice"
        seen.add(label)
    return "a label appears twice"


def _escape(value: str) -> str:
    """Escape a label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    """Undo the format's escapes; an unknown escape is kept as written."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: _UNESCAPES.get(m[1], m[0]), value)


def _read_comment(line: str, line_number: int, types: dict[str, str]) -> None:
    """Check a `# HELP` or `# TYPE` line and record the type; other comments are ignored."""
    meta = _META.match(line)
    if meta is None:
        return
    if meta[1] == "HELP":
        if _HELP_LINE.fullmatch(line) is None:
            raise ScrapeError(f"line {line_number}: HELP needs a valid metric name")
        return
    match = _TYPE_LINE.fullmatch(line)
    if match is None:
        raise ScrapeError(f"line {line_number}: TYPE needs a valid metric name and a type")
    family, metric_type = match.groups()
    if metric_type not in METRIC_TYPES:
        raise ScrapeError(f"line {line_number}: invalid metric type {_snippet(metric_type)}")
    if family in types:
        raise ScrapeError(f"line {line_number}: second TYPE line for {_snippet(family)}")
    types[family] = metric_type


def _check_unique(keys: list[str], line_numbers: list[int]) -> None:
    """Fail on the first series that appears twice."""
    if len(set(keys)) == len(keys):
        return
    first_line: dict[str, int] = {}
    for key, line_number in zip(keys, line_numbers, strict=True):
        if key in first_line:
            raise ScrapeError(
                f"line {line_number}: duplicate series {_snippet(key, 80)} (first on line {first_line[key]})"
            )
        first_line[key] = line_number


def _to_floats(value_texts: list[str], line_numbers: list[int]) -> np.ndarray:
    """Convert validated value tokens; a finite spelling that overflows is an error."""
    values = np.fromiter(map(float, value_texts), dtype=np.float64, count=len(value_texts))
    for index in np.flatnonzero(np.isinf(values)):
        text = value_texts[index]
        if text.lstrip("+-")[0] not in "iI":
            raise ScrapeError(f"line {line_numbers[index]}: value {_snippet(text)} is out of range")
    values.flags.writeable = False
    return values


def _add_untyped(types: dict[str, str], sample_names: set[str]) -> None:
    """Give every sample name no TYPE line covers the type "untyped"."""
    for name in sorted(sample_names):
        if name not in types and not _declared_by_family(name, types):
            types[name] = "untyped"


def _declared_by_family(name: str, types: dict[str, str]) -> bool:
    """True when `name` is a histogram's or summary's `_bucket`, `_sum` or `_count`."""
    for suffix, family_types in _SUFFIX_TYPES.items():
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in family_types:
            return True
    return False


def _diagnose_sample(line: str) -> str:
    """Say what is wrong with a sample line the fast regex rejected."""
    name = _METRIC_NAME_RE.match(line)
    if name is None:
        return f"expected a metric name, got {_snippet(line)}"
    pos = name.end()
    brace = _skip_blanks(line, pos)
    if line.startswith("{", brace):
        problem, pos = _diagnose_labels(line, brace + 1)
        if problem:
            return problem
    rest = line[pos:]
    tokens = [token for token in _BLANKS.split(rest) if token]
    if not tokens:
        return f"missing value after {_snippet(line[:pos].rstrip())}"
    if rest[0] not in " \t":
        return f"unexpected {_snippet(rest)} after the series name"
    value = tokens[0]
    if not _VALUE_RE.fullmatch(value):
        return f"invalid value {_snippet(value)}"
    if len(tokens) > 1 and not (tokens[1].isascii() and tokens[1].isdigit()):
        return f"timestamp must be an integer number of milliseconds, got {_snippet(tokens[1])}"
    if len(tokens) > 2:
        return f"unexpected {_snippet(tokens[2])} after the timestamp"
    return f"malformed sample {_snippet(line)}"


def _diagnose_labels(line: str, pos: int) -> tuple[str, int]:
    """Walk a label block from just after `{`: (problem or "", position after `}`)."""
    while True:
        pos = _skip_blanks(line, pos)
        if line.startswith("}", pos):
            return "", pos + 1
        if pos == len(line):
            return "the label block has no closing '}'", pos
        label = _LABEL_NAME_RE.match(line, pos)
        if label is None:
            return f"expected a label name or '}}', got {_snippet(line[pos:])}", pos
        pos = _skip_blanks(line, label.end())
        if not line.startswith("=", pos):
            return f"expected '=' after label {label[0]}", pos
        pos = _skip_blanks(line, pos + 1)
        if not line.startswith('"', pos):
            return f"label {label[0]} needs a quoted value", pos
        quoted = _QUOTED_RE.match(line, pos)
        if quoted is None:
            return f"unterminated value of label {label[0]}", pos
        pos = _skip_blanks(line, quoted.end())
        if line.startswith(",", pos):
            pos += 1
        elif not line.startswith("}", pos):
            return f"expected ',' or '}}' after the value of label {label[0]}", pos


def _skip_blanks(line: str, pos: int) -> int:
    """Position of the first character at or after `pos` that is not a space or tab."""
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _snippet(text: str, limit: int = 40) -> str:
    """A short, quoted, single-line excerpt for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
