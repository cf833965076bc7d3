package io.marketlag.dlq;

import java.util.HashMap;
import java.util.Map;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.kafka.common.TopicPartition;

/**
 * Builds an {@link OffsetsInitializer} for exact per-partition offsets from plain text, so the
 * Python job can pass offsets without naming Kafka classes (which the SQL connector jar
 * relocates).
 */
public final class FixedOffsets {
    private FixedOffsets() {}

    /**
     * @param spec one {@code topic<TAB>partition<TAB>offset} per line
     */
    public static OffsetsInitializer of(String spec) {
        Map<TopicPartition, Long> offsets = new HashMap<>();
        for (String line : spec.split("\n")) {
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split("\t");
            offsets.put(new TopicPartition(f[0], Integer.parseInt(f[1])), Long.parseLong(f[2]));
        }
        return OffsetsInitializer.offsets(offsets);
    }
}
