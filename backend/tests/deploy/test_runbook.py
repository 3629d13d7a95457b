"""RUNBOOK.md names only things that exist: alarms, routes, metrics, settings, panels, commands.

Each check reads the runbook as an on-call engineer would use it: every alarm the
.ebextensions/*/20-alarms.config files define has its section (and every section an alarm), with
the alarm's metric and threshold; every `/api/...`, `/health...`, `/worker/...` and `/metrics`
path is a route of the web or worker app; every `hiringpro_*` name is exported and every PromQL
block passes the dashboard's checker (tests/support/metrics_catalog.py); every setting in inline
code is a setting of the app or the bundle; every quoted panel is on the dashboard; every
`python -m` command is a module whose `--help` knows the flags used.
"""

import importlib.util
import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from starlette.routing import Match

from app.config import Settings
from app.main import app as web_app
from app.worker_app import app as worker_app
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.metrics_catalog import MetricsCatalog

RUNBOOK = REPO_ROOT / "RUNBOOK.md"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "hiring-pro.json"
BACKEND = REPO_ROOT / "backend"
ALARM_FILES = sorted((REPO_ROOT / ".ebextensions").glob("*/20-alarms.config"))
ALARM_TOPIC = "HiringProAlarmTopic"
# Files whose environment variables are settings of the bundle rather than of `Settings`.
BUNDLE_FILES = [
    REPO_ROOT / "gunicorn.conf.py",
    *sorted(REPO_ROOT.glob("Procfile.*")),
    *sorted((REPO_ROOT / ".ebextensions").rglob("*.config")),
    *sorted(path for path in (REPO_ROOT / ".platform").rglob("*") if path.is_file()),
    *sorted((REPO_ROOT / "scripts").glob("*.sh")),
]

# A path of the apps: not preceded by a lower-case letter, `_`, `.` or `-` (so `routers/health.py`
# and `.ebextensions/worker/...` do not count); `$BASE_URL/...`, `${X}/...` and `...:8000/...` do.
_PATH = re.compile(r"(?<![a-z_./-])(/(?:api|health|worker|metrics)(?![\w.])[A-Za-z0-9_{}/.-]*)")
_METHOD_PATH = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_{}./-]+)")
_CODE_BLOCK = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_SETTING = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_PYTHON_MODULE = re.compile(r"python3? -m ([a-z_][a-z0-9_.]*)([^\n`]*)")
_REPO_PATH = re.compile(
    r"(?<![\w./-])(?:backend|scripts|monitoring|app|\.ebextensions|\.platform)/[A-Za-z0-9_./-]*[A-Za-z0-9_]"
)


def runbook() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The runbook without code blocks and inline code, each paragraph on one line."""
    text = _CODE_BLOCK.sub("", text)
    text = _INLINE_CODE.sub("", text)
    return re.sub(r"\s*\n\s*", " ", text)


def sections(text: str) -> dict[str, str]:
    """`### <title>` sections by title, each up to the next heading."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^### ([^\n]+)\n(.*?)(?=^#{2,3} |\Z)", text, re.M | re.S):
        found[match[1].strip()] = match[2]
    return found


def alarm_resources() -> dict[str, dict[str, Any]]:
    """The CloudWatch alarms of the alarm files, by logical name."""
    alarms: dict[str, dict[str, Any]] = {}
    for path in ALARM_FILES:
        resources = yaml.safe_load(path.read_text(encoding="utf-8")).get("Resources") or {}
        for name, resource in resources.items():
            if resource.get("Type") == "AWS::CloudWatch::Alarm":
                alarms[name] = resource["Properties"]
    return alarms


needs_alarm_files = pytest.mark.skipif(
    not ALARM_FILES,
    reason=".ebextensions/*/20-alarms.config do not exist yet (created by the alarms task)",
)


@needs_alarm_files
def test_every_alarm_has_a_section_and_every_alarm_section_an_alarm() -> None:
    alarms = alarm_resources()
    assert alarms
    titles = {title for title in sections(runbook()) if title.startswith("HiringPro")}
    assert sorted(set(alarms) - titles) == []
    assert sorted(titles - set(alarms)) == []


@needs_alarm_files
def test_alarm_sections_name_the_metric_and_threshold() -> None:
    text = sections(runbook())
    for name, properties in alarm_resources().items():
        section = text[name]
        metrics = [properties["MetricName"]] if "MetricName" in properties else []
        metrics += [
            query["MetricStat"]["Metric"]["MetricName"]
            for query in properties.get("Metrics", [])
            if "MetricStat" in query
        ]
        assert metrics, name
        for metric in metrics:
            assert metric in section, f"{name}: the section does not name {metric}"
        threshold = properties["Threshold"]
        if isinstance(threshold, dict):  # Fn::GetOptionSetting: its default value
            threshold = threshold["Fn::GetOptionSetting"]["DefaultValue"]
        number = f"{float(threshold):g}"
        assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d.])", section), (
            f"{name}: the section does not give the threshold {number}"
        )


@needs_alarm_files
def test_every_alarm_notifies_the_topic_the_runbook_names() -> None:
    assert ALARM_TOPIC in runbook()
    for name, properties in alarm_resources().items():
        assert {"Ref": ALARM_TOPIC} in properties["AlarmActions"], name


def _is_route(apps: list[FastAPI], method: str | None, path: str) -> bool:
    methods = [method] if method else ["GET", "POST", "PUT", "PATCH", "DELETE"]
    for app in apps:
        for candidate in methods:
            scope = {
                "type": "http",
                "method": candidate,
                "path": path,
                "root_path": "",
                "headers": [],
            }
            if any(route.matches(scope)[0] is Match.FULL for route in app.routes):
                return True
    return False


def test_paths_are_routes_of_the_apps() -> None:
    text = runbook()
    apps = [web_app, worker_app]
    paths = {match[1].rstrip("./") for match in _PATH.finditer(text)}
    # The reader finds what the runbook must talk about (it cannot silently find nothing).
    assert {"/health", "/health/ready", "/health/detailed", "/api/admin/breakers"} <= paths
    unknown = sorted(path for path in paths if not _is_route(apps, None, path))
    assert unknown == []
    with_method = {(match[1], match[2]) for match in _METHOD_PATH.finditer(text)}
    assert ("PUT", "/api/admin/breakers/{name}") in with_method
    wrong = sorted(f"{m} {p}" for m, p in with_method if not _is_route(apps, m, p))
    assert wrong == []


def test_path_reader_rejects_a_made_up_route() -> None:
    apps = [web_app, worker_app]
    assert not _is_route(apps, None, "/api/admin/breakerz")
    assert not _is_route(apps, "DELETE", "/api/admin/breakers/{name}")
    assert [
        m[1] for m in _PATH.finditer("see backend/app/routers/health.py and $BASE_URL/health")
    ] == ["/health"]


def test_metrics_named_are_exported() -> None:
    catalog = MetricsCatalog.from_app()
    text = runbook()
    histograms = {name for name, family in catalog.families.items() if family.type == "histogram"}
    named = set(re.findall(r"\bhiringpro_[a-z0-9_]+", text))
    assert named
    assert (
        sorted(name for name in named if name not in catalog.by_sample and name not in histograms)
        == []
    )
    blocks = [body for kind, body in _CODE_BLOCK.findall(text) if kind == "promql"]
    assert blocks
    for block in blocks:
        assert catalog.problems(block) == [], block


def test_settings_named_exist() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    bundle = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in BUNDLE_FILES)
    named = {
        match[0]
        for code in _INLINE_CODE.findall(_CODE_BLOCK.sub("", runbook()))
        if (match := _SETTING.fullmatch(code.split("=")[0]))
    }
    assert {"DB_POOL_TIMEOUT_SECONDS", "RATE_LIMIT_TIERS", "OPS_ALLOWED_NETWORKS"} <= named
    unknown = sorted(name for name in named if name not in settings and name not in bundle)
    assert unknown == []


def test_quoted_panels_are_on_the_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = set()
    for panel in dashboard["panels"]:
        titles.add(panel["title"])
        titles.update(nested["title"] for nested in panel.get("panels", []))
    quoted = set(re.findall(r'"([^"]+)"', prose(runbook())))
    assert {"5xx ratio", "Breaker state"} <= quoted
    assert sorted(quoted - titles) == []


def test_error_codes_exist_and_cover_the_readme() -> None:
    text = runbook()
    table = re.search(r"^\| code \|.*?\n((?:\|.*\n)+)", text, re.M)
    assert table is not None
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", table[1], re.M))
    source = "\n".join(path.read_text(encoding="utf-8") for path in (BACKEND / "app").rglob("*.py"))
    assert sorted(code for code in codes if f'"{code}"' not in source) == []
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    errors = re.search(r"^## Errors\n(.*?)(?=^## )", readme, re.M | re.S)
    assert errors is not None
    readme_codes = set(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", errors[1]))
    assert "service_busy" in readme_codes
    assert sorted(readme_codes - codes) == []


def test_repository_files_named_exist() -> None:
    named = set(_REPO_PATH.findall(runbook()))
    assert "scripts/rolling_restart.sh" in named
    # `app/...` is relative to backend/, everything else to the repository root.
    missing = [
        path for path in named if not ((REPO_ROOT / path).exists() or (BACKEND / path).exists())
    ]
    assert sorted(missing) == []


def test_python_commands_exist_with_their_flags() -> None:
    commands: dict[str, set[str]] = {}
    for module, rest in _PYTHON_MODULE.findall(runbook()):
        commands.setdefault(module, set()).update(re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest))
    assert {"ops.dlq_replay", "ops.smoke_check"} <= set(commands)
    for module, flags in sorted(commands.items()):
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
        if not flags:
            continue
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=BACKEND,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(flag for flag in flags if flag not in result.stdout) == [], module


def test_sections_link_to_existing_anchors() -> None:
    text = runbook()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#{2,3} (.+)$", text, re.M)
    }
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert sorted(links - anchors) == []
