"""The Elastic Beanstalk bundle's configuration as the deployment tests read it: option settings
and CloudFormation resources per tier, and each tier's resources as a template cfn-lint checks.

A tier's environment gets the shared `.ebextensions/*.config` plus its own
`.ebextensions/<tier>/*.config` (scripts/build_bundle.sh lifts those to the top level). EB adds
the resources it creates itself (Auto Scaling group, load balancer, ...) and merges a
configuration file's properties over those of its own resources of the same name; `Resources`
may read options with the EB-only function `Fn::GetOptionSetting`.
"""

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.support.gunicorn_server import REPO_ROOT

EBEXTENSIONS = REPO_ROOT / ".ebextensions"
PLATFORM = REPO_ROOT / ".platform"
TIERS = ("web", "worker")
CUSTOM_OPTIONS = "aws:elasticbeanstalk:customoption"

Options = dict[str, dict[str, Any]]
Resources = dict[str, dict[str, Any]]


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def config_files() -> list[Path]:
    """Every configuration file of the repository, shared and per tier."""
    return sorted(EBEXTENSIONS.rglob("*.config"))


def shared_config_files() -> list[Path]:
    return sorted(EBEXTENSIONS.glob("*.config"))


def tier_config_files(tier: str) -> list[Path]:
    """The files a tier's bundle has at the top of .ebextensions: the shared ones, then its own."""
    return [*shared_config_files(), *sorted((EBEXTENSIONS / tier).glob("*.config"))]


def options(*paths: Path) -> Options:
    """option_settings of the files, merged by namespace (later files win)."""
    merged: Options = {}
    for path in paths:
        for namespace, values in (load_yaml(path).get("option_settings") or {}).items():
            merged.setdefault(namespace, {}).update(values)
    return merged


def tier_options(tier: str) -> Options:
    """What a tier's environment gets: the shared files plus its own."""
    return options(*tier_config_files(tier))


def tier_resources(tier: str) -> Resources:
    """The `Resources` of a tier's files; a logical name appears in one file only."""
    resources: Resources = {}
    for path in tier_config_files(tier):
        for name, resource in (load_yaml(path).get("Resources") or {}).items():
            assert name not in resources, f"{name} is defined twice for the {tier} tier"
            resources[name] = resource
    return resources


def get_config_stand_in(directory: Path, role: str | None) -> Path:
    """A stand-in for EB's get-config (EB_GET_CONFIG) that knows only HIRING_PRO_ROLE."""
    get_config = directory / "get-config"
    value = "" if role is None else role
    get_config.write_text(f'#!/bin/bash\n[ -n "{value}" ] && echo "{value}"\n')
    get_config.chmod(0o755)
    return get_config


def option_setting_calls(node: Any) -> list[dict[str, Any]]:
    """The arguments of every `Fn::GetOptionSetting` in a YAML tree."""
    calls: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::GetOptionSetting":
                calls.append(value)
            else:
                calls.extend(option_setting_calls(value))
    elif isinstance(node, list):
        for item in node:
            calls.extend(option_setting_calls(item))
    return calls


def literal_text(node: Any) -> str:
    """The literal strings of a value (a string, or the parts of an `Fn::Join`), joined."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and "Fn::Join" in node:
        separator, parts = node["Fn::Join"]
        return str(separator).join(literal_text(part) for part in parts)
    return ""


# Stand-ins for the resources EB creates itself, as far as our files refer to them or override
# them: plausible definitions, so that cfn-lint checks references, attributes and merged types.
_COMMON_STAND_INS: Resources = {
    "AWSEBEnvironmentName": {
        "Type": "AWS::ElasticBeanstalk::Environment",
        "Properties": {"ApplicationName": "hiring-pro"},
    },
    "AWSEBEC2LaunchTemplate": {
        "Type": "AWS::EC2::LaunchTemplate",
        "Properties": {
            "LaunchTemplateData": {"ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.small"}
        },
    },
    "AWSEBAutoScalingGroup": {
        "Type": "AWS::AutoScaling::AutoScalingGroup",
        "Properties": {
            "MinSize": "1",
            "MaxSize": "4",
            "AvailabilityZones": {"Fn::GetAZs": ""},
            "LaunchTemplate": {
                "LaunchTemplateId": {"Ref": "AWSEBEC2LaunchTemplate"},
                "Version": {"Fn::GetAtt": ["AWSEBEC2LaunchTemplate", "LatestVersionNumber"]},
            },
        },
    },
    "AWSEBAutoScalingScaleUpPolicy": {
        "Type": "AWS::AutoScaling::ScalingPolicy",
        "Properties": {
            "AutoScalingGroupName": {"Ref": "AWSEBAutoScalingGroup"},
            "AdjustmentType": "ChangeInCapacity",
            "ScalingAdjustment": 1,
        },
    },
    "AWSEBAutoScalingScaleDownPolicy": {
        "Type": "AWS::AutoScaling::ScalingPolicy",
        "Properties": {
            "AutoScalingGroupName": {"Ref": "AWSEBAutoScalingGroup"},
            "AdjustmentType": "ChangeInCapacity",
            "ScalingAdjustment": -1,
        },
    },
}


def _default_trigger(name: str, operator: str, threshold: int, policy: str) -> dict[str, Any]:
    """EB's default scaling trigger: average NetworkOut over 5 minutes."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "Namespace": "AWS/EC2",
            "MetricName": "NetworkOut",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": {"Ref": name}}],
            "Statistic": "Average",
            "Period": 300,
            "EvaluationPeriods": 1,
            "ComparisonOperator": operator,
            "Threshold": threshold,
            "AlarmActions": [{"Ref": policy}],
        },
    }


_COMMON_STAND_INS |= {
    "AWSEBCloudwatchAlarmHigh": _default_trigger(
        "AWSEBAutoScalingGroup", "GreaterThanThreshold", 6_000_000, "AWSEBAutoScalingScaleUpPolicy"
    ),
    "AWSEBCloudwatchAlarmLow": _default_trigger(
        "AWSEBAutoScalingGroup", "LessThanThreshold", 2_000_000, "AWSEBAutoScalingScaleDownPolicy"
    ),
}

_WEB_STAND_INS: Resources = {
    "AWSEBV2LoadBalancer": {
        "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "Properties": {
            "Type": "application",
            "Subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
        },
    },
    "AWSEBV2LoadBalancerTargetGroup": {
        "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
        "Properties": {
            "Port": 80,
            "Protocol": "HTTP",
            "VpcId": "vpc-0123456789abcdef0",
            "HealthCheckPath": "/health",
        },
    },
    "AWSEBV2LoadBalancerListener": {
        "Type": "AWS::ElasticLoadBalancingV2::Listener",
        "Properties": {
            "LoadBalancerArn": {"Ref": "AWSEBV2LoadBalancer"},
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": [
                {"Type": "forward", "TargetGroupArn": {"Ref": "AWSEBV2LoadBalancerTargetGroup"}}
            ],
        },
    },
}

EB_STAND_INS: dict[str, Resources] = {
    "web": _COMMON_STAND_INS | _WEB_STAND_INS,
    "worker": dict(_COMMON_STAND_INS),
}


def _parameter_name(call: dict[str, Any]) -> str:
    namespace = call.get("Namespace", CUSTOM_OPTIONS)
    prefix = "" if namespace == CUSTOM_OPTIONS else namespace.replace(":", " ").title()
    return "".join(ch for ch in f"{prefix}{call['OptionName']}" if ch.isalnum())


def _with_parameters(node: Any, parameters: dict[str, dict[str, Any]]) -> Any:
    """The tree with every `Fn::GetOptionSetting` replaced by a `Ref` to a parameter whose
    default is the call's DefaultValue (collected in `parameters`)."""
    if isinstance(node, dict):
        if set(node) == {"Fn::GetOptionSetting"}:
            call = node["Fn::GetOptionSetting"]
            name = _parameter_name(call)
            parameters[name] = {"Type": "String", "Default": str(call.get("DefaultValue", ""))}
            return {"Ref": name}
        return {key: _with_parameters(value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_parameters(item, parameters) for item in node]
    return node


def cfn_template(tier: str) -> dict[str, Any]:
    """A tier's resources merged over EB's stand-ins, option settings turned into parameters."""
    resources = copy.deepcopy(EB_STAND_INS[tier])
    for name, resource in tier_resources(tier).items():
        if name in resources:
            assert resource["Type"] == resources[name]["Type"], name
            resources[name]["Properties"].update(copy.deepcopy(resource.get("Properties", {})))
        else:
            resources[name] = copy.deepcopy(resource)
    parameters: dict[str, dict[str, Any]] = {}
    resources = _with_parameters(resources, parameters)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": parameters,
        "Resources": resources,
    }
