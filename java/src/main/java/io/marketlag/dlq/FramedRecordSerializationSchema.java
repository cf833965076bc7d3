package io.marketlag.dlq;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Turns a sink frame built by the Python job into a {@link ProducerRecord} for one fixed topic,
 * with the frame's key, value, headers, and (when set) partition and timestamp.
 *
 * <p>A DLQ record keeps its input's partition. If the input has grown and its DLQ not yet (the
 * job checks at start; `dlq topics` grows them together), a record of a partition the topic
 * lacks goes to that partition modulo the topic's count instead of failing the sink: one
 * feed's drift then never stops the job.
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
        Integer partition = s.partition();
        if (partition != null) {
            int count = context.getPartitionsForTopic(topic).length;
            if (count > 0 && partition >= count) {
                partition = partition % count;
            }
        }
        return new ProducerRecord<>(topic, partition, s.timestamp(), s.key(), s.value(),
                s.headers());
    }
}
