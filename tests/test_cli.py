"""The ``miniobserv`` command: token minting, rendering and clear failures."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from click.testing import CliRunner

from miniobserv.cli import cli, render_sparkline, render_table

SECRET = "s3cret-for-cli-tests-0123456789-abcdef"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_token_is_hs256_with_expiry_and_issuer(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["token", "--ttl", "2h", "--scope", "read"],
                           env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="miniobserv")
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == int(timedelta(hours=2).total_seconds())


def test_token_without_scope_has_no_scope_claim(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["token"], env={"AGENT_TOKEN": SECRET})
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"],
                        issuer="miniobserv")
    assert "scope" not in claims
    assert claims["exp"] - claims["iat"] == 24 * 3600


@pytest.mark.parametrize(("env", "args", "needle"), [
    ({}, ["token"], "AGENT_TOKEN is required"),
    ({"AGENT_TOKEN": "short"}, ["token"], "AGENT_TOKEN must be at least 16 characters"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "soon"],
     "Invalid value for '--ttl': 'soon' is not a duration"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "0s"],
     "Invalid value for '--ttl': '0s' is below the minimum of 1s"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "0.5s"],
     "Invalid value for '--ttl': '0.5s' is below the minimum of 1s"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "999ms"],
     "Invalid value for '--ttl': '999ms' is below the minimum of 1s"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "99999999999999999999d"],
     "Invalid value for '--ttl': '99999999999999999999d' is too long"),
    ({"AGENT_TOKEN": SECRET}, ["token", "--ttl", "1" + "0" * 400 + "s"],
     "Invalid value for '--ttl': '" + "1" + "0" * 39 + "…' is too long"),
])
def test_token_refuses_bad_input_in_one_line(runner: CliRunner, env: dict[str, str],
                                             args: list[str], needle: str) -> None:
    result = runner.invoke(cli, args, env={"AGENT_TOKEN": "", **env})
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_token_rejects_unknown_scope(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["token", "--scope", "admin"], env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 2
    assert "admin" in result.output


POINTS = [{"time": "2026-06-05T10:00:00Z", "value": 1.0},
          {"time": "2026-06-05T10:01:00Z", "value": 5.5},
          {"time": "2026-06-05T10:02:00Z", "value": 10.0}]


def test_render_table_lists_every_point() -> None:
    lines = render_table(POINTS).splitlines()
    assert lines[0].split() == ["time", "value"]
    assert [line.split() for line in lines[1:]] == [
        ["2026-06-05T10:00:00Z", "1"], ["2026-06-05T10:01:00Z", "5.5"],
        ["2026-06-05T10:02:00Z", "10"]]


def test_sparkline_scales_between_min_and_max() -> None:
    spark, summary = render_sparkline(POINTS).splitlines()
    assert spark == "▁▅█"
    assert summary.startswith("min 1  max 10  last 10")


def test_sparkline_of_a_flat_series_is_flat() -> None:
    spark = render_sparkline([{"time": "t", "value": 3}] * 4).splitlines()[0]
    assert spark == "▁▁▁▁"


def test_query_reports_an_unreachable_server(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["query", "--host", "h", "--name", "cpu.usage_pct",
                                 "--server", "http://127.0.0.1:9"],
                           env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 1
    assert "cannot reach the server at http://127.0.0.1:9" in result.output


def test_token_ttl_at_its_one_second_minimum(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["token", "--ttl", "1s"], env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"],
                        issuer="miniobserv", options={"verify_exp": False})
    assert claims["exp"] - claims["iat"] == 1


QUERY = ["query", "--host", "web-01", "--name", "cpu.usage_pct", "--server", "http://127.0.0.1:9"]


@pytest.mark.parametrize(("since", "needle"), [
    ("100000000d", "Invalid value for '--since': reaches before the year 1"),
    ("99999999999999999999d", "Invalid value for '--since': '99999999999999999999d' is too long"),
    ("0s", "Invalid value for '--since': '0s' is below the minimum of 1ms"),
    ("soon", "Invalid value for '--since': 'soon' is not a duration"),
])
def test_query_refuses_bad_since_as_usage_error(runner: CliRunner, since: str,
                                                needle: str) -> None:
    result = runner.invoke(cli, [*QUERY, "--since", since], env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 2
    assert needle in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_query_with_a_long_valid_since_reaches_the_server_stage(runner: CliRunner) -> None:
    result = runner.invoke(cli, [*QUERY, "--since", "3650d"], env={"AGENT_TOKEN": SECRET})
    assert result.exit_code == 1
    assert "cannot reach the server at http://127.0.0.1:9" in result.output
