# One image for every OROS process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY oros ./oros
COPY tracker ./tracker
COPY settler ./settler
COPY admin_api ./admin_api
COPY webhooks ./webhooks
COPY sql ./sql
RUN pip install --no-cache-dir . && useradd --system --uid 10001 oros
USER oros
ENTRYPOINT ["oros"]
