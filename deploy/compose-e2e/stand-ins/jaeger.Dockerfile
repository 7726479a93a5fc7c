# Stands in for jaegertracing/jaeger:2.13.0: Jaeger v2.13.0 built by
# deploy/local/build-tools.sh from its Go module (no UI bundle: the query API is whole),
# at the upstream image's path and user. The upstream image is alpine-based, so its
# busybox wget is what compose's health check runs: the busybox stand-in gives the same.
ARG BUSYBOX_IMAGE
FROM ${BUSYBOX_IMAGE}
COPY jaeger /cmd/jaeger/jaeger-linux
VOLUME ["/tmp"]
USER 10001
EXPOSE 4317 4318 16685 16686 13133
ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]
