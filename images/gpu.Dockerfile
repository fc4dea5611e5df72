# The GPU evaluator image: fhe-inference with the torch backend on CUDA (fhe.evaluator.backend=torch,
# device=cuda in charts/privmesh), for the GPU node group. Not built in CI (no Docker engine, no GPU there).
#
#   docker build -f images/gpu.Dockerfile -t privmesh/services-gpu:0.1.0 .
# CUDA_IMAGE and TORCH_INDEX must agree (CUDA 12.4 runtime and PyTorch's cu124 wheels by default); the
# node's driver must support that CUDA version (EKS accelerated AMIs do).
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ARG TORCH_VERSION=2.5.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04's python3 is 3.10, privmesh's version.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY services services
COPY images/install.sh images/install.sh
RUN images/install.sh /opt/privmesh /src all \
    && /opt/privmesh/bin/pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 privmesh \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin privmesh
COPY --from=build /opt/privmesh /opt/privmesh
ENV PATH=/opt/privmesh/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/privmesh
CMD ["python", "-m", "privmesh.fhe", "--help"]
