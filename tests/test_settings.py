"""Settings: flags beat environment beats defaults; bad values are refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from validator.cli import main as cli_main
from validator.cli import settings_table
from validator.settings import Settings, load_settings


def test_defaults_are_valid() -> None:
    settings = load_settings([])
    # Every leaderboard column, in the leaderboard's order, sd-qa on its usa split.
    assert settings.netuid == 1 and settings.subsets == [
        "alpacaeval_full", "commoneval", "wildvoice", "sd-qa",
        "mmsu", "openbookqa", "bbh", "ifeval", "advbench",
    ]  # fmt: skip
    assert not settings.sd_qa_all_regions
    assert settings.database_path == Path("var/validator.db")


def test_env_then_flag_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_VALIDATOR_NETUID", "7")
    monkeypatch.setenv("VOICE_VALIDATOR_GPU_DEVICE_IDS", '["0", "1"]')
    assert load_settings([]).netuid == 7
    settings = load_settings(["--netuid", "9", "--build-args", '{"BASE_IMAGE": "x"}'])
    assert settings.netuid == 9 and settings.gpu_device_ids == ["0", "1"]
    assert settings.build_args == {"BASE_IMAGE": "x"}


def test_invalid_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_VALIDATOR_MINER_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="miner_concurrency"):
        load_settings([])


def test_validator_id_cannot_inject_into_names() -> None:
    with pytest.raises(ValidationError, match="validator_id"):
        load_settings(["--validator-id", "../Evil name"])


def test_empty_endpoint_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_VALIDATOR_HUB_ENDPOINT", "")
    assert load_settings([]).hub_endpoint is None


def test_settings_table_lists_every_field() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in table
        assert f"VOICE_VALIDATOR_{name.upper()}" in table


def test_readme_documents_every_setting_as_the_code_does() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert settings_table(markdown=True) in readme, "regenerate with: voice-validator settings --markdown"


def test_legacy_bittensor_flags_map_to_settings() -> None:
    settings = load_settings([
        "--subtensor.network", "test",
        "--subtensor.chain_endpoint=ws://127.0.0.1:9944",
        "--wallet.name", "cold", "--wallet.hotkey", "hot", "--wallet.path", "/w",
        "--netuid", "42", "--chain", "bittensor",
    ])  # fmt: skip
    assert (settings.subtensor_network, settings.subtensor_chain_endpoint) == ("test", "ws://127.0.0.1:9944")
    assert (settings.wallet_name, settings.wallet_hotkey, settings.wallet_path) == ("cold", "hot", "/w")
    assert settings.netuid == 42 and settings.chain == "bittensor"


def test_unknown_subsets_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="unknown VoiceBench subsets"):
        load_settings(["--subsets", '["openbookqa", "nope"]'])
    assert load_settings(["--subsets", '["commoneval"]']).subsets == ["commoneval"]


def test_build_context_cap_follows_the_repo_cap_and_never_undercuts_it() -> None:
    from validator.app import sandbox_config

    settings = load_settings(["--max-repo-bytes", str(2**30)])
    assert settings.context_max_bytes == 2**30 + 256 * 2**20
    assert sandbox_config(settings).context_max_bytes == settings.context_max_bytes
    assert load_settings(["--build-context-bytes", str(30 * 2**30)]).context_max_bytes == 30 * 2**30
    # A repo fetch accepted must never fail its build for size: that would be charged to the miner.
    with pytest.raises(ValidationError, match="build_context_bytes must be at least max_repo_bytes"):
        load_settings(["--max-repo-bytes", str(2**30), "--build-context-bytes", str(2**29)])


def test_builds_default_to_the_proxy_network_and_map_into_the_sandbox_config() -> None:
    from validator.app import sandbox_config

    settings = load_settings([])
    assert settings.build_network == "proxy" and settings.build_allowed_hosts == []
    assert (settings.build_proxy_port, settings.build_subnet_pool) == (3199, "10.214.0.0/16")
    args = [
        "--build-allowed-hosts", '["pkgs.example.org", "*.example.net", "internal:localhost:8080"]',
        "--build-proxy-port", "3300",
        "--build-subnet-pool", "10.99.0.0/16",
        "--hub-endpoint", "https://hub.example.org",
    ]  # fmt: skip
    config = sandbox_config(load_settings(args))
    assert config.build_network == "proxy"
    assert config.build_allowed_hosts == ("pkgs.example.org", "*.example.net", "internal:localhost:8080")
    assert (config.build_proxy_port, config.build_subnet_pool) == (3300, "10.99.0.0/16")
    assert config.hub_endpoint == "https://hub.example.org"
    # Without an endpoint setting the hub client's own default is what the derived allow-list includes.
    assert sandbox_config(settings).hub_endpoint


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        (["--build-network", "host"], "build_network", "'proxy', 'none' or 'default'"),
        (["--build-allowed-hosts", '["pkgs example.org"]'], "build_allowed_hosts", "not a DNS name"),
        (["--build-allowed-hosts", '["internal:localhost"]'], "build_allowed_hosts", "must name its port"),
        (["--build-allowed-hosts", '["[2001:db8::1]:443"]'], "build_allowed_hosts", "IPv6"),
        (["--build-proxy-port", "70000"], "build_proxy_port", "less than 65536"),
        (["--build-subnet-pool", "203.0.113.0/24"], "build_subnet_pool", "private IPv4"),
        (["--build-subnet-pool", "10.214.0.0/28"], "build_subnet_pool", "/24 or larger"),
        (["--build-subnet-pool", "10.214.0.1/16"], "build_subnet_pool", "not an IPv4 network"),
    ],
)
def test_bad_build_network_settings_are_refused_with_the_field_named(
    args: list[str], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=field) as refused:
        load_settings(args)
    assert reason in str(refused.value)


def test_the_live_subnets_competition_is_the_default() -> None:
    assert load_settings([]).competitions == ["v4"]


def test_run_refuses_to_start_without_an_explicit_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings([]).chain is None
    assert cli_main(["run", "--data-dir", str(tmp_path / "var")]) == 2
    err = capsys.readouterr().err
    assert "`run` needs an explicit chain" in err and "--chain bittensor" in err and "--chain local" in err
    assert not (tmp_path / "var").exists(), "nothing was started or written"


def test_run_on_a_missing_local_chain_file_stops_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo" / "chain.json"
    code = cli_main(
        ["run", "--chain", "local", "--local-chain-file", str(missing), "--data-dir", str(tmp_path / "var")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"local chain file {missing} does not exist" in err and "chain init" in err
    assert not missing.exists()
