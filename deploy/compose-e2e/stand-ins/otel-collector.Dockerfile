# Stands in for otel/opentelemetry-collector-contrib:0.165.0: the collector that
# deploy/local/build-tools.sh builds with ocb from deploy/collector/builder-config.yaml
# (the same version, with the components otel-collector.yaml uses), at the upstream
# image's path, user and default command.
FROM scratch
COPY otelcol-fit-check /otelcol-contrib
USER 10001
EXPOSE 4317 4318 8888 8889 13133
ENTRYPOINT ["/otelcol-contrib"]
CMD ["--config", "/etc/otelcol-contrib/config.yaml"]
