package io.marketlag.dlq;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;

/**
 * The byte frames that carry one Kafka record across the Java/Python boundary.
 *
 * <p>A frame is a single {@code byte[]}, so each record crosses into the Python worker once,
 * with nothing decoded on the Java side: no deserialization error can happen before the
 * Python process function sees the record. A fixed head holds every length, so the Python
 * side slices a frame with one unpack; the headers stay one opaque block that a clean record
 * passes from its source frame to its sink frame unchanged. All integers are big-endian; a
 * length of -1 means null. The Python side of the same layout is {@code udfs/frames.py}; keep
 * them in step.
 *
 * <pre>
 * source frame: i32 partition, i64 offset, i64 timestamp (-1: none),
 *               i32 topic length, i32 key length, i32 value length, i32 headers length,
 *               topic (UTF-8), key, value, headers
 * sink frame:   i32 partition (-1: partitioner decides), i64 timestamp (-1: producer time),
 *               i32 key length, i32 value length, i32 headers length, key, value, headers
 * headers = i32 count + count * (i32 name length, i32 value length, name (UTF-8), value)
 * </pre>
 */
public final class RecordFrames {
    private RecordFrames() {}

    static final int SOURCE_HEAD = 4 + 8 + 8 + 4 * 4;
    static final int SINK_HEAD = 4 + 8 + 3 * 4;

    private static int length(byte[] b) {
        return b == null ? 0 : b.length;
    }

    private static void put(ByteBuffer out, byte[] b) {
        if (b != null) {
            out.put(b);
        }
    }

    /** Encodes a consumed record as a source frame, in one exactly sized array. */
    public static byte[] encodeSource(
            String topic, int partition, long offset, long timestamp,
            byte[] key, byte[] value, Iterable<Header> headers) {
        byte[] topicBytes = topic.getBytes(StandardCharsets.UTF_8);
        List<byte[]> names = new ArrayList<>(4);
        int headersLength = 4;
        for (Header h : headers) {
            byte[] name = h.key().getBytes(StandardCharsets.UTF_8);
            names.add(name);
            headersLength += 8 + name.length + length(h.value());
        }
        ByteBuffer out = ByteBuffer.allocate(
                SOURCE_HEAD + topicBytes.length + length(key) + length(value) + headersLength);
        out.putInt(partition).putLong(offset).putLong(timestamp);
        out.putInt(topicBytes.length)
                .putInt(key == null ? -1 : key.length)
                .putInt(value == null ? -1 : value.length)
                .putInt(headersLength);
        out.put(topicBytes);
        put(out, key);
        put(out, value);
        out.putInt(names.size());
        int i = 0;
        for (Header h : headers) {
            byte[] name = names.get(i++);
            byte[] v = h.value();
            out.putInt(name.length).putInt(v == null ? -1 : v.length).put(name);
            put(out, v);
        }
        return out.array();
    }

    private static byte[] take(ByteBuffer in, int n) {
        if (n < 0) {
            return null;
        }
        byte[] b = new byte[n];
        in.get(b);
        return b;
    }

    /** The headers block at {@code in}'s position, {@code length} bytes long. */
    static List<Header> readHeaders(ByteBuffer in, int length) {
        int end = in.position() + length;
        int count = in.getInt();
        List<Header> headers = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            int nameLength = in.getInt();
            int valueLength = in.getInt();
            String name = new String(in.array(), in.arrayOffset() + in.position(), nameLength,
                    StandardCharsets.UTF_8);
            in.position(in.position() + nameLength);
            headers.add(new RecordHeader(name, take(in, valueLength)));
        }
        if (in.position() != end) {
            throw new IllegalStateException("sink frame: headers block length mismatch");
        }
        return headers;
    }

    /** A decoded sink frame. */
    record Sink(Integer partition, Long timestamp, byte[] key, byte[] value, List<Header> headers) {}

    /** Decodes a sink frame built by the Python job. */
    static Sink decodeSink(byte[] frame) {
        ByteBuffer in = ByteBuffer.wrap(frame);
        int partition = in.getInt();
        long timestamp = in.getLong();
        int keyLength = in.getInt();
        int valueLength = in.getInt();
        int headersLength = in.getInt();
        byte[] key = take(in, keyLength);
        byte[] value = take(in, valueLength);
        List<Header> headers = readHeaders(in, headersLength);
        if (in.hasRemaining()) {
            throw new IllegalStateException("sink frame: " + in.remaining() + " trailing bytes");
        }
        return new Sink(partition < 0 ? null : partition, timestamp < 0 ? null : timestamp,
                key, value, headers);
    }
}
