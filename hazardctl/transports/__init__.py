"""Open an input or output from its spec: `-` (stdin/stdout), a file path, or `kafka://TOPIC`."""

from __future__ import annotations

from hazardctl.config import KafkaSettings, load_kafka_settings
from hazardctl.errors import ConfigError
from hazardctl.transports.base import DeliveryCallback, Input, Output, Record, Ticket
from hazardctl.transports.pipes import LineInput, LineOutput, open_line_input, open_line_output

KAFKA_SCHEME = "kafka://"

__all__ = ["DeliveryCallback", "Endpoints", "Input", "Output", "Record", "Ticket", "is_kafka", "LineInput", "LineOutput"]


def is_kafka(spec: str) -> bool:
    return spec.startswith(KAFKA_SCHEME)


def kafka_topic(spec: str) -> str:
    return spec[len(KAFKA_SCHEME):].strip("/")


class Endpoints:
    """Opens a stage's inputs and outputs, sharing one Kafka producer among all outputs."""

    def __init__(self, kafka_config: str | None = None, settings: KafkaSettings | None = None):
        self._kafka_config = kafka_config
        self._settings = settings
        self._clients = None

    @property
    def kafka(self):
        if self._clients is None:
            from hazardctl.transports.kafka import KafkaClients  # only stages that use Kafka pay for it

            self._clients = KafkaClients(self._settings or load_kafka_settings(self._kafka_config))
        return self._clients

    def wait_ready(self, specs: list[str], timeout: float) -> None:
        """For Kafka specs: wait for the broker and check the topics exist (one clear error line)."""
        topics = [kafka_topic(s) for s in specs if is_kafka(s)]
        if topics:
            from hazardctl.transports.kafka import wait_for_broker

            wait_for_broker(self.kafka.settings, timeout, topics)

    def input(self, spec: str, group_id: str, stage: str | None = None) -> Input:
        """`stage` names the stage in the Kafka consumer-lag metric."""
        if is_kafka(spec):
            return self.kafka.input([kafka_topic(spec)], group_id, stage)
        return open_line_input(spec)

    def rewind(self, spec: str, group_id: str, ts: float, text: str | None = None) -> dict[int, int]:
        """`--from-time`: commit the group's offsets of the Kafka input `spec` at time `ts` (before the
        stage's consumer joins); ConfigError for an input that is not Kafka."""
        if not is_kafka(spec):
            raise ConfigError(f"--from-time needs a kafka:// input, not {spec!r} (a pipe or file has no past to rewind)")
        from hazardctl.transports.kafka_rewind import rewind_group

        return rewind_group(self.kafka.settings, kafka_topic(spec), group_id, ts, text or f"{ts:.3f}")

    def output(self, spec: str) -> Output:
        if is_kafka(spec):
            return self.kafka.output(kafka_topic(spec))
        return open_line_output(spec)

    def default_dlq(self, input_spec: str, dead_letter_topic: str = "dead-letters") -> str:
        """Dead letters go where the input came from: a topic for Kafka, stderr for pipes."""
        return f"{KAFKA_SCHEME}{dead_letter_topic}" if is_kafka(input_spec) else "stderr"
