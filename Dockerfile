FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowbus ./flowbus
COPY config ./config
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /data flowbus \
 && mkdir -p /data && chown flowbus /data
ENV FLOWBUS_DATA_DIR=/data FLOWBUS_HOST=0.0.0.0
# not root: flowbus needs nothing of root, and /data (a volume) is the only place it writes
USER flowbus
VOLUME /data
EXPOSE 8080
CMD ["flowbus", "serve"]
