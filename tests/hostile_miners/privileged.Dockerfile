# A miner that asks for more than the sandbox gives: root, a setuid binary, a writable volume, /etc edits.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
USER root
RUN echo "hostile:x:0:0::/root:/bin/sh" >> /etc/passwd \
    && cp /bin/cat /usr/local/bin/rootcat && chmod 4755 /usr/local/bin/rootcat \
    && mkdir /data && chmod 777 /data
VOLUME /data
WORKDIR /app
COPY inference.py server.py hotkey.txt ./
COPY model/ ./model/
USER 0:0
CMD ["python3", "server.py"]
