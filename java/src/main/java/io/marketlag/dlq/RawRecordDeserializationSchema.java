package io.marketlag.dlq;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Hands every consumed record to Python untouched: topic, partition, offset, timestamp, key,
 * value and all headers (in order, duplicates kept), packed into one source frame.
 *
 * <p>It never looks inside key or value, so it cannot fail on bad data: tombstones, empty
 * values and invalid UTF-8 all reach the Python process function, which decides what they are.
 */
public final class RawRecordDeserializationSchema
        implements KafkaRecordDeserializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
        out.collect(RecordFrames.encodeSource(
                record.topic(), record.partition(), record.offset(),
                record.timestamp() < 0 ? -1L : record.timestamp(),
                record.key(), record.value(), record.headers()));
    }

    @Override
    public TypeInformation<byte[]> getProducedType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
