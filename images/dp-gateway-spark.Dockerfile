# The dp-gateway image with its Spark engine (charts/privmesh services.dpGateway.spark): the services image plus
# Java 17 and Tumult Analytics' own virtualenv (requirements/spark-engine.txt; its pins conflict with the
# gateway's, so it never joins /opt/privmesh). The gateway pods (Spark drivers) and the executor pods run it.
#
# Build from the repository root, after the services image:
#   docker build -f images/services.Dockerfile -t privmesh/services:0.1.0 .
#   docker build -f images/dp-gateway-spark.Dockerfile --build-arg SERVICES_IMAGE=privmesh/services:0.1.0 \
#     -t privmesh/dp-gateway-spark:0.1.0 .
# Both stages must use the same Python base (the virtualenv links to its interpreter).
ARG PYTHON_IMAGE=python:3.10-slim-bookworm
ARG SERVICES_IMAGE=privmesh/services:0.1.0

# Stage 1: Tumult's virtualenv at its final path, exactly the pinned versions (as scripts/dev/spark-env.sh).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/spark-engine.txt /src/spark-engine.txt
RUN python -m venv /opt/spark-engine \
    && /opt/spark-engine/bin/pip install --quiet --no-deps -r /src/spark-engine.txt \
    && /opt/spark-engine/bin/python -c 'import tmlt.analytics, pyspark' \
    && /opt/spark-engine/bin/python -m compileall -q /opt/spark-engine/lib >/dev/null
# Spark's s3a:// reader (pyspark's Hadoop is 3.3.4): hadoop-aws of that version and the AWS SDK bundle it was
# built against, from Maven Central, pinned by SHA-256.
COPY images/fetch-jars.py /src/fetch-jars.py
RUN /opt/spark-engine/bin/python /src/fetch-jars.py /opt/spark-engine/lib/python3.10/site-packages/pyspark/jars \
      org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar=53f9ae03c681a30a50aa17524bd9790ab596b28481858e54efd989a826ed3a4a \
      com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar=873fe7cf495126619997bec21c44de5d992544aea7e632fdc77adb1a0915bae5

# Stage 2: the services image, a Java runtime, the virtualenv and the executors' entry point.
FROM ${SERVICES_IMAGE}
USER root
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
# The gateway starts the engine with PYTHONPATH = the directory above the privmesh package it imports
# (dpgateway/spark_engine.py SERVICES_DIR): a directory holding privmesh alone, never the gateway's site-packages
# (numpy 2, pyarrow 19... would shadow Tumult's pins).
RUN site=/opt/privmesh/lib/python3.10/site-packages \
    && mkdir /opt/privmesh-engine \
    && mv "$site/privmesh" /opt/privmesh-engine/privmesh \
    && ln -s /opt/privmesh-engine/privmesh "$site/privmesh"
COPY --from=build /opt/spark-engine /opt/spark-engine
COPY images/spark-entrypoint.sh /usr/local/bin/privmesh-spark-entrypoint
ENV SPARK_HOME=/opt/spark-engine/lib/python3.10/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/spark-engine/bin/python
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/privmesh-spark-entrypoint"]
CMD ["privmesh", "--help"]
