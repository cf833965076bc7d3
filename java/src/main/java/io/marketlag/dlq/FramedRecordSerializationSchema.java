package io.marketlag.dlq;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;

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
        ByteBuffer in = ByteBuffer.wrap(frame);
        int partition = in.getInt();
        long ts = in.getLong();
        byte[] key = RecordFrames.readBytes(in);
        byte[] value = RecordFrames.readBytes(in);
        int count = in.getInt();
        List<Header> headers = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            String name = RecordFrames.readString(in);
            headers.add(new RecordHeader(name, RecordFrames.readBytes(in)));
        }
        return new ProducerRecord<>(
                topic, partition < 0 ? null : partition, ts < 0 ? null : ts, key, value, headers);
    }
}
