# One image for the four services (and the interactive client); docker-compose.yml picks the
# command. Dependencies come from uv.lock only; the runtime image is slim and runs as a
# non-root user.
FROM python:3.11-slim AS build
# The `ml` dependency group (Keras, JAX: ~0.7 GB) only in the image of the outlier trainers
# and executor: docker-compose.yml builds that one with UV_GROUPS="--group ml".
ARG UV_GROUPS="--no-group ml"
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock README.md ./
# --no-group spark: pyspark (500 MB) only in the batch job's image (target batch).
RUN uv sync --frozen --no-dev --no-group spark $UV_GROUPS --no-install-project
COPY sla_common ./sla_common
COPY etl_data_pipeline ./etl_data_pipeline
COPY data_storage ./data_storage
COPY data_retrieval ./data_retrieval
COPY sla_manager ./sla_manager
COPY anomaly_detection ./anomaly_detection
COPY protos ./protos
RUN uv sync --frozen --no-dev --no-group spark $UV_GROUPS

# The batch job (python -m anomaly_detection.batch, the Spark driver): the `spark` group on
# top (pyspark, pyarrow) and a Java runtime. `docker build --target batch`.
FROM build AS build-batch
RUN uv sync --frozen --no-dev --no-group ml --group spark

FROM python:3.11-slim AS batch
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sla
COPY --from=build-batch /opt/venv /opt/venv
COPY --from=build-batch --chown=root:root /app /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production HTTP_HOST=0.0.0.0 PYSPARK_PYTHON=/opt/venv/bin/python
WORKDIR /app
USER sla
CMD ["python", "-m", "anomaly_detection.batch", "schedule"]

# A Spark worker: the official image (its tag = the pyspark pin of pyproject.toml) plus the
# job's Python environment at the same path as in `batch` (/opt/venv), since the executors
# run the job's Python (pandas, scikit-learn) with the driver's PYSPARK_PYTHON. The Python is
# uv's standalone build (any glibc), the packages the same uv.lock. `--target spark-worker`.
FROM apache/spark:4.3.0 AS spark-worker
USER root
COPY --from=build /usr/local/bin/uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_INSTALL_DIR=/opt/python UV_LINK_MODE=copy
WORKDIR /opt/sla-monitor
COPY pyproject.toml uv.lock README.md ./
RUN uv python install 3.11 \
    && uv sync --frozen --no-dev --no-group ml --group spark --no-install-project --python 3.11
COPY --from=build /app /opt/sla-monitor
RUN uv sync --frozen --no-dev --no-group ml --group spark --python 3.11
ENV PYSPARK_PYTHON=/opt/venv/bin/python
USER spark
WORKDIR /opt/spark/work-dir

# The services (the default target: the last stage).
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sla \
    && install -d -o sla -g sla /var/lib/sla-rules \
    && install -d -o sla -g sla /var/lib/anomaly-detection  # volumes (SLO rules, detector state)
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production HTTP_HOST=0.0.0.0
WORKDIR /app
USER sla
CMD ["python", "-m", "etl_data_pipeline"]
