package io.marketlag.dlq;

import java.util.Arrays;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * Packs source frames into batch frames, so that records cross into the Python worker a
 * batch at a time instead of one by one (each crossing costs far more than validating a record).
 *
 * <p>A batch is emitted when it holds {@code maxRecords} frames or {@code maxBytes} bytes, when
 * it is {@code maxDelayMs} old, before every checkpoint barrier ({@link
 * #prepareSnapshotPreBarrier}), before a watermark and at the end of input. So the operator
 * holds no records when a checkpoint is taken: it has no state, and exactly once is that of
 * the operators around it. A single frame larger than {@code maxBytes} makes a batch of one.
 *
 * <pre>
 * batch frame: i32 count, count * (i32 length, source frame)
 * </pre>
 */
public final class FrameBatcher extends AbstractStreamOperator<byte[]>
        implements OneInputStreamOperator<byte[], byte[]>, BoundedOneInput {
    private static final long serialVersionUID = 1L;

    private final int maxRecords;
    private final int maxBytes;
    private final long maxDelayMs;

    private transient byte[] buffer;
    private transient int size;
    private transient int count;
    private transient long oldest;

    public FrameBatcher(int maxRecords, int maxBytes, long maxDelayMs) {
        if (maxRecords < 1 || maxBytes < 1 || maxDelayMs < 1) {
            throw new IllegalArgumentException("batch limits must be positive");
        }
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffer = new byte[Math.min(maxBytes, 1 << 20) + 8];
        reset();
        scheduleCheck();
    }

    private void reset() {
        size = 4;
        count = 0;
    }

    /** Checks the age of the open batch every maxDelayMs/2, so no record waits much longer. */
    private void scheduleCheck() {
        var time = getProcessingTimeService();
        time.registerTimer(time.getCurrentProcessingTime() + Math.max(1, maxDelayMs / 2), now -> {
            if (count > 0 && now - oldest >= maxDelayMs) {
                flush();
            }
            scheduleCheck();
        });
    }

    @Override
    public void processElement(StreamRecord<byte[]> element) throws Exception {
        byte[] frame = element.getValue();
        if (count > 0 && size + 4 + frame.length > maxBytes) {
            flush();
        }
        if (count == 0) {
            oldest = getProcessingTimeService().getCurrentProcessingTime();
        }
        append(frame);
        if (count >= maxRecords || size >= maxBytes) {
            flush();
        }
    }

    private void append(byte[] frame) {
        int needed = size + 4 + frame.length;
        if (needed > buffer.length) {
            buffer = Arrays.copyOf(buffer, Math.max(needed, buffer.length * 2));
        }
        putInt(buffer, size, frame.length);
        System.arraycopy(frame, 0, buffer, size + 4, frame.length);
        size = needed;
        count++;
    }

    private void flush() {
        if (count == 0) {
            return;
        }
        putInt(buffer, 0, count);
        output.collect(new StreamRecord<>(Arrays.copyOf(buffer, size)));
        reset();
    }

    static void putInt(byte[] b, int at, int v) {
        b[at] = (byte) (v >>> 24);
        b[at + 1] = (byte) (v >>> 16);
        b[at + 2] = (byte) (v >>> 8);
        b[at + 3] = (byte) v;
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void endInput() {
        flush();
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }
}
