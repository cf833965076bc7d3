package io.marketlag.dlq;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Unpacks the result batches of the Python validate function: clean sink frames to the main
 * output, DLQ sink frames to the side output {@link #dlqTag}.
 *
 * The result batch format is {@link RecordFrames#splitResults}'s.
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
        for (RecordFrames.Result r : RecordFrames.splitResults(batch)) {
            if (r.side() == CLEAN) {
                out.collect(r.frame());
            } else if (r.side() == DLQ) {
                ctx.output(dlqTag, r.frame());
            } else {
                throw new IllegalStateException("result batch: unknown side " + r.side());
            }
        }
    }
}
