"""The Grafana dashboard (monitoring/grafana/hiring-pro.json) queries only what the app exports.

Every panel query is read by the PromQL reader of tests/support/metrics_catalog.py: each metric
must be a series the app exports, each label in a matcher or a grouping clause one the series
carries. The catalog itself is held to a real multiprocess exposition (what /metrics serves under
gunicorn), and the reader is shown to catch made-up names.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.support.gunicorn_server import REPO_ROOT
from tests.support.metrics_catalog import (
    MetricsCatalog,
    PromQLError,
    exposed_series,
    iter_metric_names,
    parse_query,
)

DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "hiring-pro.json"
BACKEND = REPO_ROOT / "backend"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's `label_values(<selector>, <label>)` variable query.
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module")
def catalog() -> MetricsCatalog:
    return MetricsCatalog.from_app()


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title and refId, expression) for every target of every panel."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in query_panels(load_dashboard())
        for target in panel["targets"]
    ]


def test_dashboard_model_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = all_panels(dashboard)
    ids = Counter(panel["id"] for panel in panels)
    assert [panel_id for panel_id, count in ids.items() if count > 1] == []
    for panel in panels:
        position = panel["gridPos"]
        assert position["w"] <= 24 and position["x"] + position["w"] <= 24, panel["title"]
        assert position["h"] >= 1 and position["y"] >= 0, panel["title"]
    for panel in query_panels(dashboard):
        title = panel["title"]
        assert title, panel["id"]
        assert len(panel.get("description", "")) >= 40, f"{title}: say what good looks like"
        assert panel["datasource"] == DATASOURCE_REF, title
        assert panel["targets"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[q[0] for q in panel_queries()])
def test_panel_queries_only_exported_metrics_and_labels(
    catalog: MetricsCatalog, panel: str, expr: str
) -> None:
    assert catalog.problems(expr) == []


def test_variable_queries_use_exported_metrics(catalog: MetricsCatalog) -> None:
    queries = [
        variable["query"]["query"]
        for variable in load_dashboard()["templating"]["list"]
        if variable["type"] == "query"
    ]
    assert queries
    for query in queries:
        match = LABEL_VALUES.fullmatch(query)
        assert match is not None, query
        assert catalog.problems(match["selector"]) == [], query
        [metric] = iter_metric_names(match["selector"])
        labels = catalog.series_labels(metric)
        assert labels is not None and match["label"] in labels, query


def test_every_exported_metric_is_on_the_dashboard(catalog: MetricsCatalog) -> None:
    """A metric added to the code without a panel is one nobody will look at."""
    queried = {
        catalog.by_sample[name].name
        for _, expr in panel_queries()
        for name in iter_metric_names(expr)
        if name in catalog.by_sample
    }
    assert sorted(set(catalog.families) - queried) == []


def test_catalog_covers_the_registry(catalog: MetricsCatalog) -> None:
    """Every `hiringpro_*` family registered by importing the app is in the catalog."""
    registered = {
        family.name for family in REGISTRY.collect() if family.name.startswith("hiringpro_")
    }
    assert registered == set(catalog.families)


# Run in a fresh process with PROMETHEUS_MULTIPROC_DIR set (as gunicorn.conf.py sets it before
# the workers import prometheus_client): give every declared metric one value, then print the
# exposition /metrics would serve.
_EXPOSITION_SCRIPT = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from prometheus_client import Counter, Gauge, Histogram

    from app.observability.metrics import render_metrics
    from tests.support.metrics_catalog import declared_metrics, import_app_modules

    import_app_modules()
    for metric in declared_metrics():
        names = metric._labelnames
        child = metric.labels(*["x"] * len(names)) if names else metric
        if isinstance(metric, Counter):
            child.inc()
        elif isinstance(metric, Gauge):
            child.set(1)
        elif isinstance(metric, Histogram):
            child.observe(0.1)
    body, _ = render_metrics(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    print(body.decode())
    """
)


def test_catalog_matches_the_multiprocess_exposition(
    catalog: MetricsCatalog, tmp_path: Path
) -> None:
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _EXPOSITION_SCRIPT],
        cwd=BACKEND,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = exposed_series(result.stdout)
    assert set(served) == set(catalog.by_sample)
    for sample, labels in served.items():
        own_labels = catalog.series_labels(sample)
        assert own_labels is not None
        # The exposition has the metric's labels (+ le); Prometheus adds job and instance.
        assert labels | {"job", "instance"} == own_labels, sample


# --- the reader itself -------------------------------------------------------------------------


def test_reader_names_exactly_the_metrics_of_an_expression() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/api/.+", '
        'job=~"$job"}[$__rate_interval]))) / on (route) group_left () '
        "sum(rate(b_total[5m] offset 1h)) by (route) > bool 0.5e1 "
        'or vector(0) + count_values("rate", c) - topk(3, d{x!~"sum(e)"})'
    )
    assert list(iter_metric_names(expr)) == ["a_bucket", "b_total", "c", "d"]
    query = parse_query(expr)
    assert [(g.keyword, g.labels) for g in query.groupings] == [
        ("by", ("le", "route")),
        ("on", ("route",)),
        ("group_left", ()),
        ("by", ("route",)),
    ]
    assert query.selectors[0].matchers == ("route", "job")


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(hiringpro_made_up_total[5m]))", "hiringpro_made_up_total is not exported"),
        ("rate(hiringpro_http_requests[5m])", "hiringpro_http_requests is not exported"),
        ("hiringpro_http_requests_total_created", "is not exported"),
        ('rate(hiringpro_http_requests_total{color="red"}[5m])', "has no label 'color'"),
        ("sum by (breaker) (rate(hiringpro_http_requests_total[5m]))", "by (breaker)"),
        ('hiringpro_http_requests_total{le="0.5"}', "has no label 'le'"),
        ('hiringpro_db_pool_size{pid="1"}', "has no label 'pid'"),
        ("ratez(hiringpro_http_requests_total[5m])", "unknown function ratez"),
        ('{__name__="hiringpro_http_requests_total"}', "without a metric name"),
        ("sum(rate(hiringpro_http_requests_total[5m])", "unbalanced"),
        ("1 + 2", "queries no metric"),
    ],
)
def test_reader_catches_what_the_app_does_not_export(
    catalog: MetricsCatalog, expr: str, problem: str
) -> None:
    problems = catalog.problems(expr)
    assert any(problem in found for found in problems), problems


def test_reader_refuses_what_it_cannot_read() -> None:
    with pytest.raises(PromQLError):
        parse_query('hiringpro_http_requests_total{route="/x"')
    with pytest.raises(PromQLError):
        parse_query("hiringpro_http_requests_total # comment")
