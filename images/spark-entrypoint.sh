#!/bin/bash
# Entry point of the dp-gateway Spark image (images/dp-gateway-spark.Dockerfile). Spark's Kubernetes scheduler
# starts each executor pod with the one argument `executor` and describes the executor in SPARK_* environment
# variables; pip's pyspark ships no image entry point, so this one starts Spark 3.5's executor backend from them
# (written here because the contract is a dozen variables). Anything else (the gateway's
# `python -m privmesh.dpgateway --config ...`) runs as given.
set -euo pipefail

if [ "${1:-}" != executor ]; then
  exec "$@"
fi

# spark.executor.extraJavaOptions and Spark's own JVM options arrive as SPARK_JAVA_OPT_0, _1, ... (in order).
java_opts=()
for index in $(compgen -e | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)$/\1/p' | sort -n); do
  name="SPARK_JAVA_OPT_$index"
  java_opts+=("${!name}")
done

exec "${JAVA:-java}" "${java_opts[@]}" \
  -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
  -cp "${SPARK_CONF_DIR:+$SPARK_CONF_DIR:}$SPARK_HOME/jars/*" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "$SPARK_DRIVER_URL" \
  --executor-id "$SPARK_EXECUTOR_ID" \
  --cores "$SPARK_EXECUTOR_CORES" \
  --app-id "$SPARK_APPLICATION_ID" \
  --hostname "$SPARK_EXECUTOR_POD_IP" \
  --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
  --podName "$SPARK_EXECUTOR_POD_NAME"
