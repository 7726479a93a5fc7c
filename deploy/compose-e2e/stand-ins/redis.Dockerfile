# Stands in for redis:7.0: Debian bookworm's redis-server 7.0 (the version the compose
# override pins) in a minbase root file system, laid out as the upstream image:
# redis-server and redis-cli on PATH (redis-cli for the compose health check), /data the
# working directory and volume, owned by uid 999 (the upstream image's redis user).
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}
RUN mkdir -p /data && chown 999:999 /data
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
CMD ["redis-server"]
