package io.marketlag.dlq;

import java.nio.ByteBuffer;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Unpacks the result batches of the Python validate function: clean sink frames to the main
 * output, DLQ sink frames to the side output {@link #dlqTag}.
 *
 * <pre>
 * result batch: i32 count, count * (i8 side (0 clean, 1 DLQ), i32 length, sink frame)
 * </pre>
 */
public final class BatchSplitter extends ProcessFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;
    public static final byte CLEAN = 0;
    public static final byte DLQ = 1;

    private final OutputTag<byte[]> dlqTag;

    public BatchSplitter(String dlqTagId) {
        this.dlqTag = tag(dlqTagId);
    }

    /** The side output tag with id {@code id} (equal to the one a splitter uses). */
    public static OutputTag<byte[]> tag(String id) {
        return new OutputTag<>(id, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    }

    @Override
    public void processElement(byte[] batch, Context ctx, Collector<byte[]> out) {
        ByteBuffer in = ByteBuffer.wrap(batch);
        int count = in.getInt();
        for (int i = 0; i < count; i++) {
            byte side = in.get();
            byte[] frame = new byte[in.getInt()];
            in.get(frame);
            if (side == CLEAN) {
                out.collect(frame);
            } else if (side == DLQ) {
                ctx.output(dlqTag, frame);
            } else {
                throw new IllegalStateException("result batch: unknown side " + side);
            }
        }
        if (in.hasRemaining()) {
            throw new IllegalStateException("result batch: " + in.remaining() + " trailing bytes");
        }
    }
}
