# Flink 2.2 (Java 17) with Python 3.11, PyFlink, the project and the Kafka connector.
# Used by docker-compose.yml for the JobManager, the TaskManager and the one-shot services,
# and by deploy/k8s/flinkdeployment.yaml. Versions come from versions.env as build args.
ARG FLINK_VERSION
FROM maven:3.9-eclipse-temurin-17 AS jars
ARG FLINK_VERSION
ARG FLINK_KAFKA_CONNECTOR_VERSION
ARG KAFKA_VERSION
ARG SCALA_BINARY_VERSION
WORKDIR /src
COPY java/ java/
RUN mvn -q -B -f java/pom.xml package \
      -Dflink.version=${FLINK_VERSION} \
      -Dflink.kafka.connector.version=${FLINK_KAFKA_CONNECTOR_VERSION} \
      -Dkafka.version=${KAFKA_VERSION} -Dscala.binary.version=${SCALA_BINARY_VERSION}

FROM flink:${FLINK_VERSION}-java17
ARG FLINK_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common curl \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
WORKDIR /opt/marketlag
COPY pyproject.toml README.md ./
COPY udfs/ udfs/
COPY bridge/ bridge/
COPY kafkaio/ kafkaio/
COPY ingest/ ingest/
COPY dlq/ dlq/
COPY jobs/ jobs/
COPY sql/ sql/
COPY conf/ conf/
RUN /opt/venv/bin/pip install --no-cache-dir "apache-flink==${FLINK_VERSION}" -e . \
 && cp /opt/flink/opt/flink-python-*.jar /opt/flink/lib/
# The connector and the project's jar: on Flink's classpath, and where conf/job.yaml expects them.
COPY --from=jars /src/build/lib/flink/ /opt/marketlag/build/lib/flink/
RUN cp /opt/marketlag/build/lib/flink/*.jar /opt/flink/lib/ \
 && mkdir -p /opt/marketlag/var && chown -R flink:flink /opt/marketlag/var
ENV PATH=/opt/venv/bin:$PATH
