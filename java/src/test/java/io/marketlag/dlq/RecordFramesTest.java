package io.marketlag.dlq;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.File;
import java.util.HexFormat;
import java.util.stream.Stream;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The Java half of the frame format against the shared test vectors (tests/vectors/frames.json,
 * path in the system property {@code vectors}); tests/unit/test_frames.py holds the Python half
 * to the same bytes.
 */
class RecordFramesTest {
    private static final JsonNode VECTORS = load();

    private static JsonNode load() {
        try {
            return new ObjectMapper().readTree(new File(System.getProperty("vectors")));
        } catch (Exception e) {
            throw new IllegalStateException("cannot read the frame vectors", e);
        }
    }

    private static byte[] bytes(JsonNode hex) {
        return hex == null || hex.isNull() ? null : HexFormat.of().parseHex(hex.asText());
    }

    private static Headers headers(JsonNode pairs) {
        RecordHeaders out = new RecordHeaders();
        for (JsonNode pair : pairs) {
            out.add(new RecordHeader(pair.get(0).asText(), bytes(pair.get(1))));
        }
        return out;
    }

    private static void assertSameHeaders(JsonNode expected, Headers actual) {
        Header[] got = actual.toArray();
        assertEquals(expected.size(), got.length);
        for (int i = 0; i < got.length; i++) {
            assertEquals(expected.get(i).get(0).asText(), got[i].key());
            assertArrayEquals(bytes(expected.get(i).get(1)), got[i].value());
        }
    }

    static Stream<JsonNode> sourceFrames() {
        return Stream.of(VECTORS.get("source_frames")).flatMap(n -> {
            Stream.Builder<JsonNode> b = Stream.builder();
            n.forEach(b::add);
            return b.build();
        });
    }

    static Stream<JsonNode> sinkFrames() {
        Stream.Builder<JsonNode> b = Stream.builder();
        VECTORS.get("sink_frames").forEach(b::add);
        return b.build();
    }

    @ParameterizedTest
    @MethodSource("sourceFrames")
    void javaWritesTheSourceFramesPythonReads(JsonNode v) {
        long timestamp = v.get("timestamp").isNull() ? -1L : v.get("timestamp").asLong();
        byte[] frame = RecordFrames.encodeSource(
                v.get("topic").asText(), v.get("partition").asInt(), v.get("offset").asLong(),
                timestamp, bytes(v.get("key")), bytes(v.get("value")), headers(v.get("headers")));
        assertArrayEquals(bytes(v.get("frame")), frame);
    }

    @ParameterizedTest
    @MethodSource("sinkFrames")
    void javaReadsTheSinkFramesPythonWrites(JsonNode v) {
        RecordFrames.Sink sink = RecordFrames.decodeSink(bytes(v.get("frame")));
        int partition = v.get("partition").asInt();
        assertEquals(partition < 0 ? null : partition, sink.partition());
        if (v.get("timestamp").isNull()) {
            assertNull(sink.timestamp());
        } else {
            assertEquals(v.get("timestamp").asLong(), sink.timestamp());
        }
        assertArrayEquals(bytes(v.get("key")), sink.key());
        assertArrayEquals(bytes(v.get("value")), sink.value());
        assertSameHeaders(v.get("headers"), sink.headers());
    }

    @Test
    void javaSplitsTheResultBatchesPythonWrites() {
        JsonNode r = VECTORS.get("results");
        RecordFrames.Result[] results = RecordFrames.splitResults(bytes(r.get("batch")));
        assertEquals(r.get("sides").size(), results.length);
        for (int i = 0; i < results.length; i++) {
            assertEquals(r.get("sides").get(i).asInt(), results[i].side());
            assertArrayEquals(bytes(r.get("frames").get(i)), results[i].frame());
        }
    }

    @Test
    void thePassThroughPutsEveryRecordOnTheCleanSideAsPythonDoes() {
        byte[] batch = bytes(VECTORS.get("batch").get("batch"));
        byte[] results = new PassThroughBatches().map(batch);
        assertArrayEquals(bytes(VECTORS.get("pass_through").get("results")), results);
    }

    @Test
    void aTruncatedOrPaddedFrameIsRefused() {
        byte[] frame = bytes(VECTORS.get("sink_frames").get(0).get("frame"));
        byte[] padded = java.util.Arrays.copyOf(frame, frame.length + 1);
        assertThrows(IllegalStateException.class, () -> RecordFrames.decodeSink(padded));
        byte[] batch = bytes(VECTORS.get("results").get("batch"));
        byte[] cut = java.util.Arrays.copyOf(batch, batch.length - 1);
        assertThrows(RuntimeException.class, () -> RecordFrames.splitResults(cut));
    }
}
