"""deploy/compose.yaml, checked without Docker (this machine has none: the file says so).

What can be checked here: it parses (YAML merge keys resolved), has Kafka, topic setup, every stage,
Flink, Prometheus and Grafana; every published port is on 127.0.0.1; consume requires its token; the
files it mounts exist; and the Prometheus config it derives from deploy/prometheus/prometheus.yml
(a sed that renames 127.0.0.1 targets to the services) leaves no loopback target behind and points
each job at a service that exists, on the port that service serves metrics on.
"""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_says_it_is_not_run_in_ci():
    assert "NOT RUN IN CI" in (DEPLOY / "compose.yaml").read_text()


def test_services_ports_and_token():
    services = compose()["services"]
    assert {"kafka", "setup-topics", "detect", "expand", "schedule", "consume", "llm-sim", "flink",
            "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "--no-simulate" in services["schedule"]["command"]  # never made-up assessments in a deployment
    consume = services["consume"]["command"]
    assert "--token-file" in consume and consume[consume.index("--token-file") + 1] == "/run/secrets/consume_token"
    # camera health: what detect publishes is what consume reads (camera incidents, issue 18)
    detect = services["detect"]["command"]
    assert consume[consume.index("--camera-status") + 1] == detect[detect.index("--status-out") + 1]
    assert "consume_token" in services["prometheus"]["secrets"]  # consume's metrics port requires the token
    for name, svc in services.items():  # scraped from the prometheus container: bound beyond its loopback
        cmd = svc.get("command", [])
        if "--metrics-port" in cmd and cmd[1] != "llm-sim":  # llm-sim's metrics follow its --host
            assert cmd[cmd.index("--metrics-bind") + 1] == "0.0.0.0", name
    for name in ("expand", "schedule", "consume", "detect"):
        env = services[name]["environment"]
        assert env["HAZARDCTL_KAFKA_BOOTSTRAP"] == "kafka:9092"  # the x-stage anchor was merged
        assert services[name]["depends_on"]["setup-topics"]["condition"] == "service_completed_successfully"
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name} mounts missing {src}"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name


def test_derived_prometheus_config_targets_the_services(tmp_path):
    """Runs the prometheus-config service's own shell command (sed) with its two folders mapped here."""
    services = compose()["services"]
    cmd = services["prometheus-config"]["command"]
    assert cmd[:2] == ["sh", "-c"]
    script = cmd[2].replace("/src/", f"{DEPLOY / 'prometheus'}/").replace("/out/", f"{tmp_path}/")
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    cfg = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert (tmp_path / "alerts.yml").read_text() == (DEPLOY / "prometheus/alerts.yml").read_text()
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["hazardctl-consume"]["authorization"]["credentials_file"] == "/run/secrets/consume_token"
    metrics_port = {name: svc["command"][svc["command"].index("--metrics-port") + 1]
                    for name, svc in services.items() if "--metrics-port" in svc.get("command", [])}
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                assert host != "127.0.0.1", f"job {job['job_name']}: {target} not renamed for compose"
                assert host in services, f"job {job['job_name']}: no service {host}"
                if host in metrics_port:
                    assert metrics_port[host] == port, f"{host} serves metrics on {metrics_port[host]}, scraped on {port}"
                if host == "flink":
                    low, high = services["flink"]["environment"]["FLINK_LOCAL_PROM"].split("-")
                    assert int(low) <= int(port) <= int(high), f"flink reporter ports {low}-{high}, scraped on {port}"
