# syntax=docker/dockerfile:1
# healthmon: one image for every process (worker, readmodel, deliver, serve, simulate, topics, ...).
#   docker build -t healthmon .     then: docker run --rm healthmon healthmon --help
# The package is built into a wheel and installed at build time: containers start without the network.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY rules ./rules
COPY alerts ./alerts
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    HEALTHMON_DATA_DIR=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels healthmon \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin healthmon \
 && mkdir -p /data && chown healthmon:healthmon /data
USER healthmon
WORKDIR /data
VOLUME ["/data"]
CMD ["healthmon", "--help"]
