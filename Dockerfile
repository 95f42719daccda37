# GrantGate: the gateway, the CLI and the sidecar in one small image that runs as a non-root user.
# The base is pinned to an exact release; pin its digest as well in your registry mirror if you can.
# CI builds the same file on a Debian base it assembles itself (deploy/image/build.sh, no registry):
# any base with python3 (3.11+, with venv) on PATH gives the same layout: /opt/grantgate, uid 10001,
# ENTRYPOINT grantgate.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md setup.py ./
COPY build_support ./build_support
COPY proxy ./proxy
# Binary wheels only: the runtime image needs no compiler, and neither does this stage.
RUN python3 -m venv /opt/grantgate \
    && /opt/grantgate/bin/pip install --only-binary=:all: --no-compile . \
    && /opt/grantgate/bin/pip uninstall --quiet --yes pip setuptools \
    && find /opt/grantgate -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# MALLOC_*: large transfer buffers stay off fresh mmap'd pages (about half the CPU per GiB streamed).
ENV PATH=/opt/grantgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=16777216 \
    MALLOC_TRIM_THRESHOLD_=67108864
# Written directly rather than with useradd, which a minimal base need not have.
RUN echo "grantgate:x:10001:10001:GrantGate:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "grantgate:x:10001:" >> /etc/group
COPY --from=build /opt/grantgate /opt/grantgate
USER 10001:10001
WORKDIR /tmp
EXPOSE 9000 9001
ENTRYPOINT ["grantgate"]
CMD ["serve"]
