# The privmesh services image: every service (python -m privmesh.<service>), non-root, for charts/privmesh.
#
# Build from the repository root:
#   docker build -f images/services.Dockerfile -t privmesh/services:0.1.0 .
# For reproducible images pin the base by digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.10-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.10-slim-bookworm

# Stage 1: a virtualenv with privmesh and its pinned dependencies (the same script a test runs): every service's
# extra and NVIDIA FLARE (fl-coordinator's FLARE server, services.flCoordinator.flare in the chart), not the GPU
# evaluator's (torch and CUDA are images/gpu.Dockerfile's).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY services services
COPY images/install.sh images/install.sh
RUN images/install.sh /opt/privmesh /src attestation,keybroker,tokenvault,dpgateway,fhe,fl,flare,kubernetes

# Stage 2: the base image, the virtualenv, an unprivileged user; no compiler, no pip cache, no sources.
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 privmesh \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin privmesh
COPY --from=build /opt/privmesh /opt/privmesh
ENV PATH=/opt/privmesh/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/privmesh
# The chart passes: python -m privmesh.<service> --config /etc/privmesh/config/config.yaml
CMD ["privmesh", "--help"]
