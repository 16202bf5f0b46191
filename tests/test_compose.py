"""The deployment files: every compose file is valid Compose, runs commands `oros` has, and the image holds them.

The Compose Specification's JSON schema is pinned in tests/compose_spec/compose-spec.json, taken as is
from the PyPI package docker-compose 1.29.2 (file compose/config/compose_spec.json; its SOURCE.txt
has the checksums). No Docker runs here, so what Docker would refuse at `docker compose up` is
refused here: an unknown key, a wrong type, a service command the `oros` parser rejects, a package
the Dockerfile forgets to copy (the image's `oros` could not import it).
"""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import jsonschema
import pytest
import yaml

from oros_cli.main import build_parser

ROOT = Path(__file__).parents[1]
COMPOSE_FILES = sorted(ROOT.glob("docker-compose*.yml"))
SCHEMA = json.loads((Path(__file__).parent / "compose_spec" / "compose-spec.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
READER_CONFIG = ROOT / "deploy" / "clickhouse" / "users.d" / "oros-reader.xml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def schema_errors(document: dict) -> list[str]:
    # The draft its $schema names (spelled with a trailing #, which jsonschema does not look up).
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def oros_services(document: dict) -> dict[str, dict]:
    """The services that run our image (built from the Dockerfile, whose entrypoint is `oros`)."""
    return {name: service for name, service in document["services"].items()
            if service.get("build") == "." or service.get("image") == "oros:latest"}


def test_there_are_compose_files_to_check():
    assert {path.name for path in COMPOSE_FILES} >= {"docker-compose.yml", "docker-compose.cluster.yml"}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_file_follows_the_compose_specification(path):
    assert schema_errors(load(path)) == []


def test_the_schema_refuses_what_compose_refuses():
    document = load(ROOT / "docker-compose.yml")
    document["services"]["tracker"]["comand"] = ["tracker"]
    document["services"]["ingest"]["restart"] = 3
    errors = schema_errors(document)
    assert any("comand" in error for error in errors) and any(error.startswith("services/ingest/restart")
                                                             for error in errors)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_oros_service_runs_a_command_oros_has(path):
    services = oros_services(load(path))
    assert services
    for name, service in services.items():
        try:
            build_parser().parse_args([str(part) for part in service["command"]])
        except SystemExit:
            pytest.fail(f"{path.name}: service {name} runs `oros {' '.join(service['command'])}`, which oros refuses")


def test_an_unknown_subcommand_or_option_is_caught():
    for command in (["track"], ["tracker", "--wrokers", "2"], ["ingest", "--metrics-port", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(command)


def test_the_image_copies_every_package_pyproject_installs():
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in found["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./(\w+)$", DOCKERFILE, re.M))
    assert {source for source, target in copied if source == target} == packages


def test_the_tracker_spools_to_a_directory_its_user_owns_and_compose_keeps():
    data_dir = re.search(r"OROS_DATA_DIR=(\S+)", DOCKERFILE).group(1)
    assert re.search(rf"chown oros {re.escape(data_dir)}\b", DOCKERFILE)
    assert DOCKERFILE.index(f"chown oros {data_dir}") < DOCKERFILE.index("USER oros")
    for path in COMPOSE_FILES:
        tracker = load(path)["services"]["tracker"]
        assert any(volume.endswith(f":{data_dir}") for volume in tracker.get("volumes", [])), path.name


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_each_process_gets_only_the_clickhouse_it_needs(path):
    services = load(path)["services"]
    assert "CLICKHOUSE_URL" not in services["tracker"]["environment"]
    user = {name: re.match(r"https?://(\w+):", service["environment"]["CLICKHOUSE_URL"]).group(1)
            for name, service in oros_services({"services": services}).items()
            if "CLICKHOUSE_URL" in service["environment"]}
    assert user == {"migrate": "oros", "ingest": "oros", "settler": "oros", "admin": "oros_reader"}


def test_the_admin_apis_clickhouse_login_only_reads():
    config = ElementTree.parse(READER_CONFIG).getroot()
    assert config.findtext("profiles/oros_reader/readonly") == "2"  # 1 would refuse the queries' own settings
    reader = config.find("users/oros_reader")
    assert reader.find("password").get("from_env") == "CLICKHOUSE_READER_PASSWORD"
    assert reader.findtext("profile") == "oros_reader"
    assert [grant.text for grant in reader.findall("grants/query")] == ["GRANT SELECT ON oros.*"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_redis_asks_every_client_for_its_password(path):
    """The event stream is inside the money boundary (docs/security.md): no client reaches it unauthenticated."""
    services = load(path)["services"]
    redis_servers = {name: service for name, service in services.items()
                     if str(service.get("image", "")).startswith("redis") and "redis-server" in service["command"]}
    assert redis_servers
    for name, service in redis_servers.items():
        command = service["command"]
        assert command[command.index("--requirepass") + 1] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}", name
        assert service["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}", name
    urls = {name: service["environment"]["REDIS_URL"] for name, service in oros_services({"services": services}).items()
            if "REDIS_URL" in service["environment"]}
    assert urls and all(url.startswith("redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@") for url in urls.values())
