"""A config without `tenant:` takes its tenant from its file name, as the seed names its files."""

from __future__ import annotations

from pathlib import Path

import pytest
from guard.config import load_config, tenant_from_file_name
from guard.errors import ConfigError

# The seed's "Multi-Tenancy" config, verbatim (one copy: tests/fixtures/seed/team-a-config.yaml).
SEED_TEAM_A = (Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "team-a-config.yaml").read_text()


@pytest.mark.parametrize("name, tenant", [
    ("team-a-config.yaml", "team-a"),
    ("team-b-config.yml", "team-b"),
    ("team_c_config.yaml", "team-c"),
    ("config.yaml", "default"),
    ("config.json", "default"),
    ("Payments.yaml", "payments"),
])
def test_the_file_name_gives_the_tenant(name: str, tenant: str) -> None:
    assert tenant_from_file_name(Path("/home/u/.guard") / name) == tenant


def test_the_seed_s_team_a_config_is_tenant_team_a(tmp_path: Path) -> None:
    # GIVEN the seed's team-a config verbatim (no tenant: key) at ~/.guard/team-a-config.yaml
    path = tmp_path / "team-a-config.yaml"
    path.write_text(SEED_TEAM_A)
    # WHEN loaded THEN its tenant is team-a and the registry table is the one it names
    config = load_config(path)
    assert config.tenant == "team-a"
    assert config.aws.dynamodb.table_name == "guard-cluster-registry"


def test_a_tenant_key_wins_over_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "team-a-config.yaml"
    path.write_text("tenant: payments\n" + SEED_TEAM_A)
    assert load_config(path).tenant == "payments"


def test_a_file_name_that_cannot_be_a_tenant_asks_for_the_key(tmp_path: Path) -> None:
    path = tmp_path / "Team A!.yaml"
    path.write_text(SEED_TEAM_A)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "add `tenant: <name>`" in str(caught.value)
