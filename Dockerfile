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
RUN uv sync --frozen --no-dev $UV_GROUPS --no-install-project
COPY sla_common ./sla_common
COPY etl_data_pipeline ./etl_data_pipeline
COPY data_storage ./data_storage
COPY data_retrieval ./data_retrieval
COPY sla_manager ./sla_manager
COPY anomaly_detection ./anomaly_detection
COPY protos ./protos
RUN uv sync --frozen --no-dev $UV_GROUPS

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
