package io.marketlag.dlq;

import java.nio.ByteBuffer;
import java.util.Arrays;
import org.apache.flink.api.common.functions.MapFunction;

/**
 * A batch of source frames in, a result batch out with every record on the clean side,
 * unchanged: key, value, headers and timestamp copied, the partitioner left to decide.
 *
 * <p>Never part of the shipped job (it validates nothing). The benchmark puts it where the
 * Python validate function stands, to measure what the job's Java side costs on its own
 * (Kafka source, batcher, splitter, transactional sinks): {@code python -m bench.levers
 * floor_java}.
 */
public final class PassThroughBatches implements MapFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public byte[] map(byte[] batch) {
        ByteBuffer in = ByteBuffer.wrap(batch);
        int count = in.getInt();
        // a result entry (side, length, sink head) is shorter than a batch entry (length,
        // source head, topic), so the result fits in the batch's size
        ByteBuffer out = ByteBuffer.allocate(batch.length);
        out.putInt(count);
        for (int i = 0; i < count; i++) {
            int length = in.getInt();
            int start = in.position();
            int partition = in.getInt();
            in.getLong(); // offset
            long timestamp = in.getLong();
            int topicLength = in.getInt();
            int keyLength = in.getInt();
            int valueLength = in.getInt();
            int headersLength = in.getInt();
            int body = start + RecordFrames.SOURCE_HEAD + topicLength;
            int tail = Math.max(keyLength, 0) + Math.max(valueLength, 0) + headersLength;
            if (partition < 0 || body + tail != start + length) {
                throw new IllegalStateException("batch: frame does not match its lengths");
            }
            out.put(BatchSplitter.CLEAN).putInt(RecordFrames.SINK_HEAD + tail);
            out.putInt(-1).putLong(timestamp).putInt(keyLength).putInt(valueLength)
                    .putInt(headersLength);
            out.put(batch, body, tail);
            in.position(start + length);
        }
        return Arrays.copyOf(out.array(), out.position());
    }
}
