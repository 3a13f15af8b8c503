# syntax=docker/dockerfile:1
# Outrun: a multi-stage image. The build stage installs every dependency, builds and packs the package;
# the runtime stage installs only the production dependencies of that package and runs as `node`.

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# `build` compiles the package when the package defines it; `build:web` builds the web app it serves.
RUN npm run build --if-present && npm run build:web \
  && npm pack --ignore-scripts --pack-destination /tmp \
  && mkdir /package && tar -xzf /tmp/outrun-*.tgz -C /package --strip-components=1 \
  && cp package-lock.json /package/ \
  && if [ -d web/dist ] && [ ! -d /package/web/dist ]; then mkdir -p /package/web && cp -r web/dist /package/web/dist; fi

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    OUTRUN_DATA_DIR=/data \
    LOG_FORMAT=json
WORKDIR /app
COPY --from=build /package ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force \
  && mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 3000
# `/readyz` answers 503 while the database is unreachable or the server is draining on SIGTERM.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM: runs still executing after OUTRUN_SHUTDOWN_GRACE_MS are handed back for another worker.
STOPSIGNAL SIGTERM
CMD ["node", "--min-semi-space-size=16", "bin/outrun.js", "serve"]
