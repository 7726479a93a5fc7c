# Stands in for victoriametrics/victoria-logs:v1.52.1: VictoriaLogs v1.52.1 built by
# deploy/local/build-tools.sh from its Go module, at the upstream image's path.
FROM scratch
COPY victoria-logs /victoria-logs-prod
EXPOSE 9428
ENTRYPOINT ["/victoria-logs-prod"]
