"""What the app exports to Prometheus, and a small PromQL reader that checks queries against it.

The Grafana dashboard (monitoring/grafana/hiring-pro.json) and RUNBOOK.md name metrics and labels;
their tests use these helpers so that a query naming something the code does not export fails.

The catalog is read from the metric objects the app's modules declare (imported as production
imports them). What /metrics serves in production is the multiprocess exposition
(app/observability/metrics.py): counters as `<name>_total` without `_created`, histograms as
`_bucket`/`_count`/`_sum`, gauges under their name, with a `pid` label only for gauges in the
`all`/`liveall` modes. `exposed_series` reads an exposition, so a test can hold the catalog to it.
"""

import importlib
import pkgutil
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.metrics import Gauge, MetricWrapperBase

import app as app_package

# Modules that build an app when imported (they read the environment); they declare no metrics.
APP_ENTRY_MODULES = frozenset({"app.main", "app.worker_app"})
# Added by Prometheus to every series it scrapes (the scrape job and the target's address).
TARGET_LABELS = frozenset({"job", "instance"})
# Gauge modes whose multiprocess exposition keeps one series per process, labelled `pid`.
_PER_PROCESS_GAUGE_MODES = frozenset({"all", "liveall"})
_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """One declared metric: its family name and type, its labels and the series it exports."""

    name: str
    type: str
    labels: frozenset[str]
    samples: frozenset[str]


def import_app_modules() -> None:
    """Import every module of the `app` package (except the app entry points), so every metric
    the code declares at import time is registered."""
    for module in pkgutil.walk_packages(app_package.__path__, "app."):
        if module.name not in APP_ENTRY_MODULES:
            importlib.import_module(module.name)


def declared_metrics() -> list[MetricWrapperBase]:
    """The metric objects held by the imported `app.*` modules (parents, not labelled children)."""
    found: dict[int, MetricWrapperBase] = {}
    for name, module in list(sys.modules.items()):
        if name != "app" and not name.startswith("app."):
            continue
        for value in vars(module).values():
            # A labelled child (`metric.labels(...)`) carries label values; its parent is listed.
            if isinstance(value, MetricWrapperBase) and not value._labelvalues:
                found[id(value)] = value
    return list(found.values())


def _family(metric: MetricWrapperBase) -> MetricFamily:
    [description] = metric.describe()
    suffixes = _SAMPLE_SUFFIXES.get(description.type)
    if suffixes is None:
        raise ValueError(f"{description.name}: {description.type} metrics have no exposition here")
    # prometheus_client keeps label names only on this attribute (no public accessor).
    labels = set(metric._labelnames)
    if isinstance(metric, Gauge) and metric._multiprocess_mode in _PER_PROCESS_GAUGE_MODES:
        labels.add("pid")
    samples = frozenset(description.name + suffix for suffix in suffixes)
    return MetricFamily(description.name, description.type, frozenset(labels), samples)


class MetricsCatalog:
    """The exported families by name and by series name, and checks of PromQL against them."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = {family.name: family for family in families}
        self.by_sample = {sample: family for family in families for sample in family.samples}

    @classmethod
    def from_app(cls) -> "MetricsCatalog":
        """The catalog of everything the app's modules declare."""
        import_app_modules()
        return cls([_family(metric) for metric in declared_metrics()])

    def series_labels(self, sample: str) -> frozenset[str] | None:
        """Labels a query may use on series `sample` (None when the app does not export it):
        the metric's own, `le` on histogram buckets, and the scrape target's."""
        family = self.by_sample.get(sample)
        if family is None:
            return None
        labels = family.labels | TARGET_LABELS
        if family.type == "histogram" and sample.endswith("_bucket"):
            labels |= {"le"}
        return labels

    def problems(self, expr: str) -> list[str]:
        """What is wrong with a PromQL expression: unknown series, functions or labels."""
        try:
            query = parse_query(expr)
        except PromQLError as exc:
            return [str(exc)]
        if not query.selectors:
            return ["the expression queries no metric"]
        found: list[str] = []
        known: list[tuple[Selector, frozenset[str]]] = []
        for selector in query.selectors:
            labels = self.series_labels(selector.metric)
            if labels is None:
                found.append(f"{selector.metric} is not exported by the app")
                continue
            known.append((selector, labels))
            found.extend(
                f"{selector.metric} has no label {label!r}"
                for label in selector.matchers
                if label not in labels
            )
        for grouping in query.groupings:
            inside = [labels for selector, labels in known if selector.position in grouping.scope]
            for label in grouping.labels:
                if grouping.keyword in ("by", "without"):
                    # An aggregation's labels come from every series it aggregates.
                    missing = not all(label in labels for labels in inside)
                else:
                    missing = not any(label in labels for labels in inside)
                if missing:
                    found.append(f"{grouping.keyword} ({label}): no such label on its series")
        return found


def exposed_series(exposition: str) -> dict[str, frozenset[str]]:
    """Series names in Prometheus text format and the label names each carries."""
    series: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        if rest:
            labels = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', rest.rpartition("}")[0]))
        else:
            name, labels = line.split(" ", 1)[0], set()
        series.setdefault(name, set()).update(labels)
    return {name: frozenset(labels) for name, labels in series.items()}


# --- PromQL -----------------------------------------------------------------------------------


class PromQLError(ValueError):
    """An expression the reader refuses: a syntax it does not know, or an unknown function."""


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric named in a query, the labels its matchers test, and its token position."""

    metric: str
    matchers: tuple[str, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Grouping:
    """A `by`/`without` (or vector-matching) clause, its labels and the tokens it applies to."""

    keyword: str
    labels: tuple[str, ...]
    scope: range


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """What a query reads: its metric selectors and its grouping clauses."""

    selectors: tuple[Selector, ...]
    groupings: tuple[Grouping, ...]


AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "minute",
        "month",
        "predict_linear",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "year",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
        "start",
        "end",
    }
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})

# Strings, ranges/subqueries (`[5m]`, `[$__rate_interval]`, `[1h:5m]`) and Grafana variables are
# skipped whole; durations come before numbers so `5m` is one token.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\[\]]*\])
    | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


def _tokens(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLError(f"cannot read {expr[position : position + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, match.group()))
        position = match.end()
    return tokens


def _matching_parens(tokens: list[_Token]) -> dict[int, int]:
    """Both directions: the index of each parenthesis's partner."""
    partners: dict[int, int] = {}
    opened: list[int] = []
    for index, token in enumerate(tokens):
        if token.text == "(":
            opened.append(index)
        elif token.text == ")":
            if not opened:
                raise PromQLError("unbalanced ')'")
            start = opened.pop()
            partners[start], partners[index] = index, start
    if opened:
        raise PromQLError("unbalanced '('")
    return partners


class _Reader:
    def __init__(self, expr: str) -> None:
        self.tokens = _tokens(expr)
        self.partners = _matching_parens(self.tokens)
        self.selectors: list[Selector] = []
        self.groupings: list[Grouping] = []

    def text(self, index: int) -> str:
        return self.tokens[index].text if index < len(self.tokens) else ""

    def read(self) -> ParsedQuery:
        index = 0
        while index < len(self.tokens):
            token = self.tokens[index]
            if token.text == "{":
                raise PromQLError("a selector without a metric name")
            if token.kind != "name":
                index += 1
            elif token.text in _GROUPING:
                index = self._grouping(index)
            elif token.text in _KEYWORDS:
                index += 1
            elif token.text in AGGREGATIONS or token.text in FUNCTIONS:
                if self.text(index + 1) != "(" and self.text(index + 1) not in ("by", "without"):
                    raise PromQLError(f"{token.text} without its arguments")
                index += 1
            elif self.text(index + 1) == "(":
                raise PromQLError(f"unknown function {token.text}")
            else:
                index = self._selector(index)
        return ParsedQuery(tuple(self.selectors), tuple(self.groupings))

    def _label_list(self, index: int) -> tuple[tuple[str, ...], int]:
        """The labels of `( a, b )` starting at `index`, and the index after the list."""
        end = self.partners[index]
        labels = tuple(token.text for token in self.tokens[index + 1 : end] if token.text != ",")
        for label in labels:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
                raise PromQLError(f"{label!r} is not a label name")
        return labels, end + 1

    def _grouping(self, index: int) -> int:
        keyword = self.tokens[index].text
        labels: tuple[str, ...] = ()
        after = index + 1
        if self.text(after) == "(":
            labels, after = self._label_list(after)
        if keyword not in ("by", "without"):
            # Vector matching applies to both sides of its operator: the whole expression.
            self.groupings.append(Grouping(keyword, labels, range(len(self.tokens))))
            return after
        previous = self.text(index - 1) if index > 0 else ""
        if previous == ")" and self.text(self.partners[index - 1] - 1) in AGGREGATIONS:
            start = self.partners[index - 1]
            scope = range(start, index)
        elif previous in AGGREGATIONS and self.text(after) == "(":
            scope = range(after, self.partners[after] + 1)
        else:
            raise PromQLError(f"{keyword} outside an aggregation")
        self.groupings.append(Grouping(keyword, labels, scope))
        return after

    def _selector(self, index: int) -> int:
        metric = self.tokens[index].text
        matchers: list[str] = []
        after = index + 1
        if self.text(after) == "{":
            after += 1
            while self.text(after) != "}":
                label, operator, value = (self.tokens[after : after + 3] + [_Token("", "")] * 3)[:3]
                if (
                    label.kind != "name"
                    or operator.text not in _MATCH_OPERATORS
                    or value.kind != "string"
                ):
                    raise PromQLError(f'a matcher of {metric} is not `label op "value"`')
                matchers.append(label.text)
                after += 3
                if self.text(after) == ",":
                    after += 1
                elif self.text(after) != "}":
                    raise PromQLError(f"the matchers of {metric} are not closed")
            after += 1
        self.selectors.append(Selector(metric, tuple(matchers), index))
        return after


def parse_query(expr: str) -> ParsedQuery:
    """The metric selectors and grouping clauses of a PromQL expression.

    Strings, numbers, durations, ranges, Grafana variables, operators and keywords are skipped;
    a name followed by `(` must be a PromQL function or aggregation; every other name is a metric.
    """
    return _Reader(expr).read()


def iter_metric_names(expr: str) -> Iterator[str]:
    """The metric names a PromQL expression reads, in order."""
    for selector in parse_query(expr).selectors:
        yield selector.metric
