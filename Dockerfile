# The kezchat image: both services and the operator tool, from one build.
#
#   docker build -t kezchat .
#   docker run kezchat                 # twistd kezchat (the default command)
#   docker run kezchat kezsig          # twistd kezsig
#   docker run --entrypoint kezchat-admin kezchat --help
#
# deploy/docker-compose.yml builds and runs it; docs/operations.md is the
# operator guide. Stages: the web app (Node) -> the wheel, installed into a
# venv at /opt/kezchat -> a slim runtime holding that venv and nothing of
# the build (no Node, no compilers, no sources, no pip). The venv has the
# servers' dependencies only: the kez-chat client's extras (keyring, the
# peer-to-peer iroh wheel) are not in the image.
#
# Build arguments:
#   PYTHON_IMAGE, NODE_IMAGE  the two bases (any Debian-like image with
#                  python3 + venv, resp. Node.js >= 20.19 + npm)
#   EXTRA_CA_CERTS a CA bundle inside the build, for a registry reached
#                  through a TLS-inspecting proxy; mount it with the build,
#                  e.g. podman build -v /etc/ssl/certs/ca-certificates.crt:/run/ca.crt:ro
#                  --build-arg EXTRA_CA_CERTS=/run/ca.crt
# The HEALTHCHECK is Docker's: podman keeps it with `podman build --format docker`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# -- 1. the web app ------------------------------------------------------
FROM ${NODE_IMAGE} AS web
ARG EXTRA_CA_CERTS=
WORKDIR /src/web
# the lock file first, so the dependency layer is cached across app edits
COPY web/package.json web/package-lock.json ./
RUN NODE_EXTRA_CA_CERTS="$EXTRA_CA_CERTS" npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# -- 2. the wheel, installed into /opt/kezchat ----------------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_CA_CERTS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# the servers' dependencies first, from setup.cfg alone: this layer (and
# its trip to PyPI) is redone only when they change, not on every edit
COPY setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'])" > requirements.txt \
 && python -m venv /opt/kezchat \
 && /opt/kezchat/bin/pip install ${EXTRA_CA_CERTS:+--cert "$EXTRA_CA_CERTS"} \
        -r requirements.txt "setuptools>=68" wheel
# the whole checkout (.dockerignore keeps out venvs, databases, node_modules
# and tests), then the freshly built app where the wheel build looks for it
COPY . .
COPY --from=web /src/web/dist web/dist
# offline from here: the build tools are in the venv, the dependencies too
# (pip check proves it); then the tools go, pip last
RUN /opt/kezchat/bin/pip wheel --no-deps --wheel-dir /wheels --no-build-isolation . \
 && /opt/kezchat/bin/pip install --no-deps --no-index /wheels/kezchat-*.whl \
 && /opt/kezchat/bin/pip check \
 && /opt/kezchat/bin/pip uninstall --yes --quiet setuptools wheel \
 && /opt/kezchat/bin/python -m pip uninstall --yes --quiet pip
# fail the build, not the first request, if the wheel lacks the web app
# (from /, so Python imports the installed package, not /src's sources);
# and write Twisted's plugin cache now: at run time the venv is read-only
WORKDIR /
RUN /opt/kezchat/bin/python -c "import os, kezchat.http.webapp as w; \
assert w.__file__.startswith('/opt/kezchat/'), w.__file__; \
assert os.path.isfile(os.path.join(w.packaged_web_dir(), 'index.html')), 'no web app in the wheel'" \
 && /opt/kezchat/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# -- 3. the runtime ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# a fixed uid, so volume and key-file ownership survives image rebuilds;
# the state directories exist here so new named volumes inherit the owner
RUN groupadd --system --gid 10001 kezchat \
 && useradd --system --uid 10001 --gid kezchat --no-create-home \
        --home-dir /var/lib/kezchat --shell /usr/sbin/nologin kezchat \
 && install -d -o kezchat -g kezchat -m 0700 /var/lib/kezchat /var/lib/kezsig /etc/kezchat/nats
COPY --from=build /opt/kezchat /opt/kezchat
ENV PATH=/opt/kezchat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KEZ_CHAT_DB=/var/lib/kezchat/kez-chat.db \
    KEZ_SIG_DB=/var/lib/kezsig/kez-sig.db
# numeric, so a runtime that checks "non-root" without reading
# /etc/passwd (Kubernetes' runAsNonRoot) can tell
USER 10001:10001
WORKDIR /var/lib/kezchat
EXPOSE 6969 7878
# slim has no curl: ask with Python (urlopen raises on anything but 2xx)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6969/v1/healthz', timeout=4)"]
# the asyncio reactor (NATS needs it), in the foreground, no pid file (a
# stale one would stop a restarted container)
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "-r", "asyncio"]
CMD ["kezchat"]
