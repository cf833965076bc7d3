package io.marketlag.dlq;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * The byte frames that carry one Kafka record across the Java/Python boundary.
 *
 * <p>A frame is a single {@code byte[]}, so each record crosses into the Python worker once,
 * with nothing decoded on the Java side: no deserialization error can happen before the
 * Python process function sees the record. All integers are big-endian; a length of -1 means
 * null. The Python side of the same layout is {@code udfs/frames.py}; keep them in step.
 *
 * <pre>
 * source frame: i32 partition, i64 offset, i64 timestamp (-1: none), str topic,
 *               bytes key, bytes value, headers
 * sink frame:   i32 partition (-1: partitioner decides), i64 timestamp (-1: broker/producer time),
 *               bytes key, bytes value, headers
 * str     = i32 length + UTF-8     bytes = i32 length (-1 = null) + raw bytes
 * headers = i32 count + count * (str name, bytes value)
 * </pre>
 */
public final class RecordFrames {
    private RecordFrames() {}

    static void writeBytes(DataOutputStream out, byte[] b) throws IOException {
        if (b == null) {
            out.writeInt(-1);
        } else {
            out.writeInt(b.length);
            out.write(b);
        }
    }

    static void writeString(DataOutputStream out, String s) throws IOException {
        writeBytes(out, s.getBytes(StandardCharsets.UTF_8));
    }

    static byte[] readBytes(ByteBuffer in) {
        int n = in.getInt();
        if (n < 0) {
            return null;
        }
        byte[] b = new byte[n];
        in.get(b);
        return b;
    }

    static String readString(ByteBuffer in) {
        return new String(readBytes(in), StandardCharsets.UTF_8);
    }

    /** Encodes a consumed record as a source frame. */
    public static byte[] encodeSource(
            String topic, int partition, long offset, long timestamp,
            byte[] key, byte[] value, Iterable<org.apache.kafka.common.header.Header> headers) {
        int size = 64 + topic.length() * 3
                + (key == null ? 0 : key.length) + (value == null ? 0 : value.length);
        ByteArrayOutputStream buf = new ByteArrayOutputStream(size);
        try (DataOutputStream out = new DataOutputStream(buf)) {
            out.writeInt(partition);
            out.writeLong(offset);
            out.writeLong(timestamp);
            writeString(out, topic);
            writeBytes(out, key);
            writeBytes(out, value);
            int count = 0;
            for (var ignored : headers) {
                count++;
            }
            out.writeInt(count);
            for (var h : headers) {
                writeString(out, h.key());
                writeBytes(out, h.value());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toByteArray();
    }
}
