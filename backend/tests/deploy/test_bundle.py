"""The Elastic Beanstalk bundle: YAML that parses, Procfiles whose apps load, routes that exist
where the platform will call them, timeouts that fit together, commands and hooks that work."""

import importlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match

from tests.deploy.eb_bundle import (
    EBEXTENSIONS,
    PLATFORM,
    TIERS,
    config_files,
    get_config_stand_in,
    load_yaml,
    options,
    shared_config_files,
    tier_options,
)
from tests.support.gunicorn_server import GUNICORN, REPO_ROOT

APP_OF_TIER = {"web": "app.main:app", "worker": "app.worker_app:app"}
BUILD_BUNDLE = REPO_ROOT / "scripts" / "build_bundle.sh"
# Top-level keys EB accepts in a configuration file.
CONFIG_KEYS = {
    "option_settings",
    "packages",
    "groups",
    "users",
    "sources",
    "files",
    "commands",
    "services",
    "container_commands",
    "Resources",
    "Outputs",
}


def procfile_command(tier: str) -> list[str]:
    lines = [
        line for line in (REPO_ROOT / f"Procfile.{tier}").read_text().splitlines() if line.strip()
    ]
    assert len(lines) == 1 and lines[0].startswith("web: "), "EB runs the process named web"
    return shlex.split(lines[0].removeprefix("web: "))


def has_route(app: FastAPI, method: str, path: str) -> bool:
    """Whether the app's router fully matches the request (path and method)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def tier_app(tier: str) -> FastAPI:
    module_name, _, attribute = APP_OF_TIER[tier].partition(":")
    module = importlib.import_module(module_name)
    app: FastAPI = getattr(module, attribute)
    return app


def has_worker_app() -> bool:
    return (REPO_ROOT / "backend" / "app" / "worker_app.py").exists()


def available_tiers() -> list[str]:
    return [tier for tier in TIERS if tier == "web" or has_worker_app()]


@pytest.mark.parametrize(
    "path",
    [*config_files(), *[p for p in [REPO_ROOT / "cron.yaml"] if p.exists()]],
    ids=lambda path: str(path.relative_to(REPO_ROOT)),
)
def test_yaml_files_parse(path: Path) -> None:
    document = load_yaml(path)
    assert isinstance(document, dict) and document
    if path.suffix == ".config":
        assert set(document) <= CONFIG_KEYS
        for namespace, values in (document.get("option_settings") or {}).items():
            assert namespace.startswith("aws:"), namespace
            for name, value in values.items():
                # EB wants strings, numbers or booleans, never nested structures.
                assert isinstance(value, str | int | float | bool), (namespace, name)


def test_shared_settings_match_the_plan() -> None:
    shared = options(*shared_config_files())
    env = shared["aws:elasticbeanstalk:application:environment"]
    assert env["ENVIRONMENT"] == "production"
    assert env["USE_EXTERNAL_POOLER"] == "true"
    assert env["RATE_LIMIT_ENABLED"] == "true"
    assert env["TRUSTED_PROXY_COUNT"] == "2"  # ALB, then nginx
    deploy = shared["aws:elasticbeanstalk:command"]
    assert (deploy["DeploymentPolicy"], deploy["BatchSizeType"], deploy["BatchSize"]) == (
        "Rolling",
        "Percentage",
        "30",
    )
    iam = load_yaml(EBEXTENSIONS / "03-iam.config")["Resources"]["HiringProQueuePolicy"]
    [statement] = iam["Properties"]["PolicyDocument"]["Statement"]
    assert set(statement["Action"]) == {
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    }
    assert statement["Resource"]["Fn::Join"][1][-1] == ":hiring-pro-*"


def test_no_build_packages_since_every_dependency_ships_wheels() -> None:
    # `pip download --only-binary=:all:` for CPython 3.11 on manylinux x86_64 and aarch64 found a
    # wheel for every requirement (DEPLOY.md): the instances need no compiler or headers.
    for path in config_files():
        assert "packages" not in load_yaml(path), path


def test_each_environment_owns_its_sqs_policy_on_a_named_role() -> None:
    """Two environments on one instance role must not share an inline policy name (terminating
    one would delete the other's permissions), and Roles takes role names, never the instance
    profile option (a profile name or ARN)."""
    document = load_yaml(EBEXTENSIONS / "03-iam.config")
    policy = document["Resources"]["HiringProQueuePolicy"]["Properties"]
    _, parts = policy["PolicyName"]["Fn::Join"]
    assert {"Ref": "AWSEBEnvironmentName"} in parts and parts[0] == "hiring-pro-sqs-send"
    [role] = policy["Roles"]
    assert role["Fn::GetOptionSetting"]["OptionName"] == "InstanceRoleName"
    assert "Namespace" not in role["Fn::GetOptionSetting"]  # a custom option
    assert "IamInstanceProfile" not in str(document)
    declared = document["option_settings"]["aws:elasticbeanstalk:customoption"]
    assert declared["InstanceRoleName"] == role["Fn::GetOptionSetting"]["DefaultValue"]


def test_ops_allowlist_ships_no_network_broader_than_a_few_hosts() -> None:
    # The operators' routes trust these clients without a token: the bundle ships loopback
    # only, and each environment adds its monitoring hosts (DEPLOY.md).
    for tier in TIERS:
        value = tier_options(tier)["aws:elasticbeanstalk:application:environment"][
            "OPS_ALLOWED_NETWORKS"
        ]
        networks = [ipaddress.ip_network(part.strip()) for part in value.split(",")]
        assert networks
        for network in networks:
            assert network.num_addresses <= 256, network  # at most a /24 (IPv4)
            assert network.is_loopback, network


def test_web_tier_load_balancer_probes_a_real_liveness_route() -> None:
    settings = tier_options("web")
    process = settings["aws:elasticbeanstalk:environment:process:default"]
    assert process["HealthCheckPath"] == "/health"
    assert (process["HealthCheckInterval"], process["HealthCheckTimeout"]) == ("30", "5")
    assert (process["HealthyThresholdCount"], process["UnhealthyThresholdCount"]) == ("2", "5")
    assert has_route(tier_app("web"), "GET", process["HealthCheckPath"])
    assert not has_route(tier_app("web"), "GET", "/no/such/route")
    listener = settings["aws:elbv2:listener:443"]
    assert listener["Protocol"] == "HTTPS" and listener["SSLCertificateArns"].startswith(
        "arn:aws:acm:"
    )
    redirect = load_yaml(EBEXTENSIONS / "web" / "10-web-tier.config")["Resources"][
        "AWSEBV2LoadBalancerListener"
    ]["Properties"]
    assert redirect["Port"] == 80
    [action] = redirect["DefaultActions"]
    assert action["Type"] == "redirect"
    assert action["RedirectConfig"]["Protocol"] == "HTTPS"
    assert action["RedirectConfig"]["StatusCode"] == "HTTP_301"
    assert settings["aws:elasticbeanstalk:application:environment"]["HIRING_PRO_ROLE"] == "web"


@pytest.mark.parametrize("tier", available_tiers())
def test_procfile_command_loads_its_app(tier: str, tmp_path: Path) -> None:
    command = procfile_command(tier)
    assert command[0] == "gunicorn"
    assert command[-1] == APP_OF_TIER[tier]
    assert command[command.index("--config") + 1] == "gunicorn.conf.py"
    # gunicorn itself parses the command and loads the app, from the bundle root as on EB.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    env["DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [str(GUNICORN), "--check-config", *command[1:]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The worker class named by gunicorn.conf.py exists.
    from app.gunicorn_worker import UvicornWorker

    assert UvicornWorker.__module__ == "app.gunicorn_worker"


# What DEPLOY.md says to set on each environment, beside the bundle's own settings.
PER_ENVIRONMENT = {
    "JWT_SECRET": "q3Vx9LkP0s7Zr2mB8eYt4Wn6Hc1Ju5Df0Ga3Ko9Si2Xl7Rv4Pb8Ez1Cw6Ny5Tq0Mh",
    "DATABASE_URL": "postgresql+asyncpg://app@pooler.internal:6543/postgres",
    "DATABASE_DIRECT_URL": "postgresql+asyncpg://app@pooler.internal:5432/postgres",
    "REDIS_URL": "redis://cache.internal:6379/0",
}


def check_tier_config(
    tier: str, tmp_path: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """gunicorn --check-config of a tier's Procfile with exactly the environment EB gives it."""
    env = {
        name: str(value)
        for name, value in tier_options(tier)[
            "aws:elasticbeanstalk:application:environment"
        ].items()
    }
    env.update(
        PATH=os.environ["PATH"],
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        DATA_DIR=str(tmp_path / "data"),
        **variables,
    )
    return subprocess.run(
        [str(GUNICORN), "--check-config", *procfile_command(tier)[1:]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("tier", available_tiers())
def test_bundle_environment_passes_the_production_guards(tier: str, tmp_path: Path) -> None:
    env = tier_options(tier)["aws:elasticbeanstalk:application:environment"]
    # No guard is lifted and the API docs stay off: the bundle sets no ALLOW_* setting.
    assert not [name for name in env if name.startswith("ALLOW_")]
    assert "API_DOCS_ENABLED" not in env

    result = check_tier_config(tier, tmp_path, **PER_ENVIRONMENT)
    assert result.returncode == 0, result.stderr

    bare = check_tier_config(tier, tmp_path)
    assert bare.returncode != 0
    for setting in ("JWT_SECRET", "DATABASE_URL", "REDIS_URL"):
        assert setting in bare.stderr


@pytest.mark.skipif(not has_worker_app(), reason="the worker app is not in the tree yet")
def test_worker_tier_routes_and_timeouts_fit_together() -> None:
    settings = tier_options("worker")
    sqsd = settings["aws:elasticbeanstalk:sqsd"]
    env = settings["aws:elasticbeanstalk:application:environment"]
    worker = tier_app("worker")
    assert has_route(worker, "POST", sqsd["HttpPath"])
    assert has_route(worker, "GET", "/health")
    inactivity = int(sqsd["InactivityTimeout"])
    visibility = int(sqsd["VisibilityTimeout"])
    nginx = (PLATFORM / "nginx" / "tiers" / "worker.conf").read_text()
    read_timeout = int(re.search(r"proxy_read_timeout\s+(\d+)s;", nginx)[1])  # type: ignore[index]
    from app.config import Settings

    # The app's own limit on a job (gunicorn's --timeout is only a heartbeat for uvicorn
    # workers). The bundle sets it; the app's default stands in if the bundle did not.
    budget_setting = env.get("WORKER_JOB_TIMEOUT_SECONDS")
    default_budget = getattr(Settings(), "worker_job_timeout_seconds", None)
    assert budget_setting is not None or default_budget is not None
    budget = float(budget_setting if budget_setting is not None else default_budget)  # type: ignore[arg-type]
    # After the budget the app may still record a final failure (GIVE_UP_SECONDS) before it
    # answers.
    give_up = float(getattr(importlib.import_module("app.worker.delivery"), "GIVE_UP_SECONDS", 0))
    # The app stops a job first and answers; sqsd waits longer for that answer; nginx waits
    # longer still (so a slow job is not cut by a 504 and run twice); the message stays hidden
    # while sqsd waits, so no other instance takes it meanwhile.
    assert budget + give_up < inactivity < read_timeout
    assert inactivity < visibility
    assert env["HIRING_PRO_ROLE"] == "worker"


def test_dead_letter_handoff_is_the_queue_redrive_policy() -> None:
    """With an existing queue sqsd's MaxRetries does nothing: the queue's redrive policy moves a
    message to the dead-letter queue after maxReceiveCount receives. DEPLOY.md creates the queue
    with the count the app treats as final (WORKER_MAX_RECEIVE_COUNT)."""
    from app.config import Settings

    sqsd = tier_options("worker")["aws:elasticbeanstalk:sqsd"]
    assert "MaxRetries" not in sqsd
    assert sqsd["WorkerQueueURL"]  # an existing queue, never one EB creates
    # DEPLOY.md's queue attributes, written by its own shell snippet (as rendered: without the
    # indentation of the list it sits in).
    deploy = (REPO_ROOT / "DEPLOY.md").read_text()
    [block] = re.findall(
        r"^( *cat > queue-attributes\.json <<EOF\n.*?^ *EOF)$", deploy, re.M | re.S
    )
    snippet = textwrap.dedent(block)
    dlq_arn = "arn:aws:sqs:us-east-1:123456789012:hiring-pro-resume-parse-dlq"
    written = subprocess.run(
        ["bash", "-c", snippet.replace("queue-attributes.json", "/dev/stdout")],
        env={**os.environ, "dlq_arn": dlq_arn},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    attributes = json.loads(written)
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == Settings().worker_max_receive_count
    assert int(attributes["VisibilityTimeout"]) == int(sqsd["VisibilityTimeout"])


def test_no_command_is_both_leader_only_and_tested() -> None:
    # EB runs a leader-only command on the leader whatever its test says (leader_only wins).
    for path in config_files():
        document = load_yaml(path)
        for section in ("commands", "container_commands"):
            for name, command in (document.get(section) or {}).items():
                assert not ("leader_only" in command and "test" in command), (path, name)


def test_migrations_run_from_one_leader_through_the_tier_check() -> None:
    commands = load_yaml(EBEXTENSIONS / "04-migrations.config")["container_commands"]
    [command] = commands.values()
    assert command["leader_only"] is True
    assert command["command"] == "bash .platform/scripts/migrate.sh"
    script = PLATFORM / "scripts" / "migrate.sh"
    assert os.access(script, os.X_OK)
    assert "alembic upgrade head" in script.read_text()


@pytest.mark.skipif(
    not (REPO_ROOT / "cron.yaml").exists() or not has_worker_app(),
    reason="cron.yaml or the worker app is not in the tree yet",
)
def test_every_cron_task_has_a_worker_route() -> None:
    cron = load_yaml(REPO_ROOT / "cron.yaml")
    assert cron["version"] == 1
    tasks = cron["cron"]
    assert len({task["name"] for task in tasks}) == len(tasks)
    worker = tier_app("worker")
    for task in tasks:
        assert has_route(worker, "POST", task["url"]), task  # sqsd POSTs cron tasks
        assert len(task["schedule"].split()) == 5, task


def test_web_nginx_timeout_covers_gunicorn() -> None:
    nginx = (PLATFORM / "nginx" / "tiers" / "web.conf").read_text()
    read_timeout = int(re.search(r"proxy_read_timeout\s+(\d+)s;", nginx)[1])  # type: ignore[index]
    env = options(*shared_config_files())["aws:elasticbeanstalk:application:environment"]
    assert read_timeout > int(env["GUNICORN_TIMEOUT"])
    assert int(env["GUNICORN_GRACEFUL_TIMEOUT"]) < int(env["GUNICORN_TIMEOUT"])


def hook_files() -> list[Path]:
    """The platform hooks and the scripts the configuration files run."""
    hooks = [path for path in PLATFORM.rglob("*") if path.parent.parent.name.endswith("hooks")]
    return sorted([*hooks, *(PLATFORM / "scripts").glob("*.sh")])


@pytest.mark.parametrize("hook", hook_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_hooks_are_executable_bash_without_broad_kills(hook: Path) -> None:
    text = hook.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert os.access(hook, os.X_OK)
    assert subprocess.run(["bash", "-n", str(hook)], capture_output=True).returncode == 0
    assert not re.search(r"\b(pkill|killall)\b", text)


def test_no_broad_kills_anywhere_in_the_bundle_config() -> None:
    bundle_files = [REPO_ROOT / "Procfile.web", REPO_ROOT / "Procfile.worker", BUILD_BUNDLE]
    for path in [*config_files(), *bundle_files]:
        assert not re.search(r"\b(pkill|killall)\b", path.read_text()), path


def run_prebuild(
    tmp_path: Path, role: str | None, bundle_tier: str | None = "same"
) -> subprocess.CompletedProcess[str]:
    """Run the prebuild hook in a copy of the bundle's relevant files, built for `bundle_tier`
    ("same": the role's tier; None: no tier, the repository tree itself)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(PLATFORM, bundle / ".platform")
    for tier in TIERS:
        shutil.copy(REPO_ROOT / f"Procfile.{tier}", bundle / f"Procfile.{tier}")
    built_for = role if bundle_tier == "same" else bundle_tier
    if built_for is not None:
        (bundle / ".platform" / "bundle_tier").write_text(f"{built_for}\n")
    get_config = get_config_stand_in(tmp_path, role)
    return subprocess.run(
        ["bash", ".platform/hooks/prebuild/01_select_tier.sh"],
        cwd=bundle,
        env={**os.environ, "EB_GET_CONFIG": str(get_config)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("role", TIERS)
def test_prebuild_hook_selects_the_tier(tmp_path: Path, role: str) -> None:
    result = run_prebuild(tmp_path, role)
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "bundle"
    assert (bundle / "Procfile").read_text() == (REPO_ROOT / f"Procfile.{role}").read_text()
    installed = bundle / ".platform/nginx/conf.d/elasticbeanstalk/00_application.conf"
    assert installed.read_text() == (PLATFORM / "nginx" / "tiers" / f"{role}.conf").read_text()


@pytest.mark.parametrize("role", [None, "both"])
def test_prebuild_hook_refuses_an_unknown_tier(tmp_path: Path, role: str | None) -> None:
    result = run_prebuild(tmp_path, role)
    assert result.returncode == 1
    assert "HIRING_PRO_ROLE" in result.stderr
    assert not (tmp_path / "bundle" / "Procfile").exists()


@pytest.mark.parametrize(
    ("role", "bundle_tier"),
    [("web", None), ("worker", None), ("web", "worker"), ("worker", "web")],
    ids=["web-gets-the-tree", "worker-gets-the-tree", "web-gets-worker", "worker-gets-web"],
)
def test_prebuild_hook_refuses_a_bundle_of_another_tier(
    tmp_path: Path, role: str, bundle_tier: str | None
) -> None:
    result = run_prebuild(tmp_path, role, bundle_tier)
    assert result.returncode == 1
    assert f"scripts/build_bundle.sh {role}" in result.stderr
    assert not (tmp_path / "bundle" / "Procfile").exists()


def test_tier_files_come_in_pairs() -> None:
    for tier in TIERS:
        assert (REPO_ROOT / f"Procfile.{tier}").is_file()
        assert (PLATFORM / "nginx" / "tiers" / f"{tier}.conf").is_file()
        assert list((EBEXTENSIONS / tier).glob("*.config"))
    # The generated files must not be committed: they would serve one tier's proxy to both,
    # or let the repository tree pass as a tier's bundle.
    assert not (PLATFORM / "nginx/conf.d/elasticbeanstalk/00_application.conf").exists()
    assert not (PLATFORM / "bundle_tier").exists()


@pytest.mark.skipif(not has_worker_app(), reason="the worker app is not in the tree yet")
async def test_worker_app_has_request_ids_and_metrics() -> None:
    worker = tier_app("worker")
    assert has_route(worker, "GET", "/metrics")
    transport = httpx.ASGITransport(app=worker)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get("/health", headers={"X-Request-ID": "sqsd-msg-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "sqsd-msg-1"
