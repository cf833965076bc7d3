package io.marketlag.dlq;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;

/**
 * The byte frames that carry one Kafka record across the Java/Python boundary.
 *
 * <p>A frame is a single {@code byte[]}, so each record crosses into the Python worker once,
 * with nothing decoded on the Java side: no deserialization error can happen before the
 * Python process function sees the record. A fixed head holds every length, so the Python
 * side slices a frame with one unpack; the headers stay one opaque block that a clean record
 * passes from its source frame to its sink frame unchanged. All integers are big-endian; a
 * length of -1 means null. The Python side of the same layout is {@code bridge/frames.py}; keep
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

    /**
     * The raw name bytes of a consumed header. The consumer's {@link RecordHeader} keeps them
     * as a buffer until {@code key()} decodes them, under a lock, into a String that a frame
     * would only encode again (a visible share of the JVM's samples); read them directly where
     * the class allows it, else encode {@code key()}.
     */
    private static final VarHandle KEY_BUFFER = keyBuffer();

    private static VarHandle keyBuffer() {
        try {
            return MethodHandles.privateLookupIn(RecordHeader.class, MethodHandles.lookup())
                    .findVarHandle(RecordHeader.class, "keyBuffer", ByteBuffer.class);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    static byte[] headerName(Header h) {
        if (KEY_BUFFER != null && h.getClass() == RecordHeader.class) {
            ByteBuffer raw = (ByteBuffer) KEY_BUFFER.get(h);
            if (raw != null) { // null once key() has decoded it
                byte[] name = new byte[raw.remaining()];
                raw.duplicate().get(name);
                return name;
            }
        }
        return h.key().getBytes(StandardCharsets.UTF_8);
    }

    /** Encodes a consumed record as a source frame, in one exactly sized array. */
    public static byte[] encodeSource(
            String topic, int partition, long offset, long timestamp,
            byte[] key, byte[] value, Headers headers) {
        byte[] topicBytes = topic.getBytes(StandardCharsets.UTF_8);
        Header[] all = headers.toArray();
        byte[][] names = new byte[all.length][];
        byte[][] values = new byte[all.length][];
        int headersLength = 4;
        for (int i = 0; i < all.length; i++) {
            names[i] = headerName(all[i]);
            values[i] = all[i].value();
            headersLength += 8 + names[i].length + length(values[i]);
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
        out.putInt(all.length);
        for (int i = 0; i < all.length; i++) {
            out.putInt(names[i].length).putInt(values[i] == null ? -1 : values[i].length);
            out.put(names[i]);
            put(out, values[i]);
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
    static Headers readHeaders(ByteBuffer in, int length) {
        int end = in.position() + length;
        int count = in.getInt();
        if (count < 0 || count > length / 8) {
            throw new IllegalStateException("sink frame: headers block holds " + count);
        }
        Header[] headers = new Header[count];
        for (int i = 0; i < count; i++) {
            int nameLength = in.getInt();
            int valueLength = in.getInt();
            String name = new String(in.array(), in.arrayOffset() + in.position(), nameLength,
                    StandardCharsets.UTF_8);
            in.position(in.position() + nameLength);
            headers[i] = new RecordHeader(name, take(in, valueLength));
        }
        if (in.position() != end) {
            throw new IllegalStateException("sink frame: headers block length mismatch");
        }
        // the producer record copies a RecordHeaders' list in one go (any other Iterable
        // header by header into a list that grows)
        return new RecordHeaders(headers);
    }

    /** One entry of a result batch: the side (0 clean, 1 DLQ) and its sink frame. */
    record Result(byte side, byte[] frame) {}

    /**
     * The entries of a result batch built by the Python validate function:
     * {@code i32 count, count * (i8 side, i32 length, sink frame)}.
     */
    static Result[] splitResults(byte[] batch) {
        ByteBuffer in = ByteBuffer.wrap(batch);
        int count = in.getInt();
        if (count < 0 || count > in.remaining() / 5) {
            throw new IllegalStateException("result batch: holds " + count);
        }
        Result[] out = new Result[count];
        for (int i = 0; i < count; i++) {
            byte side = in.get();
            int length = in.getInt();
            if (length < 0 || length > in.remaining()) {
                throw new IllegalStateException("result batch: frame of " + length + " bytes");
            }
            out[i] = new Result(side, take(in, length));
        }
        if (in.hasRemaining()) {
            throw new IllegalStateException("result batch: " + in.remaining() + " trailing bytes");
        }
        return out;
    }

    /** A decoded sink frame. */
    record Sink(Integer partition, Long timestamp, byte[] key, byte[] value, Headers headers) {}

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
        Headers headers = readHeaders(in, headersLength);
        if (in.hasRemaining()) {
            throw new IllegalStateException("sink frame: " + in.remaining() + " trailing bytes");
        }
        return new Sink(partition < 0 ? null : partition, timestamp < 0 ? null : timestamp,
                key, value, headers);
    }
}
