"""The Spark engine of dp-gateway: Tumult Analytics on Apache Spark in its own process and virtualenv.

Nothing here may import the gateway (OpenDP, Polars, gRPC): `worker` runs with only the Tumult venv
(scripts/dev/spark-env.sh) and this package on its path; `protocol` is shared by both sides."""
