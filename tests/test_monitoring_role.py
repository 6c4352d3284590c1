"""The monitoring role's alert rules and Prometheus configuration, rendered from the role as Ansible renders them
(its defaults, Jinja2), checked by promtool, and the alert rules proven by promtool's rule unit tests
(tests/prometheus/alerts.test.yml): each alert fires on the series that should fire it and stays silent on the
look-alikes. The values the role copies from other roles (ports, users, Redis instances) are checked to agree."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.services import REPO

ROLE = REPO / "roles" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")


def _defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())


def _render(template: str, **variables) -> str:
    # Ansible's template module: trim_blocks, StrictUndefined so a variable the template reads and the role's
    # defaults lack fails here.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    source = (ROLE / "templates" / template).read_text()
    return env.from_string(source).render(ansible_managed="managed by Ansible", **variables)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "soniquebay-alerts.yml"
    path.write_text(_render("soniquebay-alerts.yml.j2", **_defaults("monitoring")))
    return path


@needs_promtool
def test_the_alert_rules_are_valid(rules):
    result = _promtool("check", "rules", str(rules), cwd=rules.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    names = [rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]]
    assert {"SoniqueBayBacklogStuck", "SoniqueBayQueueWithoutWorker", "SoniqueBayScanStalled",
            "SoniqueBayTaskFailureRate", "SoniqueBayFileFailureRate", "SoniqueBayRedisMemoryNearLimit",
            "SoniqueBayPostgresConnectionsNearLimit", "SoniqueBayWorkerKilledByWatchdog"} <= set(names)


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_otherwise(rules):
    tests = rules.parent / "alerts.test.yml"
    shutil.copy(REPO / "tests" / "prometheus" / "alerts.test.yml", tests)
    result = _promtool("test", "rules", str(tests), cwd=rules.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert of the file has a test that expects it to fire.
    expected = {case["alertname"] for group in yaml.safe_load(tests.read_text())["tests"]
                for case in group["alert_rule_test"] if case["exp_alerts"]}
    names = {rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]}
    assert names == expected


@needs_promtool
def test_the_rule_tests_fail_when_an_alert_would_not_fire(rules, tmp_path):
    """promtool's verdict is worth something: the same tests against rules whose thresholds are out of reach fail."""
    defaults = _defaults("monitoring")
    defaults["monitoring_alert_for"] = {name: "1h" for name in defaults["monitoring_alert_for"]}
    rules.write_text(_render("soniquebay-alerts.yml.j2", **defaults))
    shutil.copy(REPO / "tests" / "prometheus" / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = _promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SoniqueBayQueueWithoutWorker" in result.stdout + result.stderr


def _fleet() -> dict:
    """inventory/prod's hosts and groups, as Ansible's hostvars and groups."""
    inventory = yaml.safe_load((REPO / "inventory" / "prod" / "hosts.yml").read_text())["all"]
    hostvars: dict[str, dict] = {}
    groups: dict[str, list[str]] = {"all": []}
    for group, body in inventory["children"].items():
        groups[group] = list(body["hosts"])
        for host, variables in body["hosts"].items():
            hostvars.setdefault(host, {}).update(variables or {})
            if host not in groups["all"]:
                groups["all"].append(host)
    return {"hostvars": hostvars, "groups": groups}


@needs_promtool
def test_prometheus_scrapes_the_whole_fleet_from_the_inventory(rules):
    fleet = _fleet()
    groups, hostvars = fleet["groups"], fleet["hostvars"]
    defaults = _defaults("monitoring")
    plain = {key: value for key, value in defaults.items() if not (isinstance(value, str) and "{{" in value)}
    config = _render("prometheus.yml.j2", **{
        **plain, "hostvars": hostvars, "inventory_hostname": "sb-mem-01",
        "monitoring_listen_address": hostvars["sb-mem-01"]["soniquebay_fleet_address"],
        "monitoring_prometheus_config_dir": str(rules.parent), "monitoring_node_exporter_hosts": groups["all"],
        "monitoring_redis_hosts": groups["redis"], "monitoring_database_hosts": groups["database"],
        "monitoring_redis_scheme": "rediss"})  # vars/main.yml: TLS, as monitoring_redis_tls says by default
    path = rules.parent / "prometheus.yml"
    path.write_text(config)
    result = _promtool("check", "config", str(path), cwd=rules.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    targets = {name: [t for static in job["static_configs"] for t in static["targets"]] for name, job in jobs.items()}
    assert sorted(targets["node"]) == sorted(f"{hostvars[h]['soniquebay_fleet_address']}:9100" for h in groups["all"])
    assert targets["redis"] == ["rediss://monitor@127.0.0.1:6379", "rediss://monitor@127.0.0.1:6380"]
    assert targets["redis_exporter"] == ["10.20.0.10:9121"]
    assert targets["postgres"] == ["10.20.0.20:9187"]
    assert targets["soniquebay"] == ["127.0.0.1:9808"]


def test_the_values_the_role_copies_from_other_roles_agree():
    monitoring, supervisor = _defaults("monitoring"), _defaults("supervisor")
    redis, postgresql = _defaults("redis"), _defaults("postgresql")
    assert monitoring["monitoring_soniquebay_exporter_address"] == supervisor["supervisor_exporter_address"]
    assert monitoring["monitoring_soniquebay_exporter_port"] == supervisor["supervisor_exporter_port"]
    assert monitoring["monitoring_redis_instances"] == [{"name": i["name"], "port": i["port"]}
                                                       for i in redis["redis_instances"]]
    assert monitoring["monitoring_postgres_exporter_db_user"] == postgresql["postgresql_monitor_user"]
    assert monitoring["monitoring_postgres_port"] == postgresql["postgresql_port"]
    assert monitoring["monitoring_redis_tls"] == redis["redis_tls"]
    # The Redis exporter logs in as a user of that name on every instance, with a password per instance.
    users = yaml.safe_load((REPO / "roles/redis/vars/main.yml").read_text())["redis_acl_users"]
    for instance in redis["redis_instances"]:
        assert monitoring["monitoring_redis_exporter_user"] in [user["name"] for user in users[instance["name"]]]
    assert set(monitoring["monitoring_redis_exporter_passwords"]) == {i["name"] for i in redis["redis_instances"]}
    # The cache's monitor user (the exporter's alone) may read INFO and nothing of the keys, channels or
    # configuration; both monitor users may run what the exporter runs beyond INFO (the broker's would log a
    # refusal at every scrape otherwise).
    rules = redis["redis_cache_monitor_acl_rules"].split()
    assert rules[:3] == ["resetkeys", "resetchannels", "-@all"]
    assert "+info" in rules and not any(rule.startswith(("~", "&", "+@", "+config", "+acl")) for rule in rules)
    exporter_reads = {"+info", "+slowlog|get", "+slowlog|len", "+latency|latest", "+latency|histogram"}
    assert exporter_reads <= set(rules)
    assert exporter_reads <= set(redis["redis_broker_monitor_acl_rules"].split())


def test_the_redis_exporter_finds_a_password_for_each_of_its_targets():
    """Redis exporter 1.45 looks a /scrape target up in its password file with the target's user taken out: each
    target of prometheus.yml, so shortened, is a key of the password file, with that instance's password."""
    from urllib.parse import urlsplit, urlunsplit

    fleet = _fleet()
    defaults = _defaults("monitoring")
    plain = {key: value for key, value in defaults.items() if not (isinstance(value, str) and "{{" in value)}
    variables = {**plain, "hostvars": fleet["hostvars"], "inventory_hostname": "sb-mem-01",
                 "monitoring_listen_address": "10.20.0.51", "monitoring_node_exporter_hosts": [],
                 "monitoring_redis_hosts": fleet["groups"]["redis"], "monitoring_database_hosts": [],
                 "monitoring_redis_scheme": "rediss",
                 "monitoring_redis_exporter_passwords": {"broker": "brokerMonitor0000", "cache": "cacheMonitor00000"}}
    config = yaml.safe_load(_render("prometheus.yml.j2", **variables))
    passwords = json.loads(_render("redis-exporter-passwords.json.j2", **variables))
    redis_job = next(job for job in config["scrape_configs"] if job["job_name"] == "redis")
    found = {}
    for static in redis_job["static_configs"]:
        for target in static["targets"]:
            parts = urlsplit(target)
            assert parts.username == "monitor", target
            without_user = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
            found[static["labels"]["redis"]] = passwords[without_user]
    assert found == variables["monitoring_redis_exporter_passwords"]
