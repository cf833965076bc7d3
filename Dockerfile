# One image for every service of docker-compose.yml (the Kafka broker, the Flink JobManager and
# TaskManager, topic creation, job submission, the `dlq` command) and for
# deploy/k8s/flinkdeployment.yaml: Debian's Java 17 and Python 3.11, Flink from the PyFlink
# wheel's distribution, the project, the Kafka connector and the project's jar, and the broker's
# jars, all resolved by Maven from the versions of versions.env (passed as build args;
# `make compose-up` and `scripts/docker.sh build` pass them).
#
#   docker build --build-arg FLINK_VERSION=2.2.0 ... -t marketlag-dlq .
#
# BASE_IMAGE: any Debian bookworm (Docker Hub's debian:bookworm-slim by default; where no
# registry is reachable, scripts/docker.sh makes one with debootstrap under that name).
# Certificates in deploy/docker/ca/*.crt (none by default) are trusted during the build and at
# run time: a proxy that intercepts TLS (scripts/docker.sh copies the host's extra ones there).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
COPY deploy/docker/ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openjdk-17-jre-headless \
      python3.11 python3.11-venv curl procps \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The jars: the connector, the project's Java pieces and the broker, built and resolved by Maven.
FROM base AS jars
ARG FLINK_VERSION
ARG FLINK_KAFKA_CONNECTOR_VERSION
ARG KAFKA_VERSION
ARG SCALA_BINARY_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY java/ java/
RUN test -n "$FLINK_VERSION" || { echo "build args missing: see versions.env" >&2; exit 1; } \
 && mvn -q -B -f java/pom.xml package -DskipTests \
      -Dflink.version=${FLINK_VERSION} \
      -Dflink.kafka.connector.version=${FLINK_KAFKA_CONNECTOR_VERSION} \
      -Dkafka.version=${KAFKA_VERSION} -Dscala.binary.version=${SCALA_BINARY_VERSION}

FROM base
ARG FLINK_VERSION
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      "apache-flink==${FLINK_VERSION}"
WORKDIR /opt/marketlag
# The project's dependencies first (a layer that changes with pyproject.toml only), then the
# project itself.
COPY pyproject.toml README.md ./
RUN /opt/venv/bin/python -c 'import tomllib; \
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
COPY udfs/ udfs/
COPY settings/ settings/
COPY bridge/ bridge/
COPY kafkaio/ kafkaio/
COPY ingest/ ingest/
COPY dlq/ dlq/
COPY jobs/ jobs/
COPY sql/ sql/
COPY conf/ conf/
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -e . \
 && rm -rf /root/.cache
COPY deploy/docker/ deploy/docker/
COPY --from=jars /src/build/lib/ /opt/marketlag/build/lib/
# FLINK_HOME laid out as in Flink's own images (the Kubernetes operator expects it): bin/, opt/
# and plugins/ of the wheel's distribution; lib/ = the wheel's lib/, flink-python, the
# connector and the project's jar; conf/ written at start by the entry point.
RUN flink=$(/opt/venv/bin/python -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))') \
 && mkdir -p /opt/flink/lib /opt/flink/conf /opt/flink/log \
 && ln -s "$flink"/bin "$flink"/opt "$flink"/plugins /opt/flink/ \
 && ln -s "$flink"/lib/*.jar "$flink"/opt/flink-python-*.jar /opt/marketlag/build/lib/flink/*.jar \
      /opt/flink/lib/ \
 && ln -s /opt/marketlag/deploy/docker/entrypoint.sh /docker-entrypoint.sh \
 && useradd --system --uid 9999 --home-dir /opt/marketlag marketlag \
 && mkdir -p /opt/marketlag/var/kafka /opt/marketlag/var/flink \
 && chown -R marketlag /opt/marketlag/var /opt/flink/conf /opt/flink/log
ENV PATH=/opt/venv/bin:/opt/flink/bin:$PATH FLINK_HOME=/opt/flink \
    FLINK_CONF_DIR=/opt/flink/conf FLINK_LIB_DIR=/opt/flink/lib FLINK_LOG_DIR=/opt/flink/log
USER marketlag
ENTRYPOINT ["/opt/marketlag/deploy/docker/entrypoint.sh"]
CMD ["dlq", "--help"]
