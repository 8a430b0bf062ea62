# mixpanel-proxy: the relay in a slim Python image, run as an unprivileged user.
#   docker build -t mixpanel-proxy .
#   docker run -p 8080:8080 -v $PWD/deploy/relay.toml:/etc/mixpanel-proxy/config.toml:ro \
#     -v mixpanel-data:/var/lib/mixpanel-proxy mixpanel-proxy
# Config: the file at $MIXPANEL_PROXY_CONFIG (mount yours there, or point the variable elsewhere).
# SIGHUP (docker kill -s HUP) reloads it; SIGTERM (docker stop) drains and exits 0.

# The build stage is the full image: the compiled build (setup.py, proxy/compiled.py) needs a C
# compiler and Python's headers, which the slim image that runs the relay leaves out.
FROM python:3.11-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md setup.py ./
COPY buildsys ./buildsys
COPY proxy ./proxy
ENV MIXPANEL_PROXY_COMPILE=1
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MIXPANEL_PROXY_CONFIG=/etc/mixpanel-proxy/config.toml \
    MIXPANEL_PROXY_HEALTH_URL=http://127.0.0.1:8080/healthz
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --home-dir /var/lib/mixpanel-proxy \
       --shell /usr/sbin/nologin relay \
    && mkdir -p /etc/mixpanel-proxy /var/lib/mixpanel-proxy \
    && chown relay:relay /var/lib/mixpanel-proxy
COPY --from=build /wheels /wheels
# The wheels built above: the relay and exactly the dependency versions resolved for it.
# The build fails here unless every module proxy/compiled.py lists is a compiled extension.
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && python -m proxy.compiled --require
COPY deploy/relay.toml /etc/mixpanel-proxy/config.toml
# The spool and the bundles' disk cache live here: give it a volume that outlives the container.
VOLUME ["/var/lib/mixpanel-proxy"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MIXPANEL_PROXY_HEALTH_URL'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mixpanel-proxy"]
CMD ["serve"]
