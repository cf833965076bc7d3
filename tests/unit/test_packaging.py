"""The deployment templates and what the packages read: the CloudFormation/SAM templates pass
cfn-lint and name what the packages hold; the managed application's properties map onto
conf/job.yaml as documented, and a wrong one is a clear error. (The zips themselves run in
tests/integration/test_packages.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cfnlint.api import lint_file

from settings.application import KAFKA_VARIABLES, read_application_properties
from settings.config import ConfigError, load_config, with_setting

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [
    ROOT / "deploy" / "lambda" / "template.yaml",
    ROOT / "deploy" / "flink-app" / "template.yaml",
]


def package_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("package", ROOT / "deploy" / "package.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CfnLoader(yaml.SafeLoader):
    pass


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def template(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=CfnLoader)
    return loaded


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.parent.name)
def test_the_templates_pass_cfn_lint(path: Path) -> None:
    assert [str(m) for m in lint_file(path)] == []


def test_the_flink_app_template_names_the_packages_run_options() -> None:
    app = template(TEMPLATES[1])["Resources"]["Application"]["Properties"]
    groups = {
        g["PropertyGroupId"]: g["PropertyMap"]
        for g in app["ApplicationConfiguration"]["EnvironmentProperties"]["PropertyGroups"]
    }
    assert groups["kinesis.analytics.flink.run.options"] == package_module().RUN_OPTIONS
    assert app["RuntimeEnvironment"] == "FLINK-2_2"
    assert set(groups["marketlag.kafka"]) <= KAFKA_VARIABLES


def test_the_lambda_template_runs_the_packaged_handlers_on_python_3_11() -> None:
    sam = template(TEMPLATES[0])
    assert sam["Globals"]["Function"]["Runtime"] == "python3.11"
    assert sam["Globals"]["Function"]["CodeUri"].endswith("build/dist/marketlag-ingest-lambda.zip")
    handlers = {
        r["Properties"]["Handler"]
        for r in sam["Resources"].values()
        if "Handler" in r.get("Properties", {})
    }
    assert handlers == {"ingest.handlers.rss_handler", "ingest.handlers.polymarket_handler"}
    assert set(package_module().LAMBDA_PACKAGES) >= {"ingest", "kafkaio", "settings", "udfs"}


def properties(tmp_path: Path, groups: Any) -> dict[str, str]:
    path = tmp_path / "application_properties.json"
    path.write_text(json.dumps(groups))
    return {"MARKETLAG_APPLICATION_PROPERTIES": str(path)}


def test_without_the_properties_file_the_job_is_not_managed(tmp_path: Path) -> None:
    env = {"MARKETLAG_APPLICATION_PROPERTIES": str(tmp_path / "absent.json")}
    assert read_application_properties(env) is None


def test_the_application_properties_lay_over_conf_job_yaml(tmp_path: Path) -> None:
    env = properties(
        tmp_path,
        [
            {
                "PropertyGroupId": "kinesis.analytics.flink.run.options",
                "PropertyMap": {"python": "main.py"},
            },
            {
                "PropertyGroupId": "marketlag.job",
                "PropertyMap": {
                    "topics.rss.input": "feeds.rss",
                    "retry.max_attempts": "7",
                    "kafka.source.fetch.max.bytes": "1048576",
                    "retry.retryable": "[TimeoutError, OSError]",
                },
            },
            {
                "PropertyGroupId": "marketlag.kafka",
                "PropertyMap": {"KAFKA_BOOTSTRAP_SERVERS": "b-1:9096", "KAFKA_SASL_PASSWORD": "pw"},
            },
        ],
    )
    app = read_application_properties(env)
    assert app is not None
    config = load_config(None, app.environ, app.settings)
    assert config.feeds["rss"].input == "feeds.rss"
    assert config.retry.max_attempts == 7
    assert config.retry.retryable == ("TimeoutError", "OSError")
    assert config.source_properties["fetch.max.bytes"] == "1048576"
    assert config.kafka.bootstrap_servers == "b-1:9096"
    assert config.kafka.sasl_password is not None and config.kafka.sasl_password.value == "pw"
    assert "pw" not in repr(config)


@pytest.mark.parametrize(
    ("groups", "says"),
    [
        ({"not": "a list"}, "expected a list of property groups"),
        ([{"PropertyGroupId": "marketlag.job"}], "without PropertyGroupId and PropertyMap"),
        (
            [{"PropertyGroupId": "marketlag.kafka", "PropertyMap": {"KAFKA_PASSWORD": "x"}}],
            "unknown: KAFKA_PASSWORD",
        ),
    ],
)
def test_a_wrong_properties_file_is_a_clear_error(tmp_path: Path, groups: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        read_application_properties(properties(tmp_path, groups))


def test_a_setting_outside_conf_job_yaml_is_refused(tmp_path: Path) -> None:
    env = properties(
        tmp_path, [{"PropertyGroupId": "marketlag.job", "PropertyMap": {"topic.rss.input": "x"}}]
    )
    app = read_application_properties(env)
    assert app is not None
    with pytest.raises(ConfigError, match="no section 'topic'"):
        load_config(None, {}, app.settings)


def test_a_dotted_setting_lands_under_the_deepest_section_it_names() -> None:
    tree = {"kafka": {"source": {"a": 1}, "prefix": "p"}, "job": {"name": "n"}}
    assert with_setting(tree, "kafka.source.fetch.max.bytes", 5)["kafka"]["source"] == {
        "a": 1,
        "fetch.max.bytes": 5,
    }
    assert with_setting(tree, "kafka.prefix", "q")["kafka"]["prefix"] == "q"
    assert tree["kafka"]["prefix"] == "p", "the tree given is left as it was"
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        with_setting(tree, "job.name.x", 1)
