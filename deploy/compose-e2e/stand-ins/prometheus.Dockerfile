# Stands in for prom/prometheus:v2.42.0: Debian bookworm's prometheus 2.42 (the version
# the compose file pins) in a minbase root file system, laid out as the upstream image:
# /bin/prometheus as the entrypoint, /prometheus the data volume, the console paths the
# compose command names, user nobody, and a wget for the compose health check.
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}
RUN mkdir -p /usr/share/prometheus /prometheus \
    && ln -s /etc/prometheus/console_libraries /usr/share/prometheus/console_libraries \
    && ln -s /etc/prometheus/consoles /usr/share/prometheus/consoles \
    && ln -s /bin/busybox /usr/local/bin/wget \
    && chown -R nobody:nogroup /etc/prometheus /prometheus
USER nobody
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
