# Stand-in for the registry's postgres:15 image where none can be pulled (the compose smoke test,
# scripts/compose_smoke.sh): Debian's PostgreSQL 15 on the same base as the service images, with
# the official image's first-start contract (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB;
# data in /var/lib/postgresql/data).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data && chown postgres /var/lib/postgresql/data \
    && chmod 0700 /var/lib/postgresql/data
COPY deploy/smoke/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
