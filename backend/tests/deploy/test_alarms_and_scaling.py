"""The CloudFormation resources of each tier's bundle: alarms that watch the right metrics and
notify the environment's topic, scaling that does not fight itself, and a template cfn-lint
accepts once EB's own resources are stood in for (tests/deploy/eb_bundle.py). Offline."""

import copy
import json
import re
from typing import Any

import pytest
from cfnlint.api import lint  # type: ignore[import-untyped]
from cfnlint.config import ManualArgs  # type: ignore[import-untyped]

from tests.deploy.eb_bundle import (
    CUSTOM_OPTIONS,
    EBEXTENSIONS,
    TIERS,
    cfn_template,
    literal_text,
    load_yaml,
    option_setting_calls,
    tier_config_files,
    tier_options,
    tier_resources,
)

TOPIC = {"Ref": "HiringProAlarmTopic"}
LOAD_BALANCER = "GetAtt:AWSEBV2LoadBalancer.LoadBalancerFullName"
TARGET_GROUP = "GetAtt:AWSEBV2LoadBalancerTargetGroup.TargetGroupFullName"

# Per notification alarm: namespace, metric, dimensions (name -> source), threshold, and how
# long the condition must hold (seconds).
ALARMS: dict[str, dict[str, tuple[str, str, dict[str, str], float | str, int]]] = {
    "web": {
        "HiringProAlbP99Latency": (
            "AWS/ApplicationELB",
            "TargetResponseTime",
            {"LoadBalancer": LOAD_BALANCER},
            2,
            300,
        ),
        "HiringProUnhealthyHosts": (
            "AWS/ApplicationELB",
            "UnHealthyHostCount",
            {"TargetGroup": TARGET_GROUP, "LoadBalancer": LOAD_BALANCER},
            0,
            300,
        ),
        "HiringProRedisEvictions": (
            "AWS/ElastiCache",
            "Evictions",
            {"CacheClusterId": "option:RedisCacheClusterId"},
            0,
            300,
        ),
        "HiringProRedisCpu": (
            "AWS/ElastiCache",
            "EngineCPUUtilization",
            {"CacheClusterId": "option:RedisCacheClusterId"},
            80,
            300,
        ),
        "HiringProRedisConnections": (
            "AWS/ElastiCache",
            "CurrConnections",
            {"CacheClusterId": "option:RedisCacheClusterId"},
            "option:RedisConnectionsThreshold",
            300,
        ),
    },
    "worker": {
        "HiringProQueueAge": (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"QueueName": "option:WorkerQueueName"},
            600,
            300,
        ),
        "HiringProQueueDepth": (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": "option:WorkerQueueName"},
            500,
            600,
        ),
        "HiringProDlqNotEmpty": (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": "option:DeadLetterQueueName"},
            0,
            300,
        ),
    },
}
# Alarms with an AWS/ApplicationELB metric-math rate instead of one metric.
RATE_ALARMS = {"web": {"HiringProAlb5xxRate"}, "worker": set()}


def source(value: Any) -> str:
    """Where a dimension or threshold comes from: a literal, an attribute or an option."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return f"GetAtt:{resource}.{attribute}"
    if isinstance(value, dict) and "Fn::GetOptionSetting" in value:
        return f"option:{value['Fn::GetOptionSetting']['OptionName']}"
    return str(value)


def notification_alarms(tier: str) -> dict[str, dict[str, Any]]:
    """The tier's alarms that notify people (not EB's triggers, not the scaling alarms)."""
    return {
        name: resource["Properties"]
        for name, resource in tier_resources(tier).items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and name.startswith("HiringPro")
        and TOPIC in resource["Properties"].get("AlarmActions", [])
    }


def lint_matches(template: dict[str, Any]) -> list[str]:
    return [
        str(match) for match in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    ]


@pytest.mark.parametrize("tier", TIERS)
def test_cfn_lint_accepts_the_tier_resources(tier: str) -> None:
    assert lint_matches(cfn_template(tier)) == []


def test_cfn_lint_reports_what_cloudformation_would_refuse() -> None:
    """The check above can fail: a typo in an attribute and a dangling topic are reported."""
    template = cfn_template("web")
    latency = template["Resources"]["HiringProAlbP99Latency"]["Properties"]
    latency["Dimensions"][0]["Value"]["Fn::GetAtt"][1] = "FullName"
    broken = copy.deepcopy(template)
    broken["Resources"]["HiringProRedisCpu"]["Properties"]["AlarmActions"] = [{"Ref": "Topic"}]
    assert any("E1010" in match and "FullName" in match for match in lint_matches(template))
    assert any("E1020" in match and "'Topic'" in match for match in lint_matches(broken))


@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_mails_its_alarms_through_its_own_topic(tier: str) -> None:
    resources = tier_resources(tier)
    topic = resources["HiringProAlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    # No fixed TopicName: CloudFormation names it after the environment's stack, one per
    # environment.
    assert "TopicName" not in topic["Properties"]
    [subscription] = topic["Properties"]["Subscription"]
    assert subscription["Protocol"] == "email"
    assert source(subscription["Endpoint"]) == "option:AlarmEmail"
    expected = set(ALARMS[tier]) | RATE_ALARMS[tier]
    assert set(notification_alarms(tier)) == expected
    for name in expected:
        assert resources[name]["Type"] == "AWS::CloudWatch::Alarm"


@pytest.mark.parametrize(
    ("tier", "name"), [(tier, name) for tier in TIERS for name in ALARMS[tier]]
)
def test_alarm_watches_its_metric(tier: str, name: str) -> None:
    namespace, metric, dimensions, threshold, hold_seconds = ALARMS[tier][name]
    alarm = notification_alarms(tier)[name]
    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert {item["Name"]: source(item["Value"]) for item in alarm["Dimensions"]} == dimensions
    assert source(alarm["Threshold"]) == str(threshold)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Period"] * alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == (
        hold_seconds
    )
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == alarm["EvaluationPeriods"]
    if name == "HiringProAlbP99Latency":
        assert alarm["ExtendedStatistic"] == "p99" and "Statistic" not in alarm


def test_error_rate_is_target_5xx_as_a_share_of_requests() -> None:
    alarm = notification_alarms("web")["HiringProAlb5xxRate"]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    stats = {
        query_id: query["MetricStat"]
        for query_id, query in queries.items()
        if "MetricStat" in query
    }
    assert {stat["Metric"]["MetricName"] for stat in stats.values()} == {
        "HTTPCode_Target_5XX_Count",
        "RequestCount",
    }
    for stat in stats.values():
        assert stat["Metric"]["Namespace"] == "AWS/ApplicationELB"
        assert stat["Stat"] == "Sum" and stat["Period"] == 60
        [dimension] = stat["Metric"]["Dimensions"]
        assert (dimension["Name"], source(dimension["Value"])) == ("LoadBalancer", LOAD_BALANCER)
    [result] = [query for query in queries.values() if query.get("ReturnData", True)]
    errors, requests = (
        query_id
        for name in ("HTTPCode_Target_5XX_Count", "RequestCount")
        for query_id, stat in stats.items()
        if stat["Metric"]["MetricName"] == name
    )
    # A percentage of the minute's requests; a minute without 5xx reports no 5xx count.
    assert f"100 * FILL({errors}, 0) / {requests}" in result["Expression"]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert 60 * alarm["DatapointsToAlarm"] == 60 * alarm["EvaluationPeriods"] == 300


@pytest.mark.parametrize("tier", TIERS)
def test_every_alarm_notifies_the_topic_and_states_its_threshold(tier: str) -> None:
    alarms = notification_alarms(tier)
    assert alarms
    for name, alarm in alarms.items():
        for actions in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            assert alarm.get(actions, [TOPIC]) == [TOPIC], (name, actions)
        assert "OKActions" in alarm, name
        # Missing data is decided, never left to the default.
        assert alarm["TreatMissingData"] in {"notBreaching", "ignore", "missing", "breaching"}
        if alarm["TreatMissingData"] == "missing":
            assert alarm["InsufficientDataActions"] == [TOPIC], name
        description = alarm["AlarmDescription"]
        text = literal_text(description)
        threshold = alarm["Threshold"]
        if isinstance(threshold, dict):
            assert threshold in description["Fn::Join"][1], name
        else:
            assert re.search(rf"(?<![\d.]){threshold:g}(?![\d.])", text), (name, text)
        assert {"Ref": "AWSEBEnvironmentName"} in description["Fn::Join"][1], name


@pytest.mark.parametrize("tier", TIERS)
def test_option_settings_read_declared_custom_options(tier: str) -> None:
    declared = tier_options(tier).get(CUSTOM_OPTIONS, {})
    for path in tier_config_files(tier):
        for call in option_setting_calls(load_yaml(path).get("Resources") or {}):
            assert call.get("Namespace", CUSTOM_OPTIONS) == CUSTOM_OPTIONS, (path, call)
            assert call["OptionName"] in declared, (path, call)
            # The fallback is the declared value, so the two cannot drift apart.
            assert str(call["DefaultValue"]) == str(declared[call["OptionName"]]), (path, call)


def test_worker_alarms_name_the_queue_sqsd_reads() -> None:
    settings = tier_options("worker")
    queue_url = settings["aws:elasticbeanstalk:sqsd"]["WorkerQueueURL"]
    custom = settings[CUSTOM_OPTIONS]
    assert queue_url.rsplit("/", 1)[-1] == custom["WorkerQueueName"]
    assert custom["DeadLetterQueueName"] != custom["WorkerQueueName"]


def test_worker_scales_on_queue_depth_only() -> None:
    resources = tier_resources("worker")
    # EB's default NetworkOut triggers stay, without actions (AWS's sample does the same).
    for name in ("AWSEBCloudwatchAlarmHigh", "AWSEBCloudwatchAlarmLow"):
        assert resources[name]["Properties"] == {"AlarmActions": []}
    template = cfn_template("worker")["Resources"]
    scaling = {
        name: resource["Properties"]
        for name, resource in template.items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and any("Scale" in str(action) for action in resource["Properties"]["AlarmActions"])
    }
    assert set(scaling) == {"HiringProQueueDeep", "HiringProQueueShallow"}
    for name in scaling:
        original = resources[name]["Properties"]
        assert (original["Namespace"], original["MetricName"]) == (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
        )
        [dimension] = original["Dimensions"]
        assert source(dimension["Value"]) == "option:WorkerQueueName"
    assert scaling["HiringProQueueDeep"]["AlarmActions"] == [{"Ref": "HiringProQueueScaleOut"}]
    assert scaling["HiringProQueueShallow"]["AlarmActions"] == [{"Ref": "HiringProQueueScaleIn"}]
    # An idle queue reports nothing: that is a shallow queue, never a deep one.
    assert scaling["HiringProQueueShallow"]["TreatMissingData"] == "breaching"
    assert scaling["HiringProQueueDeep"]["TreatMissingData"] == "notBreaching"


def test_web_scaling_trigger_is_consistent() -> None:
    settings = tier_options("web")
    trigger = settings["aws:autoscaling:trigger"]
    # EB's defaults for the three: 5, 5 and 1.
    period = int(trigger.get("Period", 5))
    evaluation_periods = int(trigger.get("EvaluationPeriods", 1))
    assert int(trigger.get("BreachDuration", 5)) == period * evaluation_periods
    assert int(trigger["LowerThreshold"]) < int(trigger["UpperThreshold"])
    if period == 1:
        # 1-minute periods need 1-minute (detailed) instance monitoring.
        monitoring = settings["aws:autoscaling:launchconfiguration"]["MonitoringInterval"]
        assert monitoring == "1 minute"
    # The web tier scales on its own trigger: EB's alarms keep their actions.
    assert "AWSEBCloudwatchAlarmHigh" not in tier_resources("web")


def test_rolling_updates_set_nothing_their_type_ignores() -> None:
    update = load_yaml(EBEXTENSIONS / "02-deployment.config")["option_settings"][
        "aws:autoscaling:updatepolicy:rollingupdate"
    ]
    # PauseTime applies to time-based rolling updates only.
    assert update["RollingUpdateType"] == "Health"
    assert "PauseTime" not in update
