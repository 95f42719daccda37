# GrantGate: the gateway, the CLI and the sidecar in one small image that runs as a non-root user.
# The base is pinned to an exact release; pin its digest as well in your registry mirror if you can.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# Binary wheels only: the runtime image needs no compiler, and neither does this stage.
RUN python -m venv /opt/grantgate \
    && /opt/grantgate/bin/pip install --only-binary=:all: --no-compile . \
    && find /opt/grantgate -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# MALLOC_*: large transfer buffers stay off fresh mmap'd pages (about half the CPU per GiB streamed).
ENV PATH=/opt/grantgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=16777216 \
    MALLOC_TRIM_THRESHOLD_=67108864
RUN groupadd --system --gid 10001 grantgate \
    && useradd --system --uid 10001 --gid grantgate --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin grantgate
COPY --from=build /opt/grantgate /opt/grantgate
USER 10001:10001
WORKDIR /tmp
EXPOSE 9000 9001
ENTRYPOINT ["grantgate"]
CMD ["serve"]
