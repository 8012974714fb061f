"""Rehearsal scenario files: the shipped ones load; a mistake names its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
EXAMPLE = ROOT / "config" / "example.yaml"


def default_data() -> dict[str, Any]:
    data = yaml.safe_load((SCENARIOS / "default.yaml").read_text())
    data["config"] = str(EXAMPLE)  # absolute: the copy lives in tmp_path
    return data


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return str(caught.value)


def test_default_scenario_loads():
    # GIVEN the default rehearsal
    scenario = load_scenario(SCENARIOS / "default.yaml")
    # THEN it upgrades dev-1's two clusters to 1.20.0 against the example config, expecting success
    assert scenario.name == "default"
    assert scenario.batch == "dev-1"
    assert scenario.target_version == "1.20.0"
    assert [c.cluster for c in scenario.fleet] == ["eks-dev-1", "eks-dev-2"]
    assert scenario.config_path() == EXAMPLE.resolve()
    assert scenario.human.action == "merge"
    assert scenario.expect is not None and scenario.expect.outcome == "succeeded"
    # AND a metric without `after` stays the same after the upgrade
    request_count = scenario.fleet[0].metrics["request_count"]
    assert request_count.value_after() == request_count.before == 5000


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path):
    assert load_scenario(path).fleet


def test_misspelt_top_level_key_is_named(tmp_path):
    data = default_data()
    data["targt_version"] = data.pop("target_version")
    message = error_of(write(tmp_path, data))
    assert "invalid scenario" in message
    assert "targt_version: unknown key" in message
    assert "target_version: Field required" in message


def test_misspelt_nested_key_names_its_key_path(tmp_path):
    # GIVEN `jitter` misspelt in the second cluster's latency metric
    data = default_data()
    data["fleet"][1]["metrics"]["latency_p95"]["jiter"] = 0.1
    # THEN the full path to it is named
    assert "fleet[1].metrics.latency_p95.jiter: unknown key" in error_of(write(tmp_path, data))


def test_bad_human_action_is_named(tmp_path):
    data = default_data()
    data["human"]["action"] = "approve"
    assert "human.action:" in error_of(write(tmp_path, data))


def test_bad_cluster_version_is_named(tmp_path):
    data = default_data()
    data["fleet"][0]["istio_version"] = "1.19"
    message = error_of(write(tmp_path, data))
    assert "fleet[0]" in message
    assert "'1.19'" in message


def test_missing_config_file(tmp_path):
    # GIVEN a scenario whose config points nowhere
    data = default_data()
    data["config"] = "../config/nope.yaml"
    path = write(tmp_path, data)
    # THEN the error names the config key and the file
    message = error_of(path)
    assert "config: file" in message
    assert "nope.yaml" in message
    assert "not found" in message


def test_missing_scenario_file(tmp_path):
    assert "cannot read scenario" in error_of(tmp_path / "nope.yaml")


def test_scenario_not_yaml(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text("name: [unclosed\n")
    assert "not valid YAML" in error_of(path)


def test_scenario_not_a_mapping(tmp_path):
    assert "top level must be a mapping" in error_of(write(tmp_path, ["default"]))
