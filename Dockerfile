# One image for every OROS process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    # The tracker's spool (events Redis could not take yet) lives here: compose mounts a volume on it.
    OROS_DATA_DIR=/var/lib/oros
WORKDIR /app
COPY pyproject.toml README.md ./
# Every package pyproject.toml installs (tests/test_compose.py holds the two lists equal).
COPY oros ./oros
COPY oros_cli ./oros_cli
COPY tracker ./tracker
COPY ingest ./ingest
COPY settler ./settler
COPY admin_api ./admin_api
COPY webhooks ./webhooks
COPY sql ./sql
RUN pip install --no-cache-dir . && useradd --system --uid 10001 oros \
    && mkdir -p /var/lib/oros && chown oros /var/lib/oros
USER oros
ENTRYPOINT ["oros"]
