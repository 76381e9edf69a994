"""`hazardctl compare`: the agreement of a candidate variant's results with the running one's."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import KAFKA_CONFIG_HELP, command


@command(
    "compare",
    help="Compare two sets of results on the same tasks: schedule's primary results (--from) and its shadow "
    "results (--to), or two replays. Prints the level confusion matrix, risk-type overlap, LLM latency and tokens "
    "per variant; --png draws it.\n\n"
    "Example: hazardctl compare --from kafka://risk-assessment-results --to kafka://shadow-results "
    "--since -1h --png compare.png",
)
def compare_cmd(
    from_spec: str = typer.Option(..., "--from", help="The running variant's results: a JSON-lines file or "
                                  "kafka://TOPIC."),
    to_spec: str = typer.Option(..., "--to", help="The candidate's results (schedule --shadow-out): a file or "
                                "kafka://TOPIC."),
    since: Optional[str] = typer.Option(None, "--since", help="Only results from this time (ISO 8601 or -2h; "
                                        "default: all the topic keeps)."),
    png: Optional[str] = typer.Option(None, "--png", help="Also draw the confusion matrix and latencies here."),
    as_json: bool = typer.Option(False, "--json", help="Print the agreement as JSON."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
) -> None:
    import time
    from pathlib import Path

    from hazardctl.from_time import parse_from_time
    from hazardctl.transports import Endpoints
    from tools import compare

    start = parse_from_time(since, time.time()) if since else 0.0
    endpoints = Endpoints(kafka_config)
    primary = compare.read_results(from_spec, endpoints, start)
    candidate = compare.read_results(to_spec, endpoints, start)
    ag = compare.compare(primary, candidate)
    names = (_name(primary, "from"), _name(candidate, "to"))
    typer.echo(ag.to_json() if as_json else compare.report(ag, names))
    if png:
        compare.plot(Path(png), ag, names, primary, candidate)
        if not as_json:
            typer.echo(f"\nwrote {png}")


def _name(results: list[dict], fallback: str) -> str:
    """The side's variant names, e.g. 'plus' or 'plus+max'."""
    names = sorted({r.get("variant") or "-" for r in results})
    return "+".join(names) if names and len(names) <= 3 else fallback
