# Stands in for nginx:1.22: Debian bookworm's nginx 1.22 (the version the compose override
# pins) in a minbase root file system, laid out as the upstream image: /usr/sbin/nginx on
# PATH, /etc/nginx/nginx.conf (Debian's; compose mounts its own over it), the log files
# linked to the container's stdout and stderr, `nginx -g 'daemon off;'`, and SIGQUIT (a
# graceful stop) as the stop signal.
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}
RUN ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
