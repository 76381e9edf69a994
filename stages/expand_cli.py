"""`hazardctl expand` (local engine or the Flink job) and `hazardctl flink-job`."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import DLQ_HELP, FROM_TIME_HELP, IN_HELP, KAFKA_CONFIG_HELP, OUT_HELP, command, rewind_input
from hazardctl.errors import ConfigError


@command(
    "expand",
    help="Turn detection results into one assessment task per group worth assessing (gated).\n\n"
    "Example: hazardctl expand < detections.jsonl > tasks.jsonl\n\n"
    "Example: hazardctl expand --in kafka://detection-results --out kafka://assessment-tasks",
)
def expand_cmd(
    ctx: typer.Context,
    in_spec: str = typer.Option("-", "--in", help=IN_HELP),
    out_spec: str = typer.Option("-", "--out", help=OUT_HELP),
    dlq: Optional[str] = typer.Option(None, "--dlq", help=DLQ_HELP),
    engine: str = typer.Option("local", help="'local' (pure Python) or 'flink' (PyFlink job, Kafka only; docs/flink.md)."),
    jobmanager: Optional[str] = typer.Option(
        None, help="flink: submit to the session cluster at HOST:PORT (REST), print the job id; default: local mini-cluster."),
    flink_config: Optional[str] = typer.Option(None, help="flink: settings YAML (default config/flink.yaml)."),
    from_savepoint: Optional[str] = typer.Option(None, help="flink --jobmanager: start from this savepoint/checkpoint."),
    gate: str = typer.Option("danger", "--gate", help="'danger': motion cues decide first (suspect at once, calm "
                             "groups rarely); 'classic': the gate before cues (new/changed/refresh), for comparisons."),
    refresh: float = typer.Option(10.0, help="Re-assess an unchanged group about this often (s; on a per-group phase grid)."),
    ttl: float = typer.Option(30.0, help="Forget a group not seen for this many seconds."),
    min_iou: float = typer.Option(0.5, help="Box IoU with the last sent box below this is a change."),
    calm_refresh: float = typer.Option(60.0, help="danger: re-assess a calm group (no possible conflict) this often (s)."),
    calm_regroup: bool = typer.Option(True, "--calm-regroup/--no-calm-regroup", help="danger: hold a new calm group "
                                      "whose road users were assessed (in other groups) within the calm refresh."),
    calm_regroup_share: float = typer.Option(0.5, help="danger: ... when at least this share of them were (1: all)."),
    suspect_ttc: float = typer.Option(1.5, help="danger: time to collision at or below this (s) is suspect."),
    suspect_gap: float = typer.Option(0.25, help="danger: predicted smallest gap below this × the pair's size is suspect."),
    suspect_cooldown: float = typer.Option(5.0, help="danger: re-send a group that stays suspect at most this often (s)."),
    suspect_worse: float = typer.Option(0.6, help="danger: a suspect cue below this × its value at the last suspect "
                                        "send is markedly worse: sent again within the cooldown."),
    suspect_flags: str = typer.Option("*", help="danger: comma-separated cue flags that are suspect by themselves; "
                                      "'*' any flag, '' none."),
    deadline: float = typer.Option(10.0, help="Task deadline, seconds after capture."),
    group_id: str = typer.Option("hazardctl-expand", "--group", help="Kafka consumer group."),
    from_time: Optional[str] = typer.Option(None, "--from-time", help=FROM_TIME_HELP + " The local engine's gate "
                                            "then starts empty (the replayed detections rebuild it)."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    metrics_bind: str = typer.Option("127.0.0.1", "--metrics-bind", help="Address of the --metrics-port listener "
                                     "(default: this host only; 0.0.0.0 when Prometheus scrapes from another host)."),
) -> None:
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints
    from stages import expand
    from stages.expand import flink_cli

    # one mapping for both engines: flag → config/flink.yaml's gate setting (flink_cli.GATE_FLAGS), validated
    flags = {"gate": gate, "refresh": refresh, "ttl": ttl, "min_iou": min_iou, "calm_refresh": calm_refresh,
             "calm_regroup": calm_regroup, "calm_regroup_share": calm_regroup_share,
             "suspect_ttc": suspect_ttc, "suspect_gap": suspect_gap, "suspect_cooldown": suspect_cooldown,
             "suspect_worse": suspect_worse, "suspect_flags": suspect_flags, "deadline": deadline}
    cfg = flink_cli.expand_config(flags)
    if engine not in ("local", "flink"):
        raise ConfigError(f"--engine {engine}: use 'local' or 'flink'")
    if from_time is not None and from_savepoint is not None:
        raise ConfigError("--from-time and --from-savepoint: the savepoint holds its own offsets; give one of them")
    endpoints = Endpoints(kafka_config)
    since = rewind_input(endpoints, in_spec, group_id, from_time)  # the Flink source starts from committed offsets
    if engine == "flink":
        given = {k: v for k, v in flags.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
        raise typer.Exit(flink_cli.run_expand(in_spec, out_spec, dlq, group_id=group_id, gate_flags=given,
                                              jobmanager=jobmanager, flink_config=flink_config,
                                              from_savepoint=from_savepoint, kafka_config=kafka_config))
    serve_metrics(metrics_port, metrics_bind)
    # --from-time: the replayed detections are older than anything a restored gate holds (all would be
    # stale-replay), so the gate starts empty and the replay rebuilds it in event time
    expand.run(in_spec, out_spec, dlq, cfg=cfg, endpoints=endpoints, group_id=group_id, restore_gate=since is None)


@command(
    "flink-job",
    help="See and stop expand's Flink jobs on a session cluster (JobManager REST API).\n\n"
    "list: JOB_ID STATE NAME per line; cancel JOB_ID; savepoint JOB_ID [--stop]: prints the savepoint path.\n\n"
    "Example: hazardctl flink-job savepoint 5f1e… --stop --jobmanager 127.0.0.1:18081",
)
def flink_job_cmd(
    action: str = typer.Argument(..., help="list | cancel | savepoint"),
    job_id: Optional[str] = typer.Argument(None, help="The job (cancel, savepoint)."),
    jobmanager: str = typer.Option("127.0.0.1:18081", help="JobManager REST address HOST:PORT."),
    stop: bool = typer.Option(False, "--stop", help="savepoint: stop the job once the savepoint is written."),
    target: Optional[str] = typer.Option(None, help="savepoint: directory (default: the cluster's savepoint dir)."),
) -> None:
    from stages.expand import flink_cli

    flink_cli.preflight(flink_cli.settings_or_exit(None), jobmanager)
    if action == "list":
        for j in flink_cli.list_jobs(jobmanager):
            typer.echo(f"{j['jid']} {j['state']} {j['name']}")
    elif action in ("cancel", "savepoint") and job_id:
        if action == "cancel":
            flink_cli.cancel(jobmanager, job_id)
            typer.echo(f"cancelling {job_id}")
        else:
            typer.echo(flink_cli.savepoint(jobmanager, job_id, stop=stop, target=target))
    else:
        raise ConfigError(f"flink-job {action}: use list, cancel JOB_ID or savepoint JOB_ID [--stop]")
