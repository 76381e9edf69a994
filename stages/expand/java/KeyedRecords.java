// Small adapters the Python DataStream API lacks (compiled by `make flink-env`):
// - Source: each Kafka record as Row(key, Row(partition, offset, value bytes)): the value and only what a
//   dead letter needs to say where its input was (a value-only deserializer loses partition and
//   offset), already in the shape PyFlink's key_by produces (Row(key, record)): the job keys by the
//   record key (the camera id) without a Python key-selector operator in front of the gate. Every
//   field is converted into Python objects per record (thread mode), so nothing else crosses.
// - SplitLines: the gate hands back one Row(key, task JSON lines) per detection (one conversion into
//   Java instead of one per task); this emits Row(key, task) for each '\n'-separated line.
// - Sink: the record key from the first column of a Row(key, value); the value uses PyFlink's
//   own SecondColumnSerializationSchema.
package hazardctl.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

public final class KeyedRecords {
    private KeyedRecords() {}

    /** The record: Row(partition INT, offset LONG, value BYTES). */
    public static final TypeInformation<Row> RECORD = Types.ROW(Types.INT, Types.LONG,
            Types.PRIMITIVE_ARRAY(Types.BYTE));

    /** Row(key STRING, BYTES): a key and a value (the gate's output, the tasks, the dead letters). */
    public static final TypeInformation<Row> KEYED_BYTES = Types.ROW(Types.STRING, Types.PRIMITIVE_ARRAY(Types.BYTE));

    /** Row(key STRING (the record key as UTF-8, "" when none), RECORD). */
    public static final class KeyedSourceRecords implements KafkaRecordDeserializationSchema<Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
            byte[] key = record.key();
            byte[] value = record.value() == null ? new byte[0] : record.value();
            out.collect(Row.of(key == null ? "" : new String(key, StandardCharsets.UTF_8),
                    Row.of(record.partition(), record.offset(), value)));
        }

        @Override
        public TypeInformation<Row> getProducedType() {
            return Types.ROW(Types.STRING, RECORD);
        }
    }

    /** Row(key, "task\ntask\n...") to Row(key, task) per line (JSON from orjson has no raw newline). */
    public static final class SplitLines implements FlatMapFunction<Row, Row>, ResultTypeQueryable<Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public void flatMap(Row row, Collector<Row> out) {
            Object key = row.getField(0);
            byte[] lines = (byte[]) row.getField(1);
            int start = 0;
            for (int i = 0; i <= lines.length; i++) {
                if (i == lines.length || lines[i] == '\n') {
                    if (i > start) {
                        out.collect(Row.of(key, Arrays.copyOfRange(lines, start, i)));
                    }
                    start = i + 1;
                }
            }
        }

        @Override
        public TypeInformation<Row> getProducedType() {
            return KEYED_BYTES;
        }
    }

    /** The UTF-8 bytes of the first column (a String) of a Row; null stays null. */
    public static final class FirstColumnKey implements SerializationSchema<Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public byte[] serialize(Row row) {
            Object key = row.getField(0);
            return key == null ? null : key.toString().getBytes(StandardCharsets.UTF_8);
        }
    }
}
