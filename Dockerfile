FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowbus ./flowbus
COPY config ./config
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV FLOWBUS_DATA_DIR=/data FLOWBUS_HOST=0.0.0.0
VOLUME /data
EXPOSE 8080
CMD ["flowbus", "serve"]
