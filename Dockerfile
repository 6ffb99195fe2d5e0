# echoplus in a container (docs/operations.md).  Not built on the machines
# echoplus is developed on (they have no Docker engine); build it with:
#
#   docker build -t echoplus .
#   docker run --rm -p 5000:5000 -p 9100:9100 echoplus
#
# Options go after the image name or in ECHOPLUS_* variables, e.g.
#   docker run --rm -p 5000:5000 -e ECHOPLUS_PROCESSORS=upper echoplus

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg setup.py MANIFEST.in README.md ./
COPY echoplus ./echoplus
COPY twisted ./twisted
# A C compiler for the compiled codecs (setup.py); only in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/echoplus \
 && ECHOPLUS_REQUIRE_EXTENSIONS=1 /opt/echoplus/bin/pip install --no-cache-dir . \
 # Twisted finds plugins by scanning twisted/plugins; write its cache now,
 # while the tree is writable, instead of at every start as the
 # unprivileged user (which cannot write it).
 && /opt/echoplus/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && /opt/echoplus/bin/python -c "import echoplus.plugins; from twisted.plugin import getPlugins; from echoplus.interfaces import IProcessorFactory; list(getPlugins(IProcessorFactory, echoplus.plugins))"

FROM python:3.12-slim
COPY --from=build /opt/echoplus /opt/echoplus
RUN useradd --system --no-create-home --uid 10001 --shell /usr/sbin/nologin echoplus
USER echoplus
ENV PATH=/opt/echoplus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ECHOPLUS_LISTEN=tcp:5000 \
    ECHOPLUS_METRICS=tcp:9100 \
    ECHOPLUS_LOG_FORMAT=json
EXPOSE 5000 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)"
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "echoplus"]
CMD []
