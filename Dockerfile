# syntax=docker/dockerfile:1
# optimum-bridge: one image for the ingress (`api`), the workers (`worker`), the
# simulator (`sandbox`) and Flower (`celery -A optimum_bridge.process.flower flower`).
# No secret is baked in: every setting comes from the environment at run time.
# Reproducible: a pinned base image, and every Python package pinned by
# constraints.txt (`make constraints` freezes the environment the tests ran in).

# --- builder: install the project and its dependencies into a venv -------------
FROM python:3.11.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY optimum_bridge ./optimum_bridge
# Extras, comma-separated: what the compose services run beyond the core worker:
# `api` (ingress), `sandbox`, Flower, and Sentry when SENTRY_DSN is set.
ARG EXTRAS=ingress,sandbox,flower,sentry
# Behind a TLS-inspecting proxy, pass its CA bundle as the build secret `pip_cert`
# (docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt); it is
# read from a tmpfs mount and never stored in a layer.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --constraint constraints.txt --upgrade pip \
 && if [ -n "$EXTRAS" ]; then target=".[${EXTRAS}]"; else target=.; fi \
 && pip install --constraint constraints.txt "$target" \
 && pip check \
 && optimum-bridge --help >/dev/null

# --- runtime: the venv only, run as an unprivileged user --------------------------
FROM python:3.11.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /app --no-create-home --shell /usr/sbin/nologin bridge \
 && mkdir /app && chown bridge:bridge /app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER bridge
EXPOSE 8080 8090 5555
# No HEALTHCHECK here: it would apply to workers too, where an HTTP probe means
# nothing. docker-compose.yml gives the `api` service one (GET /healthz).
ENTRYPOINT ["optimum-bridge"]
CMD ["--help"]
