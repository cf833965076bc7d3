"""The JVM bridge: the byte frames that carry records between the Java operators and the
Python workers (``frames``), one format held to shared test vectors on both sides."""
