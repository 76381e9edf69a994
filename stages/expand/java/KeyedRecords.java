// Two tiny adapters the Python DataStream API lacks (compiled by `make flink-env`):
// - Source: each Kafka record as Row(key, Row(topic, partition, offset, key bytes, value bytes)), so a
//   dead letter can say where its input was (a value-only deserializer loses partition, offset and
//   key), already in the shape PyFlink's key_by produces (Row(key, record)): the job keys by the
//   record key (the camera id) without a Python key-selector operator in front of the gate.
// - Sink: the record key from the first column of a Row(key, value); the value uses PyFlink's
//   own SecondColumnSerializationSchema.
package hazardctl.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

public final class KeyedRecords {
    private KeyedRecords() {}

    /** The record: Row(topic STRING, partition INT, offset LONG, key BYTES (empty when none), value BYTES). */
    public static final TypeInformation<Row> RECORD = Types.ROW(Types.STRING, Types.INT, Types.LONG,
            Types.PRIMITIVE_ARRAY(Types.BYTE), Types.PRIMITIVE_ARRAY(Types.BYTE));

    /** Row(key STRING (the record key as UTF-8, "" when none), RECORD). */
    public static final class KeyedSourceRecords implements KafkaRecordDeserializationSchema<Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
            byte[] key = record.key() == null ? new byte[0] : record.key();
            byte[] value = record.value() == null ? new byte[0] : record.value();
            out.collect(Row.of(new String(key, StandardCharsets.UTF_8),
                    Row.of(record.topic(), record.partition(), record.offset(), key, value)));
        }

        @Override
        public TypeInformation<Row> getProducedType() {
            return Types.ROW(Types.STRING, RECORD);
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
