# The GPU evaluator image: every service plus the `gpu` extra (torch with its CUDA libraries, from PyPI) for
# fhe-inference with fhe.evaluator.backend=torch on the GPU node group. The node provides the NVIDIA driver
# (EKS accelerated AMIs and the NVIDIA device plugin). Not built in CI (no Docker engine, no GPU there).
#
#   docker build -f images/gpu.Dockerfile -t privmesh/services-gpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY services services
COPY images/install.sh images/install.sh
RUN images/install.sh /opt/privmesh /src attestation,keybroker,tokenvault,dpgateway,fhe,fl,kubernetes,gpu

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 privmesh \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin privmesh
COPY --from=build /opt/privmesh /opt/privmesh
ENV PATH=/opt/privmesh/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /var/lib/privmesh
CMD ["python", "-m", "privmesh.fhe", "--help"]
