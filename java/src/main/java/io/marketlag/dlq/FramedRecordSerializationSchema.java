package io.marketlag.dlq;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Turns a sink frame built by the Python job into a {@link ProducerRecord} for one fixed topic,
 * with the frame's key, value, headers, and (when set) partition and timestamp.
 */
public final class FramedRecordSerializationSchema
        implements KafkaRecordSerializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    private final String topic;

    public FramedRecordSerializationSchema(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(
            byte[] frame, KafkaSinkContext context, Long timestamp) {
        RecordFrames.Sink s = RecordFrames.decodeSink(frame);
        return new ProducerRecord<>(topic, s.partition(), s.timestamp(), s.key(), s.value(),
                s.headers());
    }
}
